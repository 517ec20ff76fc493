"""The preprocess stage on real-format fixtures, with real Ray tasks: shards, manifests, checksums."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from layouts import write_cityscapes, write_gta5, write_synthia

from pipeline.config import config_from_dict
from pipeline.constants import CITYSCAPES_LUT, CLASS_NAMES, SYNTHIA_LUT
from pipeline.data.images import CorruptImageError, decode_image, decode_label, resize_label
from pipeline.data.preprocess import EmptySplitError
from pipeline.data.shards import ROW_SCHEMA, Manifest, ShardIntegrityError, read_table, verify_shards
from stages.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]


def make_config(tmp_path: Path, source: str = "gta5", **preprocess_overrides):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["synthetic"]["enabled"] = False
    raw["data"]["source"] = {"name": source, "root": str(tmp_path / source)}
    raw["data"]["target"]["root"] = str(tmp_path / "cityscapes")
    raw["preprocess"] |= {
        "source_size": {"height": 12, "width": 20},
        "target_size": {"height": 8, "width": 16},
        "rows_per_shard": 2,
        "rows_per_row_group": 1,
    } | preprocess_overrides
    raw["train"]["crop"] = {"height": 8, "width": 16}
    return config_from_dict(raw, project_root=tmp_path)


@pytest.fixture
def datasets(tmp_path):
    gta5 = write_gta5(tmp_path / "gta5", count=5, size=(24, 40))
    synthia = write_synthia(tmp_path / "synthia", count=3, size=(24, 40))
    cityscapes = write_cityscapes(
        tmp_path / "cityscapes", {"train": 3, "val": 3}, {"train": ["aa", "bb"], "val": ["cc"]}, size=(16, 32)
    )
    return {"gta5": gta5, "synthia": synthia, "cityscapes": cityscapes}


def test_shards_manifests_and_round_trip(tmp_path, datasets, ray_runtime):
    config = make_config(tmp_path)
    manifests = preprocess(config)
    shards = tmp_path / "data" / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["source", "target_train", "target_val"]
    source = Manifest.read(shards / "source")
    assert source.rows == 5 and [s["file"] for s in source.shards] == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet",
    ]  # fmt: skip
    assert manifests["source"].rows == 5
    verify_shards(shards / "source")

    table = read_table(shards / "source")
    assert table.schema.equals(ROW_SCHEMA)
    assert pq.ParquetFile(shards / "source" / "part-00000.parquet").num_row_groups == 2
    expected_pixels = np.zeros(len(CLASS_NAMES), dtype=np.int64)
    for row in table.to_pylist():
        image, label = decode_image(row["image"]), decode_label(row["label"])
        assert image.shape == (12, 20, 3) and (row["height"], row["width"]) == (12, 20)
        assert row["domain"] == "source" and row["split"] == "train"
        np.testing.assert_array_equal(
            label, resize_label(CITYSCAPES_LUT[datasets["gta5"][row["id"]]], (12, 20))
        )
        expected_pixels += np.bincount(label.ravel(), minlength=256)[: len(CLASS_NAMES)]
    assert list(source.class_pixel_counts.values()) == expected_pixels.tolist()

    # Target val keeps full-resolution labels (evaluation at label resolution); train labels are resized.
    val = read_table(shards / "target_val").to_pylist()
    assert decode_image(val[0]["image"]).shape == (8, 16, 3)
    assert decode_label(val[0]["label"]).shape == (16, 32)
    train = read_table(shards / "target_train").to_pylist()
    assert decode_label(train[0]["label"]).shape == (8, 16)
    assert {row["domain"] for row in train} == {"target"}
    # Nothing temporary is left behind.
    assert not [p for p in shards.rglob("*") if p.name.startswith(".")]


def test_synthia_source(tmp_path, datasets, ray_runtime):
    preprocess(make_config(tmp_path, source="synthia"))
    rows = read_table(tmp_path / "data" / "shards" / "source").to_pylist()
    row = rows[0]
    np.testing.assert_array_equal(
        decode_label(row["label"]), resize_label(SYNTHIA_LUT[datasets["synthia"][row["id"]]], (12, 20))
    )


def test_corrupt_image_error_names_file_and_leaves_nothing(tmp_path, datasets, ray_runtime):
    broken = tmp_path / "gta5" / "images" / "00003.png"
    broken.write_bytes(broken.read_bytes()[:70])
    with pytest.raises(CorruptImageError, match="00003.png"):
        preprocess(make_config(tmp_path))
    shards = tmp_path / "data" / "shards"
    assert not shards.exists() or not any(shards.rglob("*.parquet"))


def test_corrupt_image_skipped_and_counted(tmp_path, datasets, ray_runtime):
    broken = tmp_path / "gta5" / "images" / "00003.png"
    broken.write_bytes(b"not a png at all")
    manifests = preprocess(make_config(tmp_path, on_corrupt="skip"))
    assert manifests["source"].rows == 4
    assert manifests["source"].skipped == 1 and "00003.png" in manifests["source"].skipped_files[0]


def test_empty_split_is_an_error(tmp_path, datasets, ray_runtime):
    for path in (tmp_path / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"):
        path.unlink()
    with pytest.raises(EmptySplitError, match="split target_val: no cityscapes samples"):
        preprocess(make_config(tmp_path))


def test_truncated_shard_fails_checksum(tmp_path, datasets, ray_runtime):
    preprocess(make_config(tmp_path))
    shard = tmp_path / "data" / "shards" / "source" / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ShardIntegrityError, match="part-00001.parquet: sha256"):
        read_table(shard.parent)


def test_rerun_replaces_split_without_stale_shards(tmp_path, datasets, ray_runtime):
    preprocess(make_config(tmp_path))
    preprocess(make_config(tmp_path, rows_per_shard=10))
    files = sorted(p.name for p in (tmp_path / "data" / "shards" / "source").iterdir())
    assert files == ["manifest.json", "part-00000.parquet"]
