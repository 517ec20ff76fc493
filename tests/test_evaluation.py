"""Evaluation: the confusion matrix against hand-computed IoUs, protocols, plots, DVC plot data, panels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

from pipeline.constants import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    PROTOCOL_13,
    PROTOCOL_16,
    TRAIN_ID_PALETTE,
)
from pipeline.distributed.collectives import all_reduce_sum
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.panels import GAP, header_height, qualitative_panel, save_panel
from pipeline.evaluation.plots import (
    CONFUSION_COUNTS_TEMPLATE,
    confusion_matrix_plot,
    confusion_plot_rows,
    iou_plot_rows,
    normalized_confusion,
    per_class_iou_plot,
    write_confusion_template,
    write_plot_rows,
)
from pipeline.evaluation.protocols import headline_protocol, protocol_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A 3-class case worked by hand. Pixel pairs (target, prediction), the last one ignored:
#   (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) (2,0) (255,1)
# matrix rows = ground truth:  [[2, 1, 0],
#                               [0, 1, 1],
#                               [1, 0, 1]]
# TP = [2, 1, 1], FP = column sums − TP = [1, 1, 1], FN = row sums − TP = [1, 1, 1]
# IoU = [2/4, 1/3, 1/3], mIoU = (1/2 + 2/3) / 3 = 7/18, pixel accuracy = 4/7.
HAND_TARGET = torch.tensor([0, 0, 0, 1, 1, 2, 2, IGNORE_INDEX])
HAND_PRED = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])


def random_labels(seed: int, shape=(3, 17, 23), num_classes: int = NUM_CLASSES, ignore_fraction: float = 0.1):
    """Random (prediction, target) with ~70% correct pixels and some ignore pixels in the target."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, shape, generator=generator)
    noise = torch.randint(0, num_classes, shape, generator=generator)
    pred = torch.where(torch.rand(shape, generator=generator) < 0.7, target, noise)
    target = torch.where(torch.rand(shape, generator=generator) < ignore_fraction, IGNORE_INDEX, target)
    return pred, target.to(torch.uint8)


# ------------------------------------------------------------------------------- ConfusionMatrix
def test_hand_computed_three_class_case():
    cm = ConfusionMatrix(3).update(HAND_PRED, HAND_TARGET)
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert cm.num_pixels == 7  # the ignored pixel is not counted
    assert cm.iou().dtype == torch.float64
    assert torch.allclose(cm.iou(), torch.tensor([2 / 4, 1 / 3, 1 / 3], dtype=torch.float64))
    assert cm.miou() == pytest.approx(7 / 18)
    assert cm.pixel_accuracy() == pytest.approx(4 / 7)
    assert isinstance(cm.miou(), float)


def test_ignore_pixels_are_skipped_whatever_their_prediction():
    cm = ConfusionMatrix(3).update(HAND_PRED, HAND_TARGET)
    extra_target = torch.full((5,), IGNORE_INDEX)
    extra_pred = torch.tensor([0, 1, 2, 99, -4])  # out-of-range predictions on ignored pixels are fine
    cm.update(extra_pred, extra_target)
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 1]]


def test_custom_ignore_index():
    target = torch.tensor([0, 1, -1, 2])
    pred = torch.tensor([0, 1, 1, 2])
    cm = ConfusionMatrix(3, ignore_index=-1).update(pred, target)
    assert cm.matrix.diagonal().tolist() == [1, 1, 1]
    assert cm.num_pixels == 3


def test_class_absent_from_both_is_nan_and_excluded_from_the_mean():
    cm = ConfusionMatrix(4).update(HAND_PRED, HAND_TARGET)  # class 3 appears nowhere
    iou = cm.iou()
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx(7 / 18)  # the 3-class mean, not divided by 4
    assert cm.miou([0, 3]) == pytest.approx(0.5)
    assert math.isnan(cm.miou([3]))


