"""`predict` (issue 17): a model applied to images on disk, written in the Cityscapes server's format.

The round trip: predictions of a model on Cityscapes-layout images, written as label ids, become the
ground truth of a copy of those images; the project's own reader, preprocessing and evaluation then
score the same model against them at 100 % (every pixel agrees), so the files hold exactly what
`evaluate` predicts, at full resolution, with ids the reader maps back to the same classes.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cityscapesscripts.helpers.labels import labels as cityscapes_labels
from layouts import write_cityscapes, write_gta5
from PIL import Image

from pipeline.cli import run_stage
from pipeline.config import Config, config_from_dict, to_params
from pipeline.constants import CITYSCAPES_LUT, NUM_CLASSES
from pipeline.data.images import CorruptImageError
from pipeline.evaluation.evaluate import evaluate_model
from pipeline.models.configured import build_model
from pipeline.models.inference import class_probabilities
from pipeline.models.pretrained import write_checkpoint
from pipeline.predict import (
    InputImage,
    NoImagesError,
    PredictOptions,
    list_inputs,
    output_paths,
    predict,
    prediction_stem,
    to_label_ids,
)
from stages.predict import arguments as add_arguments
from stages.predict import predict_command
from stages.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = (60, 100)  # the files' size; the model sees them at preprocess.target_size


def tiny_config(root: Path, cityscapes: Path) -> Config:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["synthetic"]["enabled"] = False
    raw["data"]["source"] = {"name": "gta5", "root": str(root.parent / "gta5")}
    raw["data"]["target"]["root"] = str(cityscapes)
    size = {"height": 40, "width": 64}
    raw["preprocess"] |= {
        "source_size": size,
        "target_size": size,
        "rows_per_shard": 4,
        "rows_per_row_group": 2,
    }
    raw["train"]["crop"] = {"height": 32, "width": 48}
    raw["model"]["width"] = 0.125
    raw["tracking"]["required"] = False
    return config_from_dict(raw, project_root=root)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Config, Path]:
    """Cityscapes-layout images (two cities), GTA5 for preprocess, and a model with random weights."""
    base = tmp_path_factory.mktemp("predict")
    write_gta5(base / "gta5", count=2, size=IMAGE_SIZE)
    write_cityscapes(base / "cityscapes", {"train": 2, "val": 5}, {"train": ["aa"], "val": ["bb", "cc"]},
                     size=IMAGE_SIZE)  # fmt: skip
    (base / "project").mkdir()
    config = tiny_config(base / "project", base / "cityscapes")
    torch.manual_seed(0)
    write_checkpoint(build_model(config).state_dict(), base / "model.pt")
    return base, config, base / "model.pt"


def test_label_ids_are_the_cityscapes_label_table_and_the_reader_maps_them_back():
    for label in cityscapes_labels:
        if 0 <= label.trainId < NUM_CLASSES:
            assert to_label_ids(np.array([[label.trainId]]))[0, 0] == label.id, label.name
    train_ids = np.arange(NUM_CLASSES, dtype=np.uint8)[None]
    assert (CITYSCAPES_LUT[to_label_ids(train_ids)] == train_ids).all()


def test_inputs_from_a_folder_a_glob_or_a_file_and_their_output_names(tmp_path):
    for name in ("a/x_leftImg8bit.png", "a/y.jpg", "b/z.PNG", "notes.txt"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"")
    assert [i.relative for i in list_inputs(str(tmp_path / "in"))] == [
        "a/x_leftImg8bit.png",
        "a/y.jpg",
        "b/z.PNG",
    ]
    assert [i.relative for i in list_inputs(str(tmp_path / "in" / "*" / "*.png"))] == ["a/x_leftImg8bit.png"]
    assert [i.relative for i in list_inputs(str(tmp_path / "in" / "a" / "y.jpg"))] == ["y.jpg"]
    assert prediction_stem("aachen/aachen_000000_000019_leftImg8bit.png") == "aachen/aachen_000000_000019"
    paths = output_paths(
        tmp_path / "out", InputImage("/x", "bb/bb_000000_000001_leftImg8bit.png"), overlay=True
    )
    assert paths == {"label_ids": tmp_path / "out/labelIds/bb/bb_000000_000001_pred_labelIds.png",
                     "color": tmp_path / "out/color/bb/bb_000000_000001_pred_color.png",
                     "overlay": tmp_path / "out/overlay/bb/bb_000000_000001_pred_overlay.png"}  # fmt: skip
    with pytest.raises(NoImagesError, match="no images"):
        list_inputs(str(tmp_path / "in" / "*.gif"))
    with pytest.raises(NoImagesError, match="no such file or folder"):
        list_inputs(str(tmp_path / "absent"))


def test_a_batch_gives_each_image_what_it_gets_alone(setup):
    """Up to float rounding: a batch of 3 and a batch of 1 may take different kernels. An untrained model's
    probabilities are nearly uniform (about 1/19 each), so exact argmax equality failed once on a fresh clone
    (2026-12-02): top-two margins go down to 1.5e-8 here, the batch-vs-alone difference up to 2.3e-8.
    Labels are compared where the top two classes are clearly apart; another image differs by ~2e-3."""
    _, config, _ = setup
    torch.manual_seed(0)
    model = build_model(config).eval()
    images = torch.rand(3, 3, 40, 64, generator=torch.Generator().manual_seed(0))
    sizes = [(60, 100), (40, 64), (81, 130)]
    batched = class_probabilities(model, images, sizes, [0.75, 1.0], flip=True)
    for index, size in enumerate(sizes):
        alone = class_probabilities(model, images[index : index + 1], [size], [0.75, 1.0], flip=True)[0]
        assert batched[index].shape == (NUM_CLASSES, *size)
        torch.testing.assert_close(batched[index], alone, rtol=0, atol=1e-6)  # seen: ≤ 2.3e-8
        top_two = alone.topk(2, dim=0).values
        apart = top_two[0] - top_two[1] > 1e-4
        assert apart.float().mean() > 0.5, "too few pixels with a clear label to compare"
        assert torch.equal(batched[index].argmax(0)[apart], alone.argmax(0)[apart])


def test_round_trip_through_the_reader_and_evaluate_scores_100(setup, ray_runtime):
    base, config, model = setup
    output = base / "predictions"
    # One image per batch, as `evaluate` sees them: the same arithmetic, so every pixel must agree even
    # where this untrained model's top two classes are 1e-6 apart (a batch of several moves them by ~1e-8
    # and can swap such a pair: the test above compares batches where the labels are clear).
    images = str(base / "cityscapes" / "leftImg8bit" / "val")
    options = PredictOptions(overlay=True, batch_size=1, images_per_task=2, panel=2)
    summary = predict(config, model, images, output, options)
    assert (
        summary["images"] == 5
        and (output / "predictions.json").is_file()
        and (output / "panel.png").is_file()
    )
    written = sorted(output.glob("labelIds/*/*_pred_labelIds.png"))
    assert [path.parent.name for path in written] == ["bb", "bb", "bb", "cc", "cc"]
    for path in written:
        ids = np.asarray(Image.open(path))
        assert ids.shape == IMAGE_SIZE and set(np.unique(ids)) <= set(to_label_ids(np.arange(NUM_CLASSES)))
        stem = path.name.removesuffix("_pred_labelIds.png")
        assert (output / "color" / path.parent.name / f"{stem}_pred_color.png").is_file()
        assert (
            Image.open(output / "overlay" / path.parent.name / f"{stem}_pred_overlay.png").size
            == IMAGE_SIZE[::-1]
        )

    # Batches of several images write each image its own prediction (up to those near-ties).
    batched = base / "predictions_batched"
    predict(config, model, images, batched, PredictOptions(batch_size=3, images_per_task=5, panel=0))
    for path in written:
        again = batched / path.relative_to(output)
        agree = (np.asarray(Image.open(again)) == np.asarray(Image.open(path))).mean()
        assert agree > 0.99, f"{again}: {agree:.1%} of pixels as predicted alone"

    # The predictions become the ground truth of a copy of the same images.
    copy = base / "round_trip"
    shutil.copytree(base / "cityscapes" / "leftImg8bit", copy / "leftImg8bit")
    for path in written:
        stem = path.name.removesuffix("_pred_labelIds.png")
        label = copy / "gtFine" / "val" / path.parent.name / f"{stem}_gtFine_labelIds.png"
        label.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, label)
    (copy / "gtFine" / "train").mkdir()
    shutil.copytree(base / "cityscapes" / "gtFine" / "train", copy / "gtFine" / "train", dirs_exist_ok=True)
    (base / "project2").mkdir()
    again = tiny_config(base / "project2", copy)
    preprocess(again)
    matrix = evaluate_model(again, model, panel_images=0).matrix.matrix
    assert matrix.sum() == 5 * IMAGE_SIZE[0] * IMAGE_SIZE[1]
    assert matrix.trace() == matrix.sum(), "a pixel where predict and evaluate disagree"
    assert (matrix.diagonal() > 0).sum() >= 2  # not vacuous: more than one class predicted


def test_bad_inputs_are_named(setup, tmp_path, ray_runtime):
    base, config, model = setup
    with pytest.raises(NoImagesError):
        predict(config, model, str(tmp_path), tmp_path / "out")
    with pytest.raises(Exception, match="model file .*absent.pt: not found"):
        predict(config, tmp_path / "absent.pt", str(base / "cityscapes"), tmp_path / "out")
    broken = tmp_path / "images" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(Image.new("RGB", (8, 8)).tobytes()[:20])
    with pytest.raises(CorruptImageError, match="broken.png"):
        predict(config, model, str(broken.parent), tmp_path / "out")


def command_arguments(base: Path, config: Config, folder: Path) -> list[str]:
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump(to_params(config)))
    images = base / "cityscapes" / "leftImg8bit" / "val" / "cc"
    return ["--params", str(params), "--input", str(images), "--output", str(folder / "out"),
            "--scales", "0.5", "1.0", "--flip", "--batch-size", "2"]  # fmt: skip


def test_the_command_runs(setup, tmp_path, ray_runtime):
    base, config, model = setup
    arguments = command_arguments(base, config, tmp_path)
    sigterm = signal.getsignal(signal.SIGTERM)  # run_stage sets its own: this process is pytest's
    try:
        run_stage("predict", predict_command, ["--model", str(model), *arguments], arguments=add_arguments)
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    summary = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert (
        summary["images"] == 2 and summary["options"]["scales"] == [0.5, 1.0] and summary["options"]["flip"]
    )


@pytest.mark.slow  # a stage process
def test_the_command_as_a_process_names_a_missing_model_in_one_line(setup, tmp_path):
    base, config, _ = setup
    arguments = command_arguments(base, config, tmp_path)
    command = [sys.executable, "-m", "stages.predict", "--model", str(tmp_path / "absent.pt"), *arguments]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"error: stage predict: model file {tmp_path / 'absent.pt'}: not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
