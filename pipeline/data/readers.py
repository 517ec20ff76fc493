"""Readers for the real dataset layouts (GTA5, SYNTHIA-RAND-CITYSCAPES, Cityscapes).

The embedded synthetic benchmark is written in these same layouts, so the default run exercises
exactly the code that reads the real datasets. Label ids become train ids (design.md §3); ids of
classes outside the 19 become 255; ids outside a dataset's table are an error (or 255, by param).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.constants import CITYSCAPES_LUT, SYNTHIA_LUT
from pipeline.data.images import (
    CorruptImageError,
    read_label_ids_8bit,
    read_label_ids_16bit_first_channel,
    read_rgb,
)
from pipeline.errors import InputError

DATASETS = ("gta5", "synthia", "cityscapes")
CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit.png"
CITYSCAPES_LABEL_SUFFIX = "_gtFine_labelIds.png"
TARGET_SPLITS = ("train", "val")


class DatasetLayoutError(InputError, FileNotFoundError):
    """A dataset folder that does not have the expected layout; the message shows the layout."""


@dataclass(frozen=True)
class SampleRef:
    """One image (and its label file, if any) of a dataset split."""

    id: str
    image_path: str
    label_path: str | None
    dataset: str
    split: str


@dataclass(frozen=True)
class LabelFormat:
    decode: Callable[[Path], np.ndarray]
    lut: np.ndarray  # dataset label id → train id
    max_known_id: int  # ids above it are not in the dataset's table


# Cityscapes label ids run 0–33 (GTA5 labels use the same table); SYNTHIA class ids run 0–22.
LABEL_FORMATS: dict[str, LabelFormat] = {
    "gta5": LabelFormat(read_label_ids_8bit, CITYSCAPES_LUT, 33),
    "cityscapes": LabelFormat(read_label_ids_8bit, CITYSCAPES_LUT, 33),
    "synthia": LabelFormat(read_label_ids_16bit_first_channel, SYNTHIA_LUT, 22),
}

LAYOUT_HELP = {
    "gta5": "images/*.png and labels/*.png (or the nested images/images/ and labels/labels/ form)",
    "synthia": "RGB/*.png and GT/LABELS/*.png (16-bit labels, class id in the first channel)",
    "cityscapes": (
        "leftImg8bit/{split}/<city>/*_leftImg8bit.png and gtFine/{split}/<city>/*_gtFine_labelIds.png"
    ),
}


def _require_dir(path: Path, dataset: str, root: Path) -> Path:
    if not path.is_dir():
        raise DatasetLayoutError(
            f"{dataset} root {root}: missing folder {path.relative_to(root)}/ — expected layout: "
            f"{LAYOUT_HELP[dataset]}"
        )
    return path


def _nested(folder: Path) -> Path:
    """GTA5 archives unpack to images/images/ on some mirrors; accept both forms."""
    inner = folder / folder.name
    return inner if inner.is_dir() else folder


def _paired(dataset: str, split: str, images: Path, labels: Path) -> list[SampleRef]:
    refs = []
    for image_path in sorted(images.glob("*.png")):
        label_path = labels / image_path.name
        if not label_path.is_file():
            raise DatasetLayoutError(f"{dataset}: image {image_path} has no label file {label_path}")
        refs.append(SampleRef(image_path.stem, str(image_path), str(label_path), dataset, split))
    return refs


def list_gta5(root: Path) -> list[SampleRef]:
    images = _nested(_require_dir(root / "images", "gta5", root))
    labels = _nested(_require_dir(root / "labels", "gta5", root))
    return _paired("gta5", "train", images, labels)


def list_synthia(root: Path) -> list[SampleRef]:
    images = _require_dir(root / "RGB", "synthia", root)
    labels = _require_dir(root / "GT" / "LABELS", "synthia", root)
    return _paired("synthia", "train", images, labels)


def cityscapes_label_path(image_path: Path) -> Path:
    """The label file of `<root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`:
    `<root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png` (whether or not it exists)."""
    stem = image_path.name.removesuffix(CITYSCAPES_IMAGE_SUFFIX)
    city, split = image_path.parent.name, image_path.parent.parent.name
    return image_path.parents[3] / "gtFine" / split / city / f"{stem}{CITYSCAPES_LABEL_SUFFIX}"


def list_cityscapes(root: Path, split: str, labels_required: bool) -> list[SampleRef]:
    """Cityscapes split; train labels may be absent altogether (an unlabelled target)."""
    if split not in TARGET_SPLITS:
        raise ValueError(f"cityscapes split {split!r}: expected one of {TARGET_SPLITS}")
    help_text = LAYOUT_HELP["cityscapes"].format(split=split)
    images = root / "leftImg8bit" / split
    if not images.is_dir():
        raise DatasetLayoutError(f"cityscapes root {root}: missing folder leftImg8bit/{split}/ — {help_text}")
    labels = root / "gtFine" / split
    if labels_required and not labels.is_dir():
        raise DatasetLayoutError(f"cityscapes root {root}: missing folder gtFine/{split}/ — {help_text}")
    refs = []
    for image_path in sorted(images.glob(f"*/*{CITYSCAPES_IMAGE_SUFFIX}")):
        stem = image_path.name.removesuffix(CITYSCAPES_IMAGE_SUFFIX)
        label_path = cityscapes_label_path(image_path)
        if not label_path.is_file():
            if labels.is_dir():
                raise DatasetLayoutError(f"cityscapes: image {image_path} has no label file {label_path}")
            label_path = None
        refs.append(SampleRef(stem, str(image_path), label_path and str(label_path), "cityscapes", split))
    return refs


def list_samples(dataset: str, root: Path, split: str = "train") -> list[SampleRef]:
    """Every sample of a dataset split, sorted by file name (deterministic shard assignment)."""
    if dataset == "gta5":
        return list_gta5(root)
    if dataset == "synthia":
        return list_synthia(root)
    if dataset == "cityscapes":
        return list_cityscapes(root, split, labels_required=split == "val")
    raise ValueError(f"unknown dataset {dataset!r}: expected one of {DATASETS}")


def label_ids_to_train_ids(
    ids: np.ndarray, dataset: str, path: str, unknown_ids: str = "error"
) -> np.ndarray:
    """Dataset label ids [H, W] → uint8 train ids; ids outside the table fail (or map to 255)."""
    label_format = LABEL_FORMATS[dataset]
    if unknown_ids == "error" and ids.size and int(ids.max()) > label_format.max_known_id:
        unknown = np.unique(ids[ids > label_format.max_known_id])[:10].tolist()
        raise CorruptImageError(
            path,
            f"label ids {unknown} are not in the {dataset} id table (0–{label_format.max_known_id}); "
            "set preprocess.unknown_label_ids: ignore to map them to 255",
        )
    return label_format.lut[np.minimum(ids, len(label_format.lut) - 1)]


def load_sample(ref: SampleRef, unknown_ids: str = "error") -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a sample → (uint8 RGB [H, W, 3], uint8 train ids [H, W] or None when unlabelled)."""
    image = read_rgb(Path(ref.image_path))
    if ref.label_path is None:
        return image, None
    ids = LABEL_FORMATS[ref.dataset].decode(Path(ref.label_path))
    if ids.shape != image.shape[:2]:
        raise CorruptImageError(
            ref.image_path,
            f"image size {image.shape[1]}×{image.shape[0]} differs from its label {ref.label_path} "
            f"size {ids.shape[1]}×{ids.shape[0]}",
        )
    return image, label_ids_to_train_ids(ids, ref.dataset, ref.label_path, unknown_ids)
