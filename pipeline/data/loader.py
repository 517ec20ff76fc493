"""Streaming the Parquet shards into training and evaluation batches.

The unit of work is a Parquet row group. Row groups are split across Ray Train workers (rank) and,
inside each, across DataLoader processes that decode in the background, so the step never waits for
PNG decoding when there is a core to spare.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.data.images import decode_image, decode_label
from pipeline.data.shards import Manifest, verify_shards
from pipeline.data.transforms import AugmentConfig, augment, image_to_tensor, label_to_tensor


@dataclass(frozen=True)
class ReadUnit:
    """One Parquet row group: the smallest piece of a split handed to a worker."""

    path: str
    row_group: int
    rows: int


def read_units(folder: Path, verify: bool = True) -> list[ReadUnit]:
    """Every row group of a split, in manifest order; checks shard checksums first."""
    manifest = verify_shards(folder) if verify else Manifest.read(folder)
    units = []
    for entry in manifest.shards:
        path = folder / entry["file"]
        metadata = pq.ParquetFile(path).metadata
        units += [
            ReadUnit(str(path), i, metadata.row_group(i).num_rows) for i in range(metadata.num_row_groups)
        ]
    return units


def units_for_worker(units: list[ReadUnit], worker: int, workers: int, wrap: bool) -> list[ReadUnit]:
    """Round-robin share of `units` for global worker `worker` of `workers`.

    With `wrap` (endless training streams) a worker whose share is empty — more workers than row
    groups — reads one unit anyway instead of starving its rank.
    """
    share = units[worker::workers]
    if not share and wrap and units:
        share = [units[worker % len(units)]]
    return share


Sample = dict[str, torch.Tensor | str]
SampleTransform = Callable[
    [np.ndarray, np.ndarray | None, np.random.Generator], tuple[np.ndarray, np.ndarray | None]
]


class ShardStream(IterableDataset):
    """Samples of one split for one Ray Train rank.

    `endless=True` (training) reshuffles the row groups every epoch with a permutation shared by all
    ranks (seeded by `seed` and the epoch) and deals them out, then shuffles rows inside each group;
    `endless=False` (evaluation) reads this rank's share once, in order.
    """

    def __init__(
        self,
        units: list[ReadUnit],
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        transform: SampleTransform | None = None,
        with_labels: bool = True,
        endless: bool = True,
        label_folder: Path | None = None,
        with_truth: bool = False,
    ) -> None:
        super().__init__()
        if not units:
            raise ValueError("ShardStream: the split has no row groups")
        self.units, self.rank, self.world_size = units, rank, world_size
        self.seed, self.transform, self.with_labels, self.endless = seed, transform, with_labels, endless
        # Labels may come from a mirror of the split (pseudo labels: same files, rows and row groups);
        # `with_truth` then also yields the split's own labels as "truth", for diagnostics only.
        self.label_folder, self.with_truth = label_folder, with_truth
        own_labels = (with_labels and label_folder is None) or with_truth
        self.columns = ["id", "image", "label"] if own_labels else ["id", "image"]

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        loader_worker, loader_workers = (info.id, info.num_workers) if info else (0, 1)
        worker = self.rank * loader_workers + loader_worker
        workers = self.world_size * loader_workers
        rng = np.random.default_rng([self.seed, self.rank, loader_worker])
        epoch = 0
        while True:
            order = self.units
            if self.endless:
                permutation = np.random.default_rng([self.seed, epoch]).permutation(len(self.units))
                order = [self.units[i] for i in permutation]
            for unit in units_for_worker(order, worker, workers, wrap=self.endless):
                yield from self._read_unit(unit, rng)
            if not self.endless:
                return
            epoch += 1

    def _read_unit(self, unit: ReadUnit, rng: np.random.Generator) -> Iterator[Sample]:
        table = pq.ParquetFile(unit.path).read_row_group(unit.row_group, columns=self.columns)
        rows = table.to_pylist()
        external = None
        if self.label_folder is not None:
            mirror = Path(self.label_folder) / Path(unit.path).name
            external = (
                pq.ParquetFile(mirror).read_row_group(unit.row_group, columns=["id", "label"]).to_pylist()
            )
            if [r["id"] for r in external] != [r["id"] for r in rows]:
                raise ValueError(f"{mirror}: rows do not mirror {unit.path} (rerun the pseudo_label stage)")
        order = rng.permutation(len(rows)) if self.endless else range(len(rows))
        for index in order:
            row = rows[index]
            image = decode_image(row["image"])
            encoded = external[index]["label"] if external is not None else row.get("label")
            label = decode_label(encoded) if self.with_labels and encoded is not None else None
            if self.with_labels and label is None:
                raise ValueError(f"{unit.path}: row {row['id']} has no label but this stream needs labels")
            truth = decode_label(row["label"]) if self.with_truth and row.get("label") is not None else None
            if self.transform is not None:
                # The same random draws for the ground truth: copy the generator before it is used.
                truth_rng = copy.deepcopy(rng)
                image_out, label = self.transform(image, label, rng)
                if truth is not None:
                    _, truth = self.transform(image, truth, truth_rng)
                image = image_out
            sample: Sample = {"id": row["id"], "image": image_to_tensor(image)}
            if label is not None:
                sample["label"] = label_to_tensor(label)
            if truth is not None:
                sample["truth"] = label_to_tensor(truth)
            yield sample


def training_transform(config: AugmentConfig) -> SampleTransform:
    def transform(image, label, rng):
        return augment(image, label, config, rng)

    return transform


def make_loader(stream: ShardStream, batch_size: int, num_workers: int, drop_last: bool = True) -> DataLoader:
    """Batches from a stream; decoding runs in `num_workers` background processes."""
    return DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