def test_class_only_predicted_has_iou_zero_and_counts():
    # Class 3 is predicted once on a class-0 pixel: IoU(3) = 0 / (0 + 1 + 0); IoU(0) = 2 / (2 + 1 + 2).
    target = torch.cat([HAND_TARGET, torch.tensor([0])])
    pred = torch.cat([HAND_PRED, torch.tensor([3])])
    cm = ConfusionMatrix(4).update(pred, target)
    iou = cm.iou()
    assert iou[3] == 0.0
    assert iou[0] == pytest.approx(2 / 5)
    assert cm.miou() == pytest.approx((2 / 5 + 1 / 3 + 1 / 3 + 0) / 4)


def test_merge_of_two_halves_equals_one_update_on_the_whole():
    pred, target = random_labels(0)
    whole = ConfusionMatrix(NUM_CLASSES).update(pred, target)
    first = ConfusionMatrix(NUM_CLASSES).update(pred[:1], target[:1])
    second = ConfusionMatrix(NUM_CLASSES).update(pred[1:], target[1:])
    merged = ConfusionMatrix.merge_all([first, second])
    assert torch.equal(merged.matrix, whole.matrix)
    assert first.num_pixels + second.num_pixels == whole.num_pixels  # inputs untouched by merge_all
    assert torch.equal(first.merge(second).matrix, whole.matrix)


def test_updates_accumulate_like_one_update_on_the_concatenation():
    batches = [random_labels(seed, shape=(2, 9, 11)) for seed in range(4)]
    accumulated = ConfusionMatrix(NUM_CLASSES)
    for pred, target in batches:
        accumulated.update(pred, target)
    single = ConfusionMatrix(NUM_CLASSES).update(
        torch.cat([p for p, _ in batches]), torch.cat([t for _, t in batches])
    )
    assert torch.equal(accumulated.matrix, single.matrix)
    # Split-level accumulation is not the mean of per-image scores.
    per_image = [ConfusionMatrix(NUM_CLASSES).update(p, t).miou() for p, t in batches]
    assert accumulated.miou() != pytest.approx(float(np.mean(per_image)), abs=1e-9)


def test_matches_an_independent_numpy_count():
    pred, target = random_labels(1)
    expected = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    valid = target.numpy() != IGNORE_INDEX
    np.add.at(expected, (target.numpy()[valid].astype(np.int64), pred.numpy()[valid]), 1)
    cm = ConfusionMatrix(NUM_CLASSES).update(pred, target)
    assert np.array_equal(cm.matrix.numpy(), expected)
    # numpy inputs are accepted too
    assert torch.equal(ConfusionMatrix(NUM_CLASSES).update(pred.numpy(), target.numpy()).matrix, cm.matrix)


def test_miou_over_a_protocol_subset():
    cm = ConfusionMatrix(3).update(HAND_PRED, HAND_TARGET)
    assert cm.miou([1, 2]) == pytest.approx(1 / 3)
    assert cm.miou((0,)) == pytest.approx(0.5)


def test_reset_and_serialisation_round_trip():
    pred, target = random_labels(2)
    cm = ConfusionMatrix(NUM_CLASSES).update(pred, target)
    restored = ConfusionMatrix.from_dict(json.loads(json.dumps(cm.to_dict())))
    assert torch.equal(restored.matrix, cm.matrix)
    assert restored.ignore_index == cm.ignore_index
    cm.reset()
    assert cm.num_pixels == 0
    assert math.isnan(cm.pixel_accuracy())
    assert math.isnan(cm.miou())


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), "shape"),
        (torch.tensor([0, 3]), torch.tensor([0, 1]), "outside"),  # prediction id 3 of 3 classes
        (torch.tensor([0, -1]), torch.tensor([0, 1]), "outside"),
        (torch.tensor([0, 1]), torch.tensor([0, 7]), "outside"),  # target neither class nor ignore
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), "integer"),  # logits-like floats
    ],
)
def test_bad_inputs_raise_clear_errors(pred, target, message):
    with pytest.raises(ValueError, match=message):
        ConfusionMatrix(3).update(pred, target)


