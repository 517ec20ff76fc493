"""Supervised training on one labelled split: the source-only warmup and the target oracle.

`supervised_worker` runs inside every Ray Train worker; `train_supervised` is the driver side.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import Config
from pipeline.data.loader import ReadUnit, ShardStream, make_loader, read_units, training_transform
from pipeline.data.transforms import AugmentConfig
from pipeline.distributed.train import (
    WorkerContext,
    checkpoint_state,
    fit,
    load_latest_state,
    prepare_model,
    report,
    unwrap,
    wait_until_checkpoint_registered,
    worker_context,
)
from pipeline.losses.segmentation import segmentation_cross_entropy
from pipeline.models.configured import build_model
from pipeline.models.pretrained import PROJECTION_PREFIX, TARGET_STEM_PREFIX, write_checkpoint
from pipeline.tracking.mlflow_run import Tracker
from pipeline.training.acceleration import (
    autocast,
    full_precision,
    input_batch,
    peak_memory,
    prepare_for_speed,
)
from pipeline.training.loop import LoopHooks, ProgressLine, train
from pipeline.training.optim import build_optimizer


@dataclass(frozen=True)
class SupervisedJob:
    """What one supervised run needs inside its workers (pickled by Ray)."""

    config: Config
    model_name: str  # source_only | oracle
    split: str  # shards folder name: source | target_train
    domain: str  # source | target (routes images through the target stem when the model has one)
    stage: str


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def augment_config(config: Config) -> AugmentConfig:
    train = config.train
    return AugmentConfig((train.crop.height, train.crop.width), tuple(train.scale_range[:2]), train.flip)


def batches(
    config: Config,
    split: str,
    context: WorkerContext,
    seed: int,
    label_split: str | None = None,
    with_truth: bool = False,
    skip_batches: int = 0,
    units: list[ReadUnit] | None = None,
):
    """Endless iterator of this worker's training batches of one split.

    `label_split` takes the labels from a mirror of the split (the pseudo labels); `with_truth` also
    yields the split's own labels as "truth" (diagnostics only). `skip_batches` replays and drops the
    first batches, so a run restarted at step k sees exactly the batches an uninterrupted run would.
    `units` restricts the split to some of its row groups (a sweep leaves its held-out slice out).
    """
    if units is None:
        units = read_units(config.shards_root / split)
    stream = ShardStream(
        units,
        rank=context.rank,
        world_size=context.world_size,
        seed=seed,
        transform=training_transform(augment_config(config)),
        label_folder=config.shards_root / label_split if label_split else None,
        with_truth=with_truth,
    )
    per_worker = config.train.batch_size // context.world_size
    iterator = iter(make_loader(stream, batch_size=per_worker, num_workers=config.train.loader_workers))
    # Replaying (decode and augment, then drop) costs a few ms per image once per restart, and keeps
    # the order and the augmentation draws identical to an uninterrupted run.
    for _ in range(skip_batches):
        next(iterator)
    return iterator


def run_name(config: Config, model_name: str, seed: int | None = None) -> str:
    return f"{config.name}_{model_name}_seed{config.seed if seed is None else seed}"


def crash_once_after(crash: dict[str, Any] | None, step: int) -> None:
    """Fault injection for the restart tests: the process dies after checkpoint `step`, once.

    `crash` = {"step": k, "marker": path}; the marker file makes it happen only the first time. Ray
    Train registers a reported checkpoint asynchronously: a worker that exits at once can take the
    checkpoint with it (seen here: the run then restarted from step 0). So the worker dies only once
    the controller has registered it: the failure the tests mean, a crash after a saved checkpoint.
    The worker's process group dies (Ray gives each worker its own): its data-loader processes with
    it, which would otherwise hold its connection to the raylet open until torch's watchdog ends them
    (5 s), and Ray would see the death that much later.
    """
    if crash and step == crash["step"] and not Path(crash["marker"]).exists():
        Path(crash["marker"]).write_text(f"crashed after step {step}\n")
        wait_until_checkpoint_registered(step)
        os.killpg(os.getpgid(0), signal.SIGKILL)


def supervised_worker(loop_config: dict[str, Any]) -> None:
    job: SupervisedJob = loop_config["job"]
    config = job.config
    context = worker_context(config.distributed.cpus_per_worker)
    seed_everything(config.seed + context.rank)
    model = build_model(config, per_domain=False)
    state = load_latest_state()
    start_step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        start_step = int(state["step"])
    model = prepare_for_speed(model, config.train)
    model = prepare_model(model, some_parameters_unused=model.has_target_stem or model.projection is not None)
    optimizer = build_optimizer(model, config.train.optim)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    data = batches(config, job.split, context, seed=config.seed, skip_batches=start_step)
    tracker = Tracker(config, "stages", run_name(config, job.model_name), job.stage, active=context.is_main,
                      extra_params={"run.model": job.model_name, "run.split": job.split},
                      run_id=(state or {}).get("mlflow_run_id") or None)  # fmt: skip
    if state is not None:
        tracker.log_metrics({"restarted_from_step": start_step}, start_step)

    def step_losses(step: int) -> dict[str, torch.Tensor]:
        batch = next(data)
        images = batch["image"].to(context.device, non_blocking=True)
        labels = batch["label"].to(context.device, non_blocking=True)
        with autocast(config.train, context.device):
            output = model(input_batch(images, config.train), domain=job.domain)
        return {"ce": segmentation_cross_entropy(full_precision(output).logits, labels)}

    def save(step: int, metrics: dict[str, float]) -> None:
        state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "mlflow_run_id": tracker.run_id or "",
                 "peak_memory": peak_memory(context.device)}  # fmt: skip
        report({"step": step, **metrics}, state, context)
        crash_once_after(loop_config.get("crash_once"), step)

    progress = ProgressLine(f"{job.model_name}", config.warmup.steps, start_step, context.is_main)

    def log(step: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(metrics, step)
        progress.show(step, metrics)

    hooks = LoopHooks(
        log=log,
        checkpoint=save,
        log_every=config.train.log_every,
        checkpoint_every=config.train.checkpoint_every,
    )
    model.train()
    try:
        result = train(
            step_losses, optimizer, config.warmup.steps, config.train.optim.poly_power, start_step, hooks
        )
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.log_metrics({"train_seconds": result.seconds, **peak_memory(context.device)})
    tracker.finish()


def untrained_prefixes(domain: str) -> tuple[str, ...]:
    """State-dict prefixes a supervised run on `domain` images never trains, left out of its model file.

    The projection head is trained by the contrast only: without it the warmup model does not depend on
    model.embedding, so switching the embedding reuses it. The target stem sees target images only: a
    source-only model without it loads with the target stem copied from its trained source stem
    (`load_segmentor_state`), the start the adaptation expects; written as it was, it would keep its
    untrained initialisation, and pseudo labels and target evaluation would run through it (seen here:
    source-only 2.2 mIoU, CBST labels 13 % accurate with model.target_stem: true).
    """
    return (PROJECTION_PREFIX, TARGET_STEM_PREFIX) if domain == "source" else (PROJECTION_PREFIX,)


def train_supervised(
    job: SupervisedJob, output: Path, crash_once: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run a supervised job on Ray Train and write its final model state dict to `output`."""
    config = job.config
    # A fresh Ray run name per execution: reusing a name would resume the previous run's checkpoint.
    name = f"{run_name(config, job.model_name)}_{job.stage}_{time.strftime('%Y%m%d-%H%M%S')}"
    result = fit(supervised_worker, {"job": job, "crash_once": crash_once}, config, run_name=name)
    state = checkpoint_state(result)
    output.parent.mkdir(parents=True, exist_ok=True)
    weights = {key: value for key, value in state["model"].items()
               if not key.startswith(untrained_prefixes(job.domain))}  # fmt: skip
    write_checkpoint(weights, output)
    return {
        "steps": int(state["step"]),
        **{k: v for k, v in result.metrics.items() if isinstance(v, int | float)},
        **state.get("peak_memory", {}),  # rank 0's worker process, at the last checkpoint
    }
