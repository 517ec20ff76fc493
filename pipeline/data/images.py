"""Decoding, resizing and encoding of images and label maps.

Every decode error names the file. Label files come in three encodings (design.md §3): 8-bit grey
(Cityscapes label ids), 8-bit palette whose indices are the ids (GTA5), and 16-bit multi-channel with
the class id in the first channel (SYNTHIA).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import InputError

# Decompression-bomb guard stays on, but at a size that fits real 2048×1024 frames comfortably.
Image.MAX_IMAGE_PIXELS = 64_000_000
cv2.setNumThreads(1)  # Ray tasks and loader workers parallelise; OpenCV threads would oversubscribe.

RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


class CorruptImageError(InputError, ValueError):
    """An image or label file that cannot be decoded, or whose content is unusable; names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self) -> tuple:  # keep (path, reason) when Ray ships the error between processes
        return (type(self), (self.path, self.reason))


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()  # decode now: Image.open is lazy and a truncated file fails only here
    except FileNotFoundError:
        raise CorruptImageError(path, "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise CorruptImageError(path, f"cannot decode image ({error})") from None
    return image


def read_rgb(path: Path) -> np.ndarray:
    """RGB image → uint8 [H, W, 3]."""
    return np.asarray(_open(path).convert("RGB"))


def read_label_ids_8bit(path: Path) -> np.ndarray:
    """8-bit label file → uint8 [H, W] of label ids.

    Grey ("L") files hold the ids as values; palette ("P") files hold them as palette indices (GTA5),
    which `np.asarray` returns as they are — `.convert("L")` would give colour luminance instead.
    """
    image = _open(path)
    if image.mode not in ("L", "P"):
        raise CorruptImageError(path, f"expected an 8-bit grey or palette label PNG, got mode {image.mode}")
    return np.asarray(image)


def read_label_ids_16bit_first_channel(path: Path) -> np.ndarray:
    """16-bit multi-channel label file (SYNTHIA GT/LABELS) → uint16 [H, W] of the first channel.

    Pillow decodes 16-bit RGB PNGs to 8 bits (keeping the high byte, which turns small class ids into
    0), so OpenCV decodes these; it returns channels in BGR order, hence the last index.
    """
    data = np.fromfile(path, dtype=np.uint8) if Path(path).exists() else None
    if data is None:
        raise CorruptImageError(path, "file not found")
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise CorruptImageError(path, "cannot decode image (truncated or not a PNG)")
    if decoded.dtype != np.uint16:
        raise CorruptImageError(path, f"expected a 16-bit label PNG, got {decoded.dtype}")
    if decoded.ndim == 2:
        return decoded
    return decoded[:, :, 2]


def resize_image(image: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """uint8 [H, W, 3] → [height, width, 3] with the named filter; `size` is (height, width)."""
    if image.shape[:2] == size:
        return image
    resized = Image.fromarray(image).resize((size[1], size[0]), RESAMPLE[interpolation])
    return np.asarray(resized)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W] train ids → [height, width] with nearest neighbour (never blends class ids)."""
    if label.shape == size:
        return label
    resized = Image.fromarray(label).resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(resized)


def encode_image(image: np.ndarray, image_format: Literal["png", "jpeg"], jpeg_quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    if image_format == "png":
        # Level 1: most of the size gain for a fraction of the time of the default level 6.
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    else:
        Image.fromarray(image).save(buffer, format="JPEG", quality=jpeg_quality)
    return buffer.getvalue()


def encode_label(label: np.ndarray) -> bytes:
    """uint8 [H, W] train ids → 8-bit grey PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """PNG or JPEG bytes from a shard → uint8 [H, W, 3]."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def decode_label(data: bytes) -> np.ndarray:
    """Train-id PNG bytes from a shard → uint8 [H, W]."""
    return np.asarray(Image.open(io.BytesIO(data)))
