"""Where inference runs (`inference.gpus_per_task`, `inference.batch_size`; pipeline/distributed/devices.py).

Without a GPU on this machine: the keys are validated; the GPU path's batches (`inference.batch_size`
images per forward pass) are run on the CPU and agree with one image at a time; a GPU asked for where the
Ray cluster has none is refused in one line; and on a real local Ray runtime that declares a logical GPU
(`ray.init(num_gpus=1)`), the labelling, evaluation and predict tasks of the stages ask for it and are given
it (the refusal names the GPU id Ray gave the task), and, torch finding no CUDA device, each stage stops
with that one line, exit 1. That the CPU path's outputs are unchanged is checked on the test DAG's outputs
(docs/decisions.md, issue 37).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from dvc_project import set_params

from pipeline.config import ConfigError, load_config
from pipeline.constants import IGNORE_INDEX
from pipeline.data.images import decode_label, encode_image, encode_label
from pipeline.data.shards import Manifest, shard_name, write_shard
from pipeline.distributed.devices import InferenceGpuError, cuda_index, inference_gpus
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.scoring import ShardEvaluation, evaluate_shard
from pipeline.label_shard import ShardJob, label_shard
from pipeline.models.configured import build_model
from pipeline.models.pretrained import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
IMAGE_SIZE = (32, 48)
LABELS = [0, 2, 8, 13, IGNORE_INDEX]  # the classes of the random labels
ROWS_PER_SHARD = (5, 2)  # uneven shards: a batch of 3 leaves a partial batch in each
# Share of pixels whose label may differ between a batch and one image at a time: a batched convolution
# changes the last bits of the logits, which flips the argmax of a pixel whose two best classes tie.
FLIPPED_PIXELS = 0.002
TINY = {"model.width": 0.125, "tracking.enabled": False, "evaluate.alignment_source_images": 0,
        "evaluate.panel_images": 0}  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "inference.gpus_per_task",
            1.5,
            "inference.gpus_per_task = 1.5 is out of range (allowed: ≥ 0 and ≤ 1)",
        ),
        (
            "inference.gpus_per_task",
            -1,
            "inference.gpus_per_task = -1.0 is out of range (allowed: ≥ 0 and ≤ 1)",
        ),
        ("inference.gpus_per_task", True, "inference.gpus_per_task = True must be a number"),
        ("inference.batch_size", 0, "inference.batch_size = 0 is out of range (allowed: ≥ 1)"),
        ("inference.batch_size", 2.0, "inference.batch_size = 2.0 must be an integer"),
    ],
)
def test_bad_inference_params_name_the_key_and_the_allowed_range(key, value, expected):
    with pytest.raises(ConfigError) as error:
        load_config(ROOT / "params.yaml", overrides={key: value})
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_the_torch_index_of_a_ray_gpu_is_its_place_in_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert (cuda_index("3"), cuda_index("1")) == (0, 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: physical ids
    assert cuda_index("2") == 2


def write_project(root: Path, overrides: dict | None = None) -> Path:
    """params.yaml (tiny model, `overrides`), models/warmup.pt, and target_train / target_val shards of
    random images with labels; returns the params file."""
    params = root / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    set_params(params, TINY | (overrides or {}))
    config = load_config(params)
    torch.manual_seed(0)
    model = config.resolve("models/warmup.pt")
    model.parent.mkdir(parents=True)
    write_checkpoint(build_model(config, per_domain=False).state_dict(), model)
    rng = np.random.default_rng(0)
    for split, kind in (("target_train", "train"), ("target_val", "val")):
        folder = config.shards_root / split
        folder.mkdir(parents=True)
        entries = []
        for index, count in enumerate(ROWS_PER_SHARD):
            rows = [{"id": f"{split}_{index}_{i}",
                     "image": encode_image(rng.integers(0, 256, (*IMAGE_SIZE, 3), dtype=np.uint8), "png"),
                     "label": encode_label(rng.choice(LABELS, size=IMAGE_SIZE).astype(np.uint8)),
                     "height": IMAGE_SIZE[0], "width": IMAGE_SIZE[1], "domain": "target", "split": kind}
                    for i in range(count)]  # fmt: skip
            entries.append(write_shard(rows, folder / shard_name(index), rows_per_row_group=1))
        Manifest(split, "cityscapes", "target", sum(ROWS_PER_SHARD), entries, {}, list(IMAGE_SIZE)).write(
            folder
        )
    return params


def flipped_share(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    pixels = sum(label.size for label in first)
    return sum(int((a != b).sum()) for a, b in zip(first, second, strict=True)) / pixels


def test_labelling_in_gpu_sized_batches_agrees_with_one_image_at_a_time(tmp_path):
    """The GPU path's batching (on the CPU here): the same histogram to a few pixels, the same labels but
    for pixels whose two best classes tie."""
    config = load_config(write_project(tmp_path))
    model, shard = (
        str(config.resolve("models/warmup.pt")),
        str(config.shards_root / "target_train" / shard_name(0)),
    )
    histograms = {size: label_shard(ShardJob(config, model, shard, None, None), CPU, size)["histogram"]
                  for size in (1, 3)}  # fmt: skip
    assert (
        int(histograms[1].counts.sum())
        == int(histograms[3].counts.sum())
        == ROWS_PER_SHARD[0] * np.prod(IMAGE_SIZE)
    )
    torch.testing.assert_close(
        histograms[3].thresholds(0.5), histograms[1].thresholds(0.5), atol=1e-4, rtol=0
    )
    thresholds = histograms[1].thresholds(0.5).tolist()
    labels, quality = {}, {}
    for size in (1, 3):
        output = tmp_path / f"labels_{size}.parquet"
        result = label_shard(ShardJob(config, model, shard, thresholds, str(output)), CPU, size)
        quality[size] = result["quality"]
        labels[size] = [decode_label(label) for label in pq.read_table(output)["label"].to_pylist()]
    assert len(labels[3]) == ROWS_PER_SHARD[0]
    assert flipped_share(labels[1], labels[3]) <= FLIPPED_PIXELS
    np.testing.assert_allclose(
        quality[3], quality[1], atol=FLIPPED_PIXELS * ROWS_PER_SHARD[0] * np.prod(IMAGE_SIZE)
    )


def test_scoring_in_gpu_sized_batches_agrees_with_one_image_at_a_time(tmp_path):
    config = load_config(write_project(tmp_path, {"evaluate.alignment_source_images": 4}))
    model, shard = (
        str(config.resolve("models/warmup.pt")),
        str(config.shards_root / "target_val" / shard_name(0)),
    )
    task = ShardEvaluation(config, model, shard, keep_predictions=4)
    alone, batched = evaluate_shard(task, CPU, 1), evaluate_shard(task, CPU, 3)
    matrices = [ConfusionMatrix.from_dict(result["matrix"]).matrix for result in (alone, batched)]
    assert int(matrices[0].sum()) == int(matrices[1].sum())
    assert int((matrices[0] - matrices[1]).abs().sum()) <= 2 * FLIPPED_PIXELS * int(matrices[0].sum())
    assert [row for row, _ in batched["predictions"]] == [row for row, _ in alone["predictions"]]
    assert (
        flipped_share([p for _, p in alone["predictions"]], [p for _, p in batched["predictions"]])
        <= FLIPPED_PIXELS
    )
    torch.testing.assert_close(batched["alignment"].counts, alone["alignment"].counts)
    torch.testing.assert_close(
        batched["alignment"].features, alone["alignment"].features, rtol=1e-5, atol=1e-6
    )


def test_a_gpu_asked_for_where_the_ray_cluster_has_none_is_refused_in_one_line(ray_runtime, tmp_path):
    """Driver side, before any task waits for a GPU that never comes (the session's runtime has none)."""
    config = load_config(write_project(tmp_path, {"inference.gpus_per_task": 0.5}))
    with pytest.raises(InferenceGpuError) as error:
        inference_gpus(config)
    message = str(error.value)
    assert message.startswith(
        "inference.gpus_per_task = 0.5, but the Ray cluster (node 127.0.0.1) has no GPU"
    )
    assert "inference.gpus_per_task: 0" in message and "\n" not in message
    assert inference_gpus(load_config(ROOT / "params.yaml")) == 0  # the default: CPU tasks, nothing asked


# The stages `pseudo_label` and `evaluate`, in one process as under `make repro` (the second joins the Ray
# runtime the first started). The runtime is the stages' own (`init_ray`: loopback, every core) and declares
# one logical GPU: Ray adds the resources of RAY_OVERRIDE_RESOURCES to those a node detects, as
# `ray.init(num_gpus=1)` or `ray start --num-gpus 1` do (ray/_private/resource_and_label_spec.py).
LOGICAL_GPU_STAGES = r"""
import os
import sys

os.environ["RAY_OVERRIDE_RESOURCES"] = '{"GPU": 1}'
import stages  # first, as in `python -m stages.<name>`
import ray
from pipeline.cli import run_stage
from stages.evaluate import evaluate
from stages.predict import arguments, predict_command
from stages.pseudo_label import pseudo_label

params, model, image, output = sys.argv[1:]
runs = [("pseudo_label", pseudo_label, [], None), ("evaluate", evaluate, [], None),
        ("predict", predict_command, ["--model", model, "--input", image, "--output", output],
         arguments)]
for name, body, options, parser_arguments in runs:
    try:
        run_stage(name, body, ["--params", params, *options], arguments=parser_arguments)
    except SystemExit as stop:
        gpus = ray.cluster_resources()["GPU"]
        print(f"{name} exited {stop.code}; the cluster's GPUs: {gpus}", file=sys.stderr)
"""


@pytest.mark.slow  # a Ray runtime of its own (one per process, and pytest's has no GPU)
@pytest.mark.heavy  # make test-heavy: see docs/decisions.md, "`make test` and `make test-heavy`"
def test_on_a_runtime_with_a_gpu_the_stages_tasks_are_given_it_and_stop_without_cuda(tmp_path):
    """The labelling, evaluation and predict tasks ask Ray for `inference.gpus_per_task` and are given the
    logical GPU (the task names the GPU id Ray gave it: Ray gives none to a task that asked for none);
    torch finds no CUDA device, so each stage stops with one line naming the key, the GPU and the node,
    exit 1, instead of running on the CPU."""
    params = write_project(tmp_path, {"inference.gpus_per_task": 1})
    image = tmp_path / "image.png"
    image.write_bytes(encode_image(np.zeros((*IMAGE_SIZE, 3), dtype=np.uint8), "png"))
    model, output = tmp_path / "models" / "warmup.pt", tmp_path / "predictions"
    result = subprocess.run([sys.executable, "-c", LOGICAL_GPU_STAGES, str(params), str(model), str(image),
                             str(output)], cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    errors = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("error:")
        or line.startswith(("pseudo_label exited", "evaluate exited", "predict exited"))
    ]
    refusal = (
        "inference.gpus_per_task = 1: Ray gave this task GPU 0 on node 127.0.0.1, but torch "
        f"{torch.__version__} finds no CUDA device there; install a CUDA build of torch on that node or set "
        "inference.gpus_per_task: 0"
    )
    assert errors == [
        f"error: stage pseudo_label: {refusal}",
        "pseudo_label exited 1; the cluster's GPUs: 1.0",
        f"error: stage evaluate: {refusal}",
        "evaluate exited 1; the cluster's GPUs: 1.0",
        f"error: stage predict: {refusal}",
        "predict exited 1; the cluster's GPUs: 1.0",
    ], result.stderr[-6000:]
    crashed = "Traceback" in result.stderr or "Fatal Python error" in result.stderr
    assert not crashed, result.stderr[-6000:]
    assert not (tmp_path / "data" / "shards" / "pseudo_static").exists()
    assert not (tmp_path / "metrics" / "evaluate.json").exists()
    assert not (tmp_path / "predictions" / "predictions.json").exists()
