"""Every GPU question in one run: `python -m benchmarks.gpu_check --out gpu_check.json` (≤ 8 min on one GPU).

Writes one JSON and prints a short table:
1. environment: device, driver, torch / CUDA / NCCL versions, free memory; whether Ray, MLflow and DVC
   are installed (none of them is needed here).
2. steps: images/s and peak memory of a training step of the paper model (DeepLabV2 ResNet-101, output
   stride 8, frozen BatchNorm; presets/paper-gta5.yaml) at the paper crop, one source + one target image,
   in fp32, bf16 and bf16 + channels_last, for a `base` and a `dass` step (the objective of
   pipeline/training/adaptation_losses.py), and the dass/base ratio.
3. adaptation: a real adaptation run of the `dass` row, the worker function Ray Train runs
   (pipeline/training/adapt.py:adapt_worker) with the GPU and NCCL, on the embedded benchmark rendered at
   the paper's sizes, as a sweep trial (so the held-out confusion matrix is all-reduced too); its
   checkpoint and prototype memory are read back and stepped once more on the GPU. Without Ray (the GPU
   machine has none) the worker runs in process as the only rank of a one-rank NCCL process group
   (pipeline/distributed/worker_api.py:run_in_process); the JSON says which.
4. inference: evaluation (prediction at full label resolution) and CBST labelling (the labeller's
   test-time views) of the rendered target-val images on the GPU, one image per pass, images/s.
5. stage inference: the labelling and evaluation passes as the stages run them on a GPU cluster, through
   the very functions of their Ray tasks (pipeline/label_shard.py: both CBST passes over target train,
   labels written; pipeline/evaluation/scoring.py: target val), `inference.batch_size` images per pass:
   images/s, the labels' density and the mIoU, so the first GPU run measures what a user would run.
6. repeatability: the same adaptation steps twice from the same start; the largest weight difference.
7. fit: the largest batch per worker (images per domain) at the paper crop in bf16 that fits in memory.

`--device cpu --quick` runs every part at toy sizes on the CPU (the test suite does, so the GPU path's
code runs in CI); the JSON then marks the figures that mean nothing on a CPU. Nothing is downloaded:
the model starts from random weights (the paper's init file is not needed to time or check anything),
static labels are the rendered ground truth (the labeller's speed is measured in part 4), tracking is
off. Ray, MLflow and DVC are not imported on this path.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from benchmarks.step_overhead import make_inputs
from pipeline import artifacts
from pipeline.config import Config, config_from_dict, set_dotted
from pipeline.constants import CLASS_NAMES, NUM_CLASSES
from pipeline.data.images import encode_label
from pipeline.data.loader import read_units
from pipeline.data.preprocess import (
    encode_options,
    list_split,
    plan_shards,
    process_shard,
    split_manifest,
    split_specs,
)
from pipeline.data.shards import LABEL_ROW_SCHEMA, Manifest, read_rows, sha256_of, shard_paths
from pipeline.data.transforms import image_to_tensor
from pipeline.distributed.worker_api import run_in_process
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.prediction import predict
from pipeline.evaluation.scoring import ShardEvaluation, evaluate_shard
from pipeline.label_shard import ShardJob, label_shard
from pipeline.models.configured import build_model
from pipeline.models.inference import class_probabilities
from pipeline.models.pretrained import write_checkpoint
from pipeline.pseudo_labels.diagnostics import summarise_label_counts
from pipeline.pseudo_labels.dynamic import PrototypeMemory
from pipeline.synthetic.jobs import render_job, render_jobs
from pipeline.training.acceleration import autocast, full_precision, input_batch, prepare_for_speed
from pipeline.training.adapt import AdaptJob, SweepTrial, TwoDomains, adapt_worker, objective_weights
from pipeline.training.adaptation_losses import ROWS, dass_objective
from pipeline.training.holdout import split_holdout
from pipeline.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "presets" / "paper-gta5.yaml"
PRECISIONS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16 + channels_last": ("bf16", True)}
STEP_ROWS = ("base", "dass")
MB = 2**20
IN_PROCESS = "in process: one rank, its own process group (NCCL on a GPU), no Ray"
CPU_NOTE = "not meaningful on a CPU: timings and memory say nothing about a GPU"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each part runs: the GPU run and the CPU `--quick` run differ only here."""

    source: tuple[int, int]  # rendered and preprocessed source size
    target: tuple[int, int]  # rendered target size (preprocessed to half, labels of val kept full)
    crop: tuple[int, int]
    source_images: int
    target_train_images: int
    target_val_images: int
    adapt_steps: int
    repeat_steps: int
    timing_warmup: int
    timing_repeats: int
    inference_passes: int  # passes over target val for the inference figures
    tiny_model: bool  # ResNet-18 at width 0.25 instead of ResNet-101