def test_bad_construction_merge_and_state_raise():
    with pytest.raises(ValueError, match="ignore_index"):
        ConfusionMatrix(3, ignore_index=1)
    with pytest.raises(ValueError, match="merge"):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match="at least one"):
        ConfusionMatrix.merge_all([])
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix.from_dict({"num_classes": 3, "ignore_index": 255, "matrix": [[0, 1], [2, 3]]})
    with pytest.raises(ValueError, match="outside"):
        ConfusionMatrix(3).miou([0, 5])


def test_all_reduce_is_a_no_op_without_a_process_group():
    cm = ConfusionMatrix(3).update(HAND_PRED, HAND_TARGET)
    assert not dist.is_initialized()
    assert all_reduce_sum(cm.matrix).tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 1]]


def test_all_reduce_in_a_real_gloo_group(tmp_path):
    """One-rank gloo group: the same call path as on a cluster, the sum over one rank is the matrix."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cm = ConfusionMatrix(3).update(HAND_PRED, HAND_TARGET)
        assert all_reduce_sum(cm.matrix).tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 1]]
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------- protocols
def protocol_case() -> ConfusionMatrix:
    """One pixel per class; terrain (9) predicted as road (0); train (16) absent everywhere.

    IoU(road) = 1/2, IoU(terrain) = 0, IoU(train) = NaN, every other class 1.
    """
    target = torch.tensor([c for c in range(NUM_CLASSES) if c != 16])
    pred = torch.where(target == 9, 0, target)
    return ConfusionMatrix(NUM_CLASSES).update(pred, target)


def test_headline_protocol():
    assert headline_protocol("gta5") == 19
    assert headline_protocol("synthia") == 16
    with pytest.raises(ValueError, match="gta5"):
        headline_protocol("cityscapes")


def test_protocol_metrics_schema_and_percent_values():
    cm = protocol_case()
    gta = protocol_metrics(cm, "gta5")
    assert list(gta) == ["miou", "miou19", "miou16", "miou13", "per_class_iou"]
    assert gta["miou19"] == round(100 * 16.5 / 18, 2) == 91.67  # 18 defined classes
    assert gta["miou16"] == round(100 * 15.5 / 16, 2)  # terrain and train are not in the 16
    assert gta["miou13"] == round(100 * 12.5 / 13, 2) == 96.15
    assert gta["miou"] == gta["miou19"]
    assert protocol_metrics(cm, "synthia")["miou"] == gta["miou16"]
    per_class = gta["per_class_iou"]
    assert list(per_class) == list(CLASS_NAMES)
    assert per_class["road"] == 50.0
    assert per_class["terrain"] == 0.0
    assert per_class["sky"] == 100.0
    assert per_class["train"] is None
    json.dumps(gta, allow_nan=False)  # valid JSON: no NaN anywhere
    assert len(PROTOCOL_16) == 16 and len(PROTOCOL_13) == 13


def test_protocol_metrics_needs_the_19_classes():
    with pytest.raises(ValueError, match="19"):
        protocol_metrics(ConfusionMatrix(3).update(HAND_PRED, HAND_TARGET), "gta5")


# ------------------------------------------------------------------------------- plots
def assert_png(path: Path, min_bytes: int = 5_000, min_side: int = 200) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > min_bytes
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= min_side
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary left


def test_per_class_iou_plot(tmp_path):
    cm = protocol_case()
    other = ConfusionMatrix(NUM_CLASSES).update(*random_labels(3))
    results = {
        "source_only": protocol_metrics(cm, "gta5")["per_class_iou"],  # holds a None (train)
        "dass": protocol_metrics(other, "gta5")["per_class_iou"],
    }
    assert_png(per_class_iou_plot(results, tmp_path / "plots" / "per_class_iou.png", title="GTA5→Cityscapes"))


def test_confusion_matrix_plot(tmp_path):
    cm = protocol_case()  # the train row is empty: drawn blank, not a division by zero
    for normalize in ("true", None):  # "pred" and "all": test_normalized_confusion_rows_sum_to_one
        assert_png(confusion_matrix_plot(cm, tmp_path / f"cm_{normalize}.png", normalize=normalize))


def test_normalized_confusion_rows_sum_to_one():
    counts = np.array([[2, 2], [0, 0]])
    rows = normalized_confusion(counts, "true")
    assert rows[0].tolist() == [0.5, 0.5]
    assert np.isnan(rows[1]).all()
    assert normalized_confusion(counts, "all").sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="normalize"):
        normalized_confusion(counts, "rows")


def test_dvc_plot_rows_render_with_dvc_templates(tmp_path):
    """The rows fill DVC's own renderer (dvc_render) without missing fields or leftover anchors."""
    from dvc_render.vega import VegaRenderer

    cm = protocol_case()
    metrics = protocol_metrics(cm, "gta5")
    iou_rows = iou_plot_rows(metrics["per_class_iou"])
    assert {"class": "road", "iou": 50.0} in iou_rows
    assert all(row["class"] != "train" for row in iou_rows)  # None is left out
    assert iou_plot_rows({"road": 1.0}, model="dass") == [{"class": "road", "iou": 1.0, "model": "dass"}]

    cells = confusion_plot_rows(cm)
    assert len(cells) == NUM_CLASSES - 1  # 17 diagonal cells + terrain→road
    assert {"actual": "terrain", "predicted": "road", "count": 1} in cells
    assert sum(row["count"] for row in cells) == cm.num_pixels

    iou_file = write_plot_rows(iou_rows, tmp_path / "plots" / "iou" / "dass.json")
    cells_file = write_plot_rows(cells, tmp_path / "plots" / "confusion" / "dass.json")
    template = write_confusion_template(tmp_path / ".dvc" / "plots" / "confusion_counts.json")
    assert json.loads(template.read_text()) == CONFUSION_COUNTS_TEMPLATE

    for rows_file, properties in [
        (iou_file, {"template": "bar_horizontal", "x": "iou", "y": "class"}),
        (cells_file, {"template": str(template), "x": "predicted", "y": "actual"}),
    ]:
        datapoints = [{**row, "rev": "workspace"} for row in json.loads(rows_file.read_text())]
        spec = VegaRenderer(datapoints, rows_file.name, **properties).get_filled_template()
        assert "<DVC_METRIC" not in json.dumps(spec)
        assert spec["data"]["values"] == datapoints


