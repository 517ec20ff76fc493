"""The shard loader: row groups split across ranks and loader workers, endless shuffling, transforms."""

from collections import Counter

import numpy as np
import pytest
import torch

from pipeline.data.images import decode_label, encode_image, encode_label
from pipeline.data.loader import (
    ReadUnit,
    ShardStream,
    make_loader,
    read_units,
    training_transform,
    units_for_worker,
)
from pipeline.data.shards import Manifest, write_shard
from pipeline.data.transforms import AugmentConfig, augment, image_to_tensor, tensor_to_image


def write_split(folder, rows_per_shard=6, shards=3, size=(8, 12)):
    folder.mkdir(parents=True)
    entries = []
    for shard in range(shards):
        rows = []
        for i in range(rows_per_shard):
            index = shard * rows_per_shard + i
            image = np.full((*size, 3), index, dtype=np.uint8)
            label = np.full(size, index % 19, dtype=np.uint8)
            encoded = {"image": encode_image(image, "png"), "label": encode_label(label)}
            rows.append(
                {
                    "id": f"s{index:03d}",
                    **encoded,
                    "height": size[0],
                    "width": size[1],
                    "domain": "source",
                    "split": "train",
                }
            )
        entries.append(write_shard(rows, folder / f"part-{shard:05d}.parquet", rows_per_row_group=2))
    Manifest("source", "gta5", "source", rows_per_shard * shards, entries, {}, list(size)).write(folder)
    return folder


def ids_of(stream, limit=None):
    ids = []
    for sample in stream:
        ids.append(sample["id"])
        if limit and len(ids) == limit:
            break
    return ids


def test_read_units_lists_row_groups(tmp_path):
    units = read_units(write_split(tmp_path / "split"))
    assert len(units) == 9 and sum(unit.rows for unit in units) == 18


def test_finite_streams_partition_the_split_across_ranks(tmp_path):
    units = read_units(write_split(tmp_path / "split"))
    seen = []
    for rank in range(2):
        seen += ids_of(ShardStream(units, rank=rank, world_size=2, endless=False))
    assert sorted(seen) == [f"s{i:03d}" for i in range(18)]


def test_endless_stream_visits_every_row_each_epoch_and_reshuffles(tmp_path):
    units = read_units(write_split(tmp_path / "split"))
    stream = ShardStream(units, seed=3, endless=True)
    ids = ids_of(stream, limit=36)
    assert Counter(ids[:18]) == Counter(ids[18:]) and ids[:18] != ids[18:]
    assert ids_of(ShardStream(units, seed=3, endless=True), limit=36) == ids  # seeded


def test_more_workers_than_row_groups_still_yield():
    units = [ReadUnit("a", 0, 2)]
    assert units_for_worker(units, 3, 4, wrap=True) == units
    assert units_for_worker(units, 3, 4, wrap=False) == []


def test_loader_batches_with_background_workers(tmp_path):
    units = read_units(write_split(tmp_path / "split"))
    config = AugmentConfig(crop_size=(6, 10), scale_range=(0.75, 1.5), flip=True)
    stream = ShardStream(units, seed=0, transform=training_transform(config))
    batch = next(iter(make_loader(stream, batch_size=4, num_workers=2)))
    assert batch["image"].shape == (4, 3, 6, 10) and batch["label"].shape == (4, 6, 10)
    assert batch["label"].dtype == torch.int64


def test_augment_keeps_image_and_label_aligned():
    rng = np.random.default_rng(0)
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    label = np.zeros((20, 30), dtype=np.uint8)
    image[:, 15:] = 200
    label[:, 15:] = 7
    for _ in range(10):
        out_image, out_label = augment(image, label, AugmentConfig((16, 16), (0.5, 2.0), True), rng)
        assert out_image.shape[:2] == out_label.shape == (16, 16)
        bright = out_image[..., 0] == 200
        assert (out_label[bright] == 7).all()


def test_crop_larger_than_image_pads_label_with_ignore():
    rng = np.random.default_rng(0)
    _, label = augment(
        np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), AugmentConfig((6, 6), (1, 1), False), rng
    )
    assert (label == 255).sum() == 36 - 16


def test_tensor_round_trip():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(tensor_to_image(image_to_tensor(image)), image)


def test_stream_without_labels_needs_none(tmp_path):
    units = read_units(write_split(tmp_path / "split"))
    sample = next(iter(ShardStream(units, with_labels=False, endless=False)))
    assert "label" not in sample


def test_empty_split_refused():
    with pytest.raises(ValueError, match="no row groups"):
        ShardStream([])


def test_labels_from_a_mirror_and_truth_stay_aligned(tmp_path):
    """Pseudo labels come from a mirrored split; ground truth rides along with the same crop and flip."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    split = write_split(tmp_path / "split", rows_per_shard=4, shards=1, size=(12, 12))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    table = pq.read_table(split / "part-00000.parquet", columns=["id", "label"]).to_pylist()
    # pseudo label = (ground truth + 1) mod 19, so the two must match pixel for pixel after transforms
    rows = [{"id": r["id"], "label": encode_label((decode_label(r["label"]) + 1) % 19)} for r in table]
    pq.write_table(pa.Table.from_pylist(rows), mirror / "part-00000.parquet", row_group_size=2)
    config = AugmentConfig(crop_size=(8, 8), scale_range=(0.5, 1.5), flip=True)
    stream = ShardStream(
        read_units(split), transform=training_transform(config), label_folder=mirror, with_truth=True
    )
    for sample, _ in zip(stream, range(12), strict=False):
        truth, label = sample["truth"], sample["label"]
        valid = truth != 255
        assert torch.equal(label[valid], (truth[valid] + 1) % 19)
