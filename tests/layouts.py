"""Small datasets written in the real GTA5 / SYNTHIA / Cityscapes formats, for reader tests.

Written independently of the project's own writers: GTA5 labels as palette PNGs through Pillow,
SYNTHIA labels as 16-bit RGB PNGs through pypng, Cityscapes labels as grey PNGs of label ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import png
from PIL import Image

# Ids that occur in real label files: evaluated classes, unevaluated ones, and (GTA5/Cityscapes) 0.
CITYSCAPES_IDS_IN_FILES = np.array([0, 1, 4, 6, 7, 8, 9, 11, 17, 21, 23, 24, 26, 29, 30, 33], dtype=np.uint8)
SYNTHIA_IDS_IN_FILES = np.array([0, 1, 2, 3, 4, 6, 8, 10, 11, 13, 15, 22], dtype=np.uint16)


def random_ids(rng: np.random.Generator, ids: np.ndarray, height: int, width: int) -> np.ndarray:
    """Blocky random label map (4×4 blocks) so resizing has real regions to keep."""
    blocks = rng.choice(ids, size=(height // 4 + 1, width // 4 + 1))
    return np.kron(blocks, np.ones((4, 4), dtype=ids.dtype))[:height, :width]


def random_rgb(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def save_palette_label(path: Path, ids: np.ndarray) -> None:
    """Palette PNG whose indices are the label ids (the GTA5 label format); colours are arbitrary."""
    image = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.astype(np.uint8).tobytes())
    image.putpalette(
        [value for i in range(256) for value in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def save_synthia_label(path: Path, class_ids: np.ndarray, instance_ids: np.ndarray) -> None:
    """16-bit RGB PNG: class id in R, instance id in G, 0 in B (the SYNTHIA GT/LABELS format)."""
    height, width = class_ids.shape
    pixels = np.stack([class_ids, instance_ids, np.zeros_like(class_ids)], axis=-1).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        png.Writer(width, height, greyscale=False, bitdepth=16).write(
            handle, pixels.reshape(height, -1).tolist()
        )


def save_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def write_gta5(
    root: Path, count: int, size=(24, 40), nested: bool = False, seed: int = 0
) -> dict[str, np.ndarray]:
    """GTA5 layout; returns label ids by sample id."""
    rng = np.random.default_rng(seed)
    images, labels = root / "images", root / "labels"
    if nested:
        images, labels = images / "images", labels / "labels"
    written = {}
    for index in range(1, count + 1):
        name = f"{index:05d}.png"
        ids = random_ids(rng, CITYSCAPES_IDS_IN_FILES, *size)
        save_rgb(images / name, random_rgb(rng, *size))
        save_palette_label(labels / name, ids)
        written[f"{index:05d}"] = ids
    return written


def write_synthia(root: Path, count: int, size=(24, 40), seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    written = {}
    for index in range(count):
        name = f"{index:07d}.png"
        ids = random_ids(rng, SYNTHIA_IDS_IN_FILES, *size)
        # Instance ids above 255 make a decoder that drops the low byte or mixes channels fail.
        instances = rng.integers(0, 3000, size=size, dtype=np.uint16)
        save_rgb(root / "RGB" / name, random_rgb(rng, *size))
        save_synthia_label(root / "GT" / "LABELS" / name, ids, instances)
        written[f"{index:07d}"] = ids
    return written


def write_cityscapes(
    root: Path,
    counts: dict[str, int],
    cities: dict[str, list[str]],
    size=(16, 32),
    with_train_labels: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in counts.items():
        for index in range(count):
            city = cities[split][index % len(cities[split])]
            stem = f"{city}_000000_{index:06d}"
            ids = random_ids(rng, CITYSCAPES_IDS_IN_FILES, *size)
            save_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", random_rgb(rng, *size))
            if split == "val" or with_train_labels:
                label_path = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
                label_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(ids).save(label_path)
            written[stem] = ids
    return written
