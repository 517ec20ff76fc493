"""Sharded Parquet storage of preprocessed samples (design.md §3).

A split lives in `data/shards/<split>/part-00000.parquet …` beside a `manifest.json` (rows, sha256 per
shard, class pixel counts). Every file is written under a temporary name and renamed, so a reader never
sees half a shard, and names are fixed so DVC outputs stay reproducible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path, write_json_atomic
from pipeline.constants import CLASS_NAMES
from pipeline.data.images import decode_image, decode_label
from pipeline.errors import InputError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ROW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),  # PNG or JPEG bytes, RGB
        pa.field("label", pa.binary(), nullable=True),  # PNG of train ids; null when unlabelled
        pa.field("height", pa.int32(), nullable=False),  # image size
        pa.field("width", pa.int32(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),  # source | target
        pa.field("split", pa.string(), nullable=False),  # train | val
    ]
)
# A label mirror of a split (the static pseudo labels): same files, rows and row groups as the split.
LABEL_ROW_SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("label", pa.binary())])


class ShardIntegrityError(InputError, ValueError):
    """A shard whose bytes do not match its manifest entry (truncated, edited or missing)."""


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(rows: list[dict[str, Any]], path: Path, rows_per_row_group: int) -> dict[str, Any]:
    """Write rows (dicts of ROW_SCHEMA fields) as one Parquet file; return its manifest entry."""
    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    with atomic_path(path) as temporary:
        # Images are already compressed; Parquet compression would only cost time.
        pq.write_table(table, temporary, row_group_size=rows_per_row_group, compression="none")
    return {"file": path.name, "rows": len(rows), "sha256": sha256_of(path), "bytes": path.stat().st_size}


@dataclass
class Manifest:
    """Contents of a split's manifest.json."""

    split: str
    dataset: str
    domain: str
    rows: int
    shards: list[dict[str, Any]]
    class_pixel_counts: dict[str, int]
    image_size: list[int]
    skipped: int = 0
    skipped_files: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def write(self, folder: Path) -> None:
        write_json_atomic(folder / MANIFEST, asdict(self))

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no manifest — run the `preprocess` stage first")
        return cls(**json.loads(path.read_text()))

    @property
    def labelled_classes(self) -> list[str]:
        return [name for name in CLASS_NAMES if self.class_pixel_counts.get(name, 0) > 0]


def verify_shards(folder: Path, manifest: Manifest | None = None) -> Manifest:
    """Check every shard of a split against the sha256 in its manifest (names the bad file)."""
    manifest = manifest or Manifest.read(folder)
    for entry in manifest.shards:
        path = folder / entry["file"]
        if not path.is_file():
            raise ShardIntegrityError(f"{path}: listed in {folder / MANIFEST} but missing")
        actual = sha256_of(path)
        if actual != entry["sha256"]:
            raise ShardIntegrityError(
                f"{path}: sha256 {actual[:12]}… does not match the manifest's {entry['sha256'][:12]}… "
                "(truncated or modified; rerun `dvc repro preprocess`)"
            )
    return manifest


def shard_paths(folder: Path, manifest: Manifest | None = None) -> list[Path]:
    manifest = manifest or Manifest.read(folder)
    return [folder / entry["file"] for entry in manifest.shards]


def read_table(folder: Path, columns: list[str] | None = None, verify: bool = True) -> pa.Table:
    """A whole split as one Arrow table (small splits, evaluation); checks checksums first."""
    manifest = verify_shards(folder) if verify else Manifest.read(folder)
    tables = [pq.read_table(path, columns=columns) for path in shard_paths(folder, manifest)]
    return pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table()


@dataclass(frozen=True)
class ShardRow:
    """One decoded row of a shard."""

    id: str
    image: np.ndarray | None  # uint8 RGB [H, W, 3]; None when not read
    label: np.ndarray | None  # uint8 train ids [h, w]; None when unlabelled or not read


def read_rows(
    shard: Path, limit: int | None = None, image: bool = True, label: bool = True
) -> Iterator[ShardRow]:
    """The rows of one shard in order (the first `limit` only), decoded: the one way rows are read
    outside the training loader, which reads row groups (pipeline/data/loader.py)."""
    columns = ["id"] + ["image"] * image + ["label"] * label
    table = pq.read_table(shard, columns=columns)
    for row in (table if limit is None else table.slice(0, limit)).to_pylist():
        yield ShardRow(
            row["id"],
            decode_image(row["image"]) if image else None,
            decode_label(row["label"]) if label and row["label"] is not None else None,
        )
