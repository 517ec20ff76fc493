"""Real-layout readers → train ids → resize → sharded Parquet + manifests (for stages/preprocess.py).

Each shard is one Ray task (`process_shard`), so a cluster spreads the decoding and a laptop uses all
its cores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.config import Config
from pipeline.constants import CLASS_NAMES, NUM_CLASSES
from pipeline.data.images import CorruptImageError, encode_image, encode_label, resize_image, resize_label
from pipeline.data.readers import LAYOUT_HELP, SampleRef, list_samples, load_sample
from pipeline.data.shards import Manifest, shard_name, write_shard
from pipeline.errors import InputError

log = logging.getLogger(__name__)


class EmptySplitError(InputError, ValueError):
    """A split with no usable sample."""


@dataclass(frozen=True)
class SplitSpec:
    """What one output split is made of and how its samples are transformed."""

    name: str  # source | target_train | target_val
    dataset: str
    root: Path
    split: str  # the dataset's own split: train | val
    domain: str  # source | target
    image_size: tuple[int, int]  # (height, width)
    label_size: tuple[int, int] | None  # None keeps the label's original resolution


@dataclass(frozen=True)
class EncodeOptions:
    interpolation: str
    image_format: str
    jpeg_quality: int
    rows_per_row_group: int
    on_corrupt: str
    unknown_label_ids: str


@dataclass(frozen=True)
class ShardTask:
    index: int
    spec: SplitSpec
    refs: tuple[SampleRef, ...]
    path: str
    options: EncodeOptions


def split_specs(config: Config) -> list[SplitSpec]:
    pre = config.preprocess
    source, target = config.data.source.name, config.data.target.name
    target_size = pre.target_size.as_tuple()
    val_label_size = None if pre.full_resolution_val_labels else target_size
    source_size = pre.source_size.as_tuple()
    return [
        SplitSpec(artifacts.SOURCE, source, config.source_root, "train", "source", source_size, source_size),
        SplitSpec(artifacts.TARGET_TRAIN, target, config.target_root, "train", "target", target_size,
                  target_size),
        SplitSpec(artifacts.TARGET_VAL, target, config.target_root, "val", "target", target_size,
                  val_label_size),
    ]  # fmt: skip


def encode_options(config: Config) -> EncodeOptions:
    pre = config.preprocess
    return EncodeOptions(
        pre.image_interpolation,
        pre.image_format,
        pre.jpeg_quality,
        pre.rows_per_row_group,
        pre.on_corrupt,
        pre.unknown_label_ids,
    )


def plan_shards(spec: SplitSpec, refs: list[SampleRef], folder: Path, rows_per_shard: int,
                options: EncodeOptions) -> list[ShardTask]:  # fmt: skip
    """Consecutive runs of `rows_per_shard` samples (sorted by file name) → deterministic shards."""
    return [
        ShardTask(
            index, spec, tuple(refs[start : start + rows_per_shard]), str(folder / shard_name(index)), options
        )
        for index, start in enumerate(range(0, len(refs), rows_per_shard))
    ]


def encode_row(ref: SampleRef, spec: SplitSpec, options: EncodeOptions) -> tuple[dict, np.ndarray | None]:
    """Decode, map, resize and re-encode one sample → (shard row, stored train-id label or None)."""
    image, label = load_sample(ref, options.unknown_label_ids)
    image = resize_image(image, spec.image_size, options.interpolation)
    if label is not None and spec.label_size is not None:
        label = resize_label(label, spec.label_size)
    row = {
        "id": ref.id,
        "image": encode_image(image, options.image_format, options.jpeg_quality),
        "label": None if label is None else encode_label(label),
        "height": image.shape[0],
        "width": image.shape[1],
        "domain": spec.domain,
        "split": spec.split,
    }
    return row, label


def process_shard(task: ShardTask) -> dict:
    """One Ray task: encode a shard's samples, write the shard, count class pixels."""
    rows, skipped = [], []
    class_pixels = np.zeros(NUM_CLASSES, dtype=np.int64)
    for ref in task.refs:
        try:
            row, label = encode_row(ref, task.spec, task.options)
        except CorruptImageError as error:
            if task.options.on_corrupt == "error":
                raise
            skipped.append(str(error))
            continue
        rows.append(row)
        if label is not None:
            class_pixels += np.bincount(label.ravel(), minlength=256)[:NUM_CLASSES]
    entry = write_shard(rows, Path(task.path), task.options.rows_per_row_group)
    return {"entry": entry, "class_pixels": class_pixels.tolist(), "skipped": skipped}


def list_split(spec: SplitSpec) -> list[SampleRef]:
    refs = list_samples(spec.dataset, spec.root, spec.split)
    if not refs:
        raise EmptySplitError(
            f"split {spec.name}: no {spec.dataset} samples under {spec.root} — expected "
            f"{LAYOUT_HELP[spec.dataset].format(split=spec.split)}"
        )
    return refs


def split_manifest(spec: SplitSpec, results: list[dict]) -> Manifest:
    rows = sum(r["entry"]["rows"] for r in results)
    skipped = [message for r in results for message in r["skipped"]]
    if rows == 0:
        raise EmptySplitError(f"split {spec.name}: every sample under {spec.root} was skipped as corrupt")
    class_pixels = np.sum([r["class_pixels"] for r in results], axis=0)
    return Manifest(
        split=spec.name,
        dataset=spec.dataset,
        domain=spec.domain,
        rows=rows,
        shards=[r["entry"] for r in results],
        class_pixel_counts={name: int(count) for name, count in zip(CLASS_NAMES, class_pixels, strict=True)},
        image_size=list(spec.image_size),
        skipped=len(skipped),
        skipped_files=skipped,
    )