GPU_SIZES = Sizes((720, 1280), (1024, 2048), (512, 1024), 64, 64, 100, 50, 20, 3, 10, 2, False)
QUICK_SIZES = Sizes((64, 128), (64, 128), (48, 96), 8, 8, 4, 4, 2, 1, 2, 1, True)


# ------------------------------------------------------------------------------------------ config


def check_config(project: Path, sizes: Sizes, device: torch.device) -> Config:
    """params.yaml with the paper preset, the embedded benchmark at `sizes` under `project`, tracking off."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in yaml.safe_load(PRESET.read_text()).items():
        set_dotted(raw, dotted, value)
    (src_h, src_w), (tgt_h, tgt_w), (crop_h, crop_w) = sizes.source, sizes.target, sizes.crop
    overrides = {
        "data.synthetic.enabled": True, "data.synthetic.root": str(project / "data" / "raw"),
        "data.synthetic.samples_per_task": 4,
        "data.synthetic.gta5": {"count": sizes.source_images, "height": src_h, "width": src_w},
        "data.synthetic.synthia": {"count": 1, "height": 32, "width": 64},  # not the source here
        "data.synthetic.cityscapes.train_count": sizes.target_train_images,
        "data.synthetic.cityscapes.val_count": sizes.target_val_images,
        "data.synthetic.cityscapes.height": tgt_h, "data.synthetic.cityscapes.width": tgt_w,
        "preprocess.source_size": {"height": src_h, "width": src_w},
        "preprocess.target_size": {"height": max(32, tgt_h // 2), "width": max(32, tgt_w // 2)},
        "preprocess.rows_per_shard": 16, "preprocess.rows_per_row_group": 2,
        "model.pretrained": None, "train.batch_size": 1, "train.crop": {"height": crop_h, "width": crop_w},
        "train.loader_workers": 0 if device.type == "cpu" else 2, "train.log_every": 10,
        "train.checkpoint_every": max(1, sizes.adapt_steps // 2), "adapt.steps": sizes.adapt_steps,
        "adapt.rounds": 1, "distributed.num_workers": 1, "distributed.use_gpu": device.type == "cuda",
        "distributed.cpus_per_worker": 4 if device.type == "cuda" else 1, "tracking.enabled": False,
        "sweep.holdout_fraction": 0.25, "sweep.eval_every": max(1, sizes.adapt_steps // 2),
        "name": "gpu_check",
    }  # fmt: skip
    if sizes.tiny_model:
        overrides |= {"model.depth": 18, "model.width": 0.25, "model.stride_in_1x1": False}
    for dotted, value in overrides.items():
        set_dotted(raw, dotted, value)
    return config_from_dict(raw, project_root=project, source="gpu_check")


# ------------------------------------------------------------------------------------ environment


def installed(name: str) -> bool:
    """Whether `import name` would work (False for a module blocked by a None entry in sys.modules)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device), "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
        "installed": {name: installed(name) for name in ("ray", "mlflow", "dvc", "pydantic")},
    }  # fmt: skip
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
        info |= {"name": torch.cuda.get_device_name(device), "nccl": nccl,
                 "capability": list(torch.cuda.get_device_capability(device)),
                 "free_gb": round(free / 2**30, 1), "total_gb": round(total / 2**30, 1)}  # fmt: skip
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=30).stdout.strip()  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            driver = "unknown"
        info["driver"] = driver or "unknown"
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


