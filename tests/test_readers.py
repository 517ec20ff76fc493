"""Readers of the real layouts, on small fixtures written in each real format."""

from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as official_cityscapes_labels
from layouts import write_cityscapes, write_gta5, write_synthia

from pipeline.constants import CITYSCAPES_LUT, IGNORE_INDEX, SYNTHIA_LUT
from pipeline.data.images import CorruptImageError, read_label_ids_16bit_first_channel
from pipeline.data.readers import DatasetLayoutError, list_samples, load_sample

# The SYNTHIA-RAND-CITYSCAPES README's class table, written out independently of pipeline.constants.
SYNTHIA_NAMES = {
    0: "void", 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation", 7: "pole",
    8: "car", 9: "traffic sign", 10: "person", 11: "bicycle", 12: "motorcycle", 13: "parking-slot",
    14: "road-work", 15: "traffic light", 16: "terrain", 17: "rider", 18: "truck", 19: "bus", 20: "train",
    21: "wall", 22: "lanemarking",
}  # fmt: skip


def test_cityscapes_mapping_matches_official_label_table():
    for label in official_cityscapes_labels:
        if label.id < 0:
            continue  # license plate: id -1 never occurs in labelIds files
        expected = IGNORE_INDEX if label.trainId in (255, -1) else label.trainId
        assert CITYSCAPES_LUT[label.id] == expected, label.name


def test_synthia_mapping_matches_cityscapes_class_names():
    train_id_of_name = {
        label.name: label.trainId for label in official_cityscapes_labels if 0 <= label.trainId < 255
    }
    for synthia_id, name in SYNTHIA_NAMES.items():
        expected = train_id_of_name.get(name, IGNORE_INDEX)
        assert SYNTHIA_LUT[synthia_id] == expected, name
    assert (SYNTHIA_LUT[23:] == IGNORE_INDEX).all()


@pytest.mark.parametrize("nested", [False, True])
def test_gta5_palette_labels_give_ids_not_colours(tmp_path, nested):
    written = write_gta5(tmp_path, count=3, nested=nested)
    refs = list_samples("gta5", tmp_path)
    assert [ref.id for ref in refs] == sorted(written)
    for ref in refs:
        image, train_ids = load_sample(ref)
        assert image.shape == (*written[ref.id].shape, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(train_ids, CITYSCAPES_LUT[written[ref.id]])


def test_synthia_16bit_labels_keep_class_channel(tmp_path):
    written = write_synthia(tmp_path, count=2)
    refs = list_samples("synthia", tmp_path)
    for ref in refs:
        raw = read_label_ids_16bit_first_channel(Path(ref.label_path))
        assert raw.dtype == np.uint16
        np.testing.assert_array_equal(raw, written[ref.id])
        _, train_ids = load_sample(ref)
        np.testing.assert_array_equal(train_ids, SYNTHIA_LUT[written[ref.id]])


def test_cityscapes_splits_and_unevaluated_ids(tmp_path):
    written = write_cityscapes(tmp_path, {"train": 3, "val": 2}, {"train": ["aa", "bb"], "val": ["cc"]})
    train = list_samples("cityscapes", tmp_path, "train")
    val = list_samples("cityscapes", tmp_path, "val")
    assert len(train) == 3 and len(val) == 2
    assert {ref.split for ref in val} == {"val"}
    for ref in val:
        _, train_ids = load_sample(ref)
        ids = written[ref.id]
        # ids outside the 19 classes (0, 1, 4, 6, 9, 29, 30 in the fixture) become 255
        assert (train_ids[np.isin(ids, [0, 1, 4, 6, 9, 29, 30])] == IGNORE_INDEX).all()
        assert (train_ids[ids == 26] == 13).all()  # car


def test_cityscapes_train_without_gtfine_is_unlabelled(tmp_path):
    write_cityscapes(
        tmp_path, {"train": 2, "val": 1}, {"train": ["aa"], "val": ["cc"]}, with_train_labels=False
    )
    refs = list_samples("cityscapes", tmp_path, "train")
    assert all(ref.label_path is None for ref in refs)
    image, label = load_sample(refs[0])
    assert label is None and image.ndim == 3


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("gta5", "missing folder images/"),
        ("synthia", "missing folder RGB/"),
        ("cityscapes", "leftImg8bit/val/"),
    ],
)
def test_missing_folder_names_expected_layout(tmp_path, dataset, expected):
    with pytest.raises(DatasetLayoutError, match="expected layout|leftImg8bit") as error:
        list_samples(dataset, tmp_path, "val")
    assert expected in str(error.value)


def test_corrupt_image_names_the_file(tmp_path):
    write_gta5(tmp_path, count=2)
    broken = tmp_path / "images" / "00002.png"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated PNG
    refs = list_samples("gta5", tmp_path)
    with pytest.raises(CorruptImageError, match="00002.png"):
        load_sample(refs[1])


def test_size_mismatch_names_both_files(tmp_path):
    write_gta5(tmp_path, count=1, size=(24, 40))
    other = tmp_path / "other"
    write_gta5(other, count=1, size=(20, 40))
    (tmp_path / "labels" / "00001.png").write_bytes((other / "labels" / "00001.png").read_bytes())
    with pytest.raises(
        CorruptImageError,
        match=r"images/00001.png: image size 40×24 differs from its label .*labels/00001.png",
    ):
        load_sample(list_samples("gta5", tmp_path)[0])


def test_unknown_label_ids_error_or_ignore(tmp_path):
    write_cityscapes(tmp_path, {"val": 1}, {"val": ["cc"]})
    label_path = next((tmp_path / "gtFine").rglob("*_labelIds.png"))
    from PIL import Image

    ids = np.asarray(Image.open(label_path)).copy()
    ids[0, 0] = 200
    Image.fromarray(ids).save(label_path)
    ref = list_samples("cityscapes", tmp_path, "val")[0]
    with pytest.raises(CorruptImageError, match=r"label ids \[200\] are not in the cityscapes id table"):
        load_sample(ref)
    _, train_ids = load_sample(ref, unknown_ids="ignore")
    assert train_ids[0, 0] == IGNORE_INDEX


def test_image_without_label_is_named(tmp_path):
    write_gta5(tmp_path, count=2)
    (tmp_path / "labels" / "00001.png").unlink()
    with pytest.raises(DatasetLayoutError, match="00001.png has no label file"):
        list_samples("gta5", tmp_path)