# ------------------------------------------------------------------------------- panels
def test_qualitative_panel_layout_and_colours(tmp_path):
    height, width, rows = 24, 32, 2
    generator = np.random.default_rng(0)
    images = [generator.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(rows)]
    ground_truths = [np.full((height, width), 0, dtype=np.uint8) for _ in range(rows)]
    ground_truths[0][0, 0] = IGNORE_INDEX
    # Half-resolution predictions are resized (nearest) to the image size.
    source_only = [np.full((height // 2, width // 2), 13, dtype=np.int64) for _ in range(rows)]
    dass = [torch.full((height, width), 11, dtype=torch.uint8) for _ in range(rows)]
    dass[1][-1, -1] = 18

    panel = qualitative_panel(
        images, ground_truths, {"source_only": source_only, "dass": dass}, row_titles=["a", "b"], legend=False
    )
    columns = 4
    top = header_height(14)
    assert panel.mode == "RGB"
    assert panel.size == (columns * width + (columns - 1) * GAP, top + rows * height + (rows - 1) * GAP)

    pixels = np.asarray(panel)

    def cell_pixel(row: int, column: int, y: int, x: int) -> tuple[int, ...]:
        return tuple(pixels[top + row * (height + GAP) + y, column * (width + GAP) + x])

    assert cell_pixel(1, 0, height - 2, width - 3) == tuple(images[1][-2, -3])  # the image, unchanged
    assert cell_pixel(0, 1, height - 1, width - 1) == TRAIN_ID_PALETTE[0]  # ground truth: road
    assert cell_pixel(0, 1, 0, 0) == (0, 0, 0)  # ignore is black
    assert cell_pixel(0, 2, height - 1, width - 1) == TRAIN_ID_PALETTE[13]  # upsampled prediction: car
    assert cell_pixel(1, 3, 0, width - 1) == TRAIN_ID_PALETTE[11]  # person
    assert cell_pixel(1, 3, height - 1, width - 1) == TRAIN_ID_PALETTE[18]  # bicycle

    with_legend = qualitative_panel(images, ground_truths, source_only)  # a plain list: one column
    assert with_legend.width == 3 * width + 2 * GAP
    assert with_legend.height > header_height(14) + rows * height + (rows - 1) * GAP
    assert_png(save_panel(with_legend, tmp_path / "panels" / "val.png"), min_bytes=500, min_side=50)


def test_qualitative_panel_rejects_bad_inputs():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    label = np.zeros((4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="maps"):
        qualitative_panel([image, image], [label], [label, label])
    with pytest.raises(ValueError, match="uint8"):
        qualitative_panel([image.astype(np.float32)], [label], [label])
    with pytest.raises(ValueError, match="ids"):
        qualitative_panel([image], [label + 40], [label])


def _all_reduce_worker(rank: int, world_size: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        half = slice(rank * 4, (rank + 1) * 4)  # each rank sees half of the hand-computed pixels
        cm = ConfusionMatrix(3).update(HAND_PRED[half], HAND_TARGET[half])
        results[rank] = all_reduce_sum(cm.matrix).tolist()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_sums_over_two_gloo_ranks(tmp_path):
    """Two real processes: every rank ends with the matrix of the whole split."""
    import torch.multiprocessing as mp

    with mp.get_context("spawn").Manager() as manager:  # not fork: it breaks a Ray driver's gRPC
        results = manager.dict()
        mp.spawn(_all_reduce_worker, args=(2, str(tmp_path / "store"), results), nprocs=2)
        assert dict(results) == {r: [[2, 1, 0], [0, 1, 1], [1, 0, 1]] for r in range(2)}


def test_final_metrics_of_a_cell_whose_run_is_in_another_store_are_skipped_with_a_warning(tmp_path, caplog):
    import yaml

    from pipeline.config import config_from_dict
    from pipeline.tracking.mlflow_run import Tracker
    from stages.evaluate import log_to_cell_run

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    config = config_from_dict(raw, project_root=tmp_path)
    cells = tmp_path / "metrics" / "adapt"
    cells.mkdir(parents=True)
    metrics = {"miou": 12.5, "per_class_iou": {"road": 60.0, "sky": None}}
    # A run of this store (a real sqlite MLflow store under tmp_path) gets the final metrics ...
    run_id = Tracker(config, "ablation", "base_seed0", "adapt").run_id
    (cells / "base_seed0.json").write_text(json.dumps({"mlflow_run_id": run_id}))
    log_to_cell_run(config, "base_seed0", metrics)
    logged = Tracker(config, "ablation", "base_seed0", "evaluate", run_id=run_id).client.get_run(run_id)
    assert logged.data.metrics == {"final.miou": 12.5, "final.iou.road": 60.0}
    # ... and a run id from another store is named in a warning instead of stopping the evaluation.
    (cells / "dass_seed0.json").write_text(json.dumps({"mlflow_run_id": "0" * 32}))
    log_to_cell_run(config, "dass_seed0", metrics)
    assert "dass_seed0: its MLflow run 00000000" in caplog.text and "is not in sqlite:///" in caplog.text