# ----------------------------------------------------------------------------------------- steps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class AdaptationStep:
    """One adaptation step as the worker takes it (autocast forward, float32 objective, SGD), on a fixed
    batch of `images` per domain."""

    def __init__(self, config: Config, row: str, precision: str, channels_last: bool, images: int,
                 device: torch.device, segmentor: torch.nn.Module) -> None:  # fmt: skip
        self.train = dataclasses.replace(config.train, precision=precision, channels_last=channels_last)
        self.row, self.device = ROWS[row], device
        self.model = TwoDomains(prepare_for_speed(copy.deepcopy(segmentor), self.train)).to(device).train()
        self.optimizer = build_optimizer(
            self.model, dataclasses.replace(config.train.optim, lr=config.adapt.lr)
        )
        self.memory = PrototypeMemory(NUM_CLASSES, segmentor.embedding_dim, config.adapt.ema_momentum,
                                      device=device, init=config.adapt.memory_init)  # fmt: skip
        self.weights = objective_weights(config)
        self.inputs = make_inputs(
            images, config.train.crop.as_tuple(), device
        )  # random images, blocky labels

    def __call__(self) -> float:
        with autocast(self.train, self.device):
            outputs = self.model(
                input_batch(self.inputs.source_images, self.train),
                input_batch(self.inputs.target_images, self.train),
            )
        source, target = (full_precision(output) for output in outputs)
        outcome = dass_objective(source.logits, source.embedding, self.inputs.source_labels, target.logits,
                                 target.embedding, self.inputs.static_labels, self.memory, self.row,
                                 self.weights)  # fmt: skip
        total = sum(outcome.losses.values())
        value = float(total.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss in the {self.train.precision} step: {value}")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return value


def time_step(step: Callable[[], float], device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        step()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) / MB if device.type == "cuda" else None
    return {"median_s": float(np.median(seconds)), "peak_mb": peak}


def step_throughput(config: Config, sizes: Sizes, device: torch.device) -> dict[str, Any]:
    segmentor = build_model(config)
    figures: dict[str, Any] = {}
    for name, (precision, channels_last) in PRECISIONS.items():
        for row in STEP_ROWS:
            step = AdaptationStep(config, row, precision, channels_last, 1, device, segmentor)
            timing = time_step(step, device, sizes.timing_warmup, sizes.timing_repeats)
            figures[f"{name} {row}"] = timing | {"images_per_s": 2 / timing["median_s"]}
            del step
            if device.type == "cuda":
                torch.cuda.empty_cache()
        figures[f"{name} dass/base"] = (
            figures[f"{name} dass"]["median_s"] / figures[f"{name} base"]["median_s"]
        )
    return figures


# ------------------------------------------------------------------------------------------- data


def prepare_data(config: Config, pool: multiprocessing.pool.Pool) -> str:
    render_benchmark(config, pool)
    preprocess_benchmark(config, pool)
    ground_truth_labels(config)
    return "rendered and sharded"


def render_benchmark(config: Config, pool: multiprocessing.pool.Pool) -> None:
    root = config.resolve(config.data.synthetic.root)
    root.mkdir(parents=True, exist_ok=True)
    pool.map(render_job, render_jobs(config, root))


def preprocess_benchmark(config: Config, pool: multiprocessing.pool.Pool) -> None:
    """The preprocess stage's work without Ray: the same shard tasks in a process pool."""
    options = encode_options(config)
    for spec in split_specs(config):
        folder = config.shards_root / spec.name
        folder.mkdir(parents=True, exist_ok=True)
        tasks = plan_shards(spec, list_split(spec), folder, config.preprocess.rows_per_shard, options)
        split_manifest(spec, pool.map(process_shard, tasks)).write(folder)


def ground_truth_labels(config: Config) -> None:
    """data/shards/pseudo_static from target train's own labels (the adaptation's static labels here)."""
    source, output = config.shards_root / artifacts.TARGET_TRAIN, config.shards_root / artifacts.PSEUDO_STATIC
    output.mkdir(parents=True, exist_ok=True)
    manifest, entries = Manifest.read(source), []
    for shard in shard_paths(source, manifest):
        rows = [{"id": row.id, "label": encode_label(row.label)} for row in read_rows(shard, image=False)]
        group = pq.ParquetFile(shard).metadata.row_group(0).num_rows
        pq.write_table(
            pa.Table.from_pylist(rows, schema=LABEL_ROW_SCHEMA), output / shard.name, row_group_size=group
        )
        entries.append({"file": shard.name, "rows": len(rows), "sha256": sha256_of(output / shard.name)})
    Manifest(artifacts.PSEUDO_STATIC, manifest.dataset, "target", manifest.rows, entries, {},
             manifest.image_size).write(output)  # fmt: skip


# ------------------------------------------------------------------------------------ adaptation


def adaptation_run(config: Config, device: torch.device, folder: Path, steps: int) -> dict[str, Any]:
    """The `dass` worker for `steps` steps as a sweep trial (held-out scoring all-reduced); its session."""
    config = dataclasses.replace(config, adapt=dataclasses.replace(config.adapt, steps=steps))
    split = split_holdout(
        read_units(config.shards_root / artifacts.TARGET_TRAIN), config.sweep.holdout_fraction
    )
    trial = SweepTrial("gpu_check", None, split.train, split.holdout, config.sweep.eval_every, "pseudo", {})
    job = AdaptJob(config, "dass", 0, trial=trial)
    started = time.perf_counter()
    session = run_in_process(adapt_worker, {"job": job}, device, folder)
    seconds = time.perf_counter() - started
    losses = [value for report in session.reports for key, value in report.items() if key.startswith("loss")]
    holdout = [report for report in session.reports if "holdout.miou" in report]
    return {"session": session, "seconds": seconds, "losses": losses, "holdout": holdout, "steps": steps}


def read_back(config: Config, state_file: Path, device: torch.device) -> dict[str, Any]:
    """The final checkpoint on the GPU: model and prototype memory loaded there, one more dass step."""
    state = torch.load(state_file, map_location=device, weights_only=True)
    segmentor = build_model(config)
    segmentor.load_state_dict(state["model"])
    step = AdaptationStep(config, "dass", "fp32", False, 1, device, segmentor)
    step.memory.load_state_dict(state["memory"])
    memory = step.memory.state_dict()
    devices = {str(tensor.device) for tensor in memory.values()}
    loss = step()
    return {
        "step": int(state["step"]),
        "memory_devices": sorted(devices),
        "loss_after_reload": loss,
        "classes_seen": {
            domain: int((memory[f"seen_{domain}"] > 0).sum()) for domain in ("source", "target")
        },
    }


# ------------------------------------------------------------------------------------- inference


def inference_speed(
    config: Config, state: dict[str, Any], device: torch.device, passes: int
) -> dict[str, Any]:
    model = build_model(config)
    model.load_state_dict(state)
    model = model.to(device).eval()
    folder = config.shards_root / artifacts.TARGET_VAL
    rows = [row for shard in shard_paths(folder) for row in read_rows(shard)]
    figures = {}
    with torch.no_grad():
        for name in ("evaluate", "cbst_label"):
            synchronize(device)
            started = time.perf_counter()
            for _ in range(passes):
                for row in rows:
                    if name == "evaluate":
                        predict(model, row.image, tuple(row.label.shape))
                    else:
                        tensor = image_to_tensor(row.image)[None].to(device)
                        class_probabilities(model, tensor, [tuple(tensor.shape[-2:])], config.cbst.scales,
                                            config.cbst.flip)  # fmt: skip
            synchronize(device)
            figures[f"{name}_images_per_s"] = passes * len(rows) / (time.perf_counter() - started)
    figures |= {"images": passes * len(rows), "label_size": list(rows[0].label.shape),
                "cbst_views": len(config.cbst.scales) * (2 if config.cbst.flip else 1)}  # fmt: skip
    return figures


def stage_inference(
    config: Config, state: dict[str, Any], device: torch.device, folder: Path
) -> dict[str, Any]:
    """The `pseudo_label` stage's two CBST passes over target train and the `evaluate` stage's scoring of
    target val, each shard through the function its Ray task runs, on `device`, `inference.batch_size`
    images per pass (what a task on a GPU runs); images/s of each, label density and mIoU."""
    model_file = folder / "model.pt"
    folder.mkdir(parents=True, exist_ok=True)
    write_checkpoint(state, model_file)
    batch, threads = config.inference.batch_size, torch.get_num_threads()
    try:
        shards = shard_paths(config.shards_root / artifacts.TARGET_TRAIN)
        synchronize(device)
        started = time.perf_counter()
        first = [label_shard(ShardJob(config, str(model_file), str(shard), None, None), device, batch)
                 for shard in shards]  # fmt: skip
        histogram = first[0]["histogram"]
        for result in first[1:]:
            histogram.merge(result["histogram"])
        thresholds = histogram.thresholds(config.cbst.portion).tolist()
        (folder / "labels").mkdir(exist_ok=True)
        second = [label_shard(ShardJob(config, str(model_file), str(shard), thresholds,
                                       str(folder / "labels" / shard.name)), device, batch)
                  for shard in shards]  # fmt: skip
        synchronize(device)
        labelling_s = time.perf_counter() - started
        labelled = sum(result["rows"] for result in second)
        quality = summarise_label_counts(np.sum([r["quality"] for r in second], axis=0).tolist(), CLASS_NAMES)
        val = config.shards_root / artifacts.TARGET_VAL
        started = time.perf_counter()
        scored = [evaluate_shard(ShardEvaluation(config, str(model_file), str(shard), 0), device, batch)
                  for shard in shard_paths(val)]  # fmt: skip
        synchronize(device)
        evaluation_s = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)  # each task sets one thread, as Ray tasks run
    matrix = ConfusionMatrix.merge_all(ConfusionMatrix.from_dict(result["matrix"]) for result in scored)
    return {"batch_size": batch, "labelled_images": labelled,
            "labelling_images_per_s": labelled / labelling_s, "label_density": quality["density"],
            "evaluated_images": Manifest.read(val).rows,
            "evaluation_images_per_s": Manifest.read(val).rows / evaluation_s,
            "miou": matrix.miou()}  # fmt: skip


