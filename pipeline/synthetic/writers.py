"""Writers of synthetic samples in the real dataset layouts (GTA5, SYNTHIA-RAND-CITYSCAPES, Cityscapes),
so the readers of `pipeline.data.readers` read the embedded benchmark as they read the real files.

Files are written to a temporary name and renamed, so an interrupted run never leaves a half-written PNG.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipeline.atomic import atomic_path
from pipeline.synthetic.labels import CITYSCAPES_LABEL_COLORS, cityscapes_instance_ids
from pipeline.synthetic.samples import SceneSample


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _rgb_png(image: np.ndarray) -> bytes:
    return _png(Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)))


def write_gta5_sample(root: Path, index: int, sample: SceneSample) -> None:
    """root/images/{index+1:05d}.png and root/labels/{index+1:05d}.png, the label an 8-bit palette PNG
    whose indices are Cityscapes label ids and whose palette holds their colours (as the real files)."""
    name = f"{index + 1:05d}.png"
    label = Image.fromarray(np.ascontiguousarray(sample.label, dtype=np.uint8))
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(CITYSCAPES_LABEL_COLORS)] = CITYSCAPES_LABEL_COLORS
    label.putpalette(palette.ravel().tolist())  # "L" → "P", indices unchanged
    _write_bytes(Path(root) / "images" / name, _rgb_png(sample.image))
    _write_bytes(Path(root) / "labels" / name, _png(label))


def write_synthia_sample(root: Path, index: int, sample: SceneSample) -> None:
    """root/RGB/{index:07d}.png and root/GT/LABELS/{index:07d}.png: 16 bits per channel, class id in
    the first channel, instance id in the second, 0 in the third."""
    name = f"{index:07d}.png"
    label = sample.label.astype(np.uint16)
    rgb16 = np.stack([label, sample.instance.astype(np.uint16), np.zeros_like(label)], axis=-1)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb16[..., ::-1]))  # OpenCV writes BGR
    if not ok:
        raise OSError(f"{Path(root) / 'GT' / 'LABELS' / name}: OpenCV could not encode the label PNG")
    _write_bytes(Path(root) / "RGB" / name, _rgb_png(sample.image))
    _write_bytes(Path(root) / "GT" / "LABELS" / name, data.tobytes())


def write_cityscapes_sample(root: Path, split: str, city: str, frame: int, sample: SceneSample) -> None:
    """leftImg8bit/{split}/{city}/{city}_000000_{frame:06d}_leftImg8bit.png, and in gtFine/ the
    _gtFine_labelIds.png (8-bit grey label ids) and _gtFine_instanceIds.png (16-bit grey)."""
    stem = f"{city}_000000_{frame:06d}"
    root = Path(root)
    label = np.ascontiguousarray(sample.label, dtype=np.uint8)
    instance_ids = cityscapes_instance_ids(label, sample.instance)
    labels_dir = root / "gtFine" / split / city
    _write_bytes(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _rgb_png(sample.image))
    _write_bytes(labels_dir / f"{stem}_gtFine_instanceIds.png", _png(Image.fromarray(instance_ids)))
    _write_bytes(labels_dir / f"{stem}_gtFine_labelIds.png", _png(Image.fromarray(label)))