# ------------------------------------------------------------------------------------------- fit


def largest_batch(config: Config, device: torch.device, segmentor: torch.nn.Module) -> dict[str, Any]:
    """Images per domain of a bf16 dass step at the paper crop: doubled until out of memory."""
    fits, tried = 0, []
    images = 1
    while images <= 64:
        try:
            step = AdaptationStep(config, "dass", "bf16", True, images, device, segmentor)
            step()
            step()
            peak = torch.cuda.max_memory_allocated(device) / MB
            tried.append({"images_per_domain": images, "peak_mb": peak})
            fits = images
            del step
        except torch.cuda.OutOfMemoryError:
            tried.append({"images_per_domain": images, "out_of_memory": True})
            break
        finally:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        images *= 2
    return {"largest_images_per_domain": fits, "tried": tried}


# ------------------------------------------------------------------------------------------- main


def part(name: str, results: dict[str, Any], function: Callable[[], Any]) -> None:
    """Run one part; a failure is recorded (with its message) and the other parts still run."""
    started = time.perf_counter()
    try:
        results[name] = function()
        status = "ok"
    except Exception as error:  # one part's failure must not hide the others' figures
        results[name] = {"error": f"{type(error).__name__}: {error}"}
        status = f"FAILED: {type(error).__name__}: {error}"
    results.setdefault("seconds", {})[name] = round(time.perf_counter() - started, 1)
    print(f"[gpu_check] {name}: {status} ({results['seconds'][name]} s)", flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device if args.device != "cuda" else "cuda:0")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; use --device cpu --quick for the CPU check")
    sizes = QUICK_SIZES if args.quick else GPU_SIZES
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick,
                               "in_process": not installed("ray"),
                               "not_meaningful": CPU_NOTE if device.type == "cpu" else None}  # fmt: skip
    project = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    try:
        config = check_config(project, sizes, device)
        results["model"] = (
            f"ResNet-{config.model.depth} width {config.model.width}, output stride "
            f"{config.model.output_stride}, frozen BN {config.model.frozen_bn}, random init"
        )
        # The data first: its process pool forks before torch starts threads or CUDA.
        context = multiprocessing.get_context("fork")
        with context.Pool(min(16, os.cpu_count() or 1)) as pool:
            part("data", results, lambda: prepare_data(config, pool))
        part("environment", results, lambda: environment(device))
        part("steps", results, lambda: step_throughput(config, sizes, device))
        # The adaptation's start (models/pseudo_labeller.pt), as the pseudo_label stage would leave it.
        config.resolve(artifacts.LABELLER_MODEL).parent.mkdir(parents=True, exist_ok=True)
        write_checkpoint(build_model(config).state_dict(), config.resolve(artifacts.LABELLER_MODEL))
        runs: dict[str, Any] = {}

        def adaptation() -> dict[str, Any]:
            runs["main"] = adaptation_run(config, device, project / "run_main", sizes.adapt_steps)
            outcome = runs["main"]
            last = outcome["session"].checkpoints[-1] / "state.pt"
            return {"steps": outcome["steps"], "seconds": round(outcome["seconds"], 2),
                    "images_per_s": 2 * outcome["steps"] / outcome["seconds"],
                    "losses_finite": all(math.isfinite(value) for value in outcome["losses"]),
                    "reports": len(outcome["session"].reports), "holdout": outcome["holdout"],
                    "checkpoints": len(outcome["session"].checkpoints),
                    "read_back": read_back(config, last, device),
                    "mode": IN_PROCESS}  # fmt: skip

        part("adaptation", results, adaptation)

        def inference() -> dict[str, Any]:
            state = torch.load(runs["main"]["session"].checkpoints[-1] / "state.pt", map_location="cpu",
                               weights_only=True)["model"]  # fmt: skip
            return inference_speed(config, state, device, sizes.inference_passes)

        part("inference", results, inference)

        def stage_inference_part() -> dict[str, Any]:
            state = torch.load(runs["main"]["session"].checkpoints[-1] / "state.pt", map_location="cpu",
                               weights_only=True)["model"]  # fmt: skip
            return stage_inference(config, state, device, project / "stage_inference")

        part("stage_inference", results, stage_inference_part)

        def repeatability() -> dict[str, Any]:
            finals = []
            for attempt in range(2):
                outcome = adaptation_run(config, device, project / f"run_repeat{attempt}", sizes.repeat_steps)
                state = torch.load(outcome["session"].checkpoints[-1] / "state.pt", map_location="cpu",
                                   weights_only=True)["model"]  # fmt: skip
                finals.append(state)
            difference = max(float((finals[0][key].double() - finals[1][key].double()).abs().max())
                             for key in finals[0] if finals[0][key].is_floating_point())  # fmt: skip
            return {"steps": sizes.repeat_steps, "largest_weight_difference": difference}

        part("repeatability", results, repeatability)
        if device.type == "cuda":
            part("fit", results, lambda: largest_batch(config, device, build_model(config)))
        else:
            results["fit"] = {"skipped": CPU_NOTE}
    finally:
        shutil.rmtree(project, ignore_errors=True)
    print_summary(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def print_summary(results: dict[str, Any]) -> None:
    environment_info = results.get("environment", {})
    print(f"\ngpu_check on {environment_info.get('name', '?')} ({environment_info.get('device', '?')}), "
          f"torch {environment_info.get('torch')}, CUDA {environment_info.get('cuda')}, "
          f"NCCL {environment_info.get('nccl', '—')}; model: {results.get('model')}")  # fmt: skip
    steps = results.get("steps", {})
    for name in PRECISIONS:
        if f"{name} base" in steps:
            base, dass = steps[f"{name} base"], steps[f"{name} dass"]
            ratio = steps[f"{name} dass/base"]
            peak = "—" if dass["peak_mb"] is None else f"{dass['peak_mb']:.0f} MB"
            print(f"  step {name:22s} base {base['images_per_s']:7.2f} img/s  "
                  f"dass {dass['images_per_s']:7.2f} img/s  dass/base {ratio:.2f}  "
                  f"peak {peak}")  # fmt: skip
    adaptation = results.get("adaptation", {})
    if "images_per_s" in adaptation:
        devices = adaptation["read_back"]["memory_devices"]
        print(f"  adaptation: {adaptation['steps']} steps, {adaptation['images_per_s']:.2f} img/s, "
              f"losses finite {adaptation['losses_finite']}, read back on {devices}")  # fmt: skip
    inference = results.get("inference", {})
    if "evaluate_images_per_s" in inference:
        print(f"  inference: evaluate {inference['evaluate_images_per_s']:.2f} img/s, CBST labelling "
              f"{inference['cbst_label_images_per_s']:.2f} img/s "
              f"({inference['cbst_views']} views)")  # fmt: skip
    stages = results.get("stage_inference", {})
    if "labelling_images_per_s" in stages:
        print(f"  stage inference ({stages['batch_size']} images per pass): CBST labelling "
              f"{stages['labelling_images_per_s']:.2f} img/s (both passes), evaluate "
              f"{stages['evaluation_images_per_s']:.2f} img/s, label density {stages['label_density']}, "
              f"mIoU {stages['miou']:.2f}")  # fmt: skip
    if "largest_weight_difference" in results.get("repeatability", {}):
        print(
            f"  repeatability: largest weight difference "
            f"{results['repeatability']['largest_weight_difference']:.3g}"
        )
    if "largest_images_per_domain" in results.get("fit", {}):
        print(f"  fit: {results['fit']['largest_images_per_domain']} images per domain in bf16")
    if results.get("not_meaningful"):
        print(f"  note: {results['not_meaningful']}")
    failed = [name for name, value in results.items() if isinstance(value, dict) and "error" in value]
    if failed:
        print(f"  FAILED parts: {', '.join(failed)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes (the CPU check in the test suite)")
    return parser


def main(argv: list[str] | None = None) -> int:
    results = run(build_parser().parse_args(argv))
    return 1 if any(isinstance(value, dict) and "error" in value for value in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
