"""The skeleton every Ray Train worker shares (warmup and oracle: training/supervised.py; adaptation and
sweep trials: training/adapt.py): seeding, this worker's batches, resuming, and the loop with its
logging, checkpoints and failure handling. A worker builds its model and step; `run_worker` runs it.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import Config, TrainConfig
from pipeline.data.loader import ReadUnit, ShardStream, make_loader, read_units, training_transform
from pipeline.data.transforms import AugmentConfig
from pipeline.distributed.worker_api import (
    WorkerContext,
    load_latest_state,
    report,
    wait_until_checkpoint_registered,
)
from pipeline.tracking.mlflow_run import Tracker
from pipeline.training.loop import LoopHooks, LoopResult, ProgressLine, StepFunction, train


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


def resume() -> tuple[dict[str, Any] | None, int]:
    """This run's own latest checkpoint (after a worker failure; None on a fresh start) and its step."""
    state = load_latest_state()
    return state, int(state["step"]) if state is not None else 0


@dataclass
class WorkerRun:
    """What differs between workers; `run_worker` does the rest the same way for all of them."""

    title: str  # the progress line's name
    steps: int
    step_losses: StepFunction
    checkpoint_state: Callable[[int], dict[str, Any]]  # what a checkpoint after a step holds
    train: TrainConfig  # log_every, checkpoint_every, the lr schedule's power
    checkpoint_every: int | None = None  # instead of train.checkpoint_every (sweep trials: sweep.eval_every)
    step_offset: int = 0  # MLflow step of step 0 (CRST rounds run on)
    log_extra: Callable[[], dict[str, float]] = dict  # more metrics at each log step
    progress_extra: tuple[str, ...] = field(default_factory=tuple)  # of those, what the progress line shows
    checkpoint_scores: Callable[[int], dict[str, float]] | None = None  # logged at each checkpoint


def run_worker(
    run: WorkerRun,
    optimizer: torch.optim.Optimizer,
    tracker: Tracker,
    context: WorkerContext,
    start_step: int,
    crash_once: dict[str, Any] | None = None,
) -> LoopResult:
    """The training loop with this worker's logging (MLflow, progress line) and checkpoints (Ray Train);
    a failure marks the MLflow run FAILED and propagates (Ray Train restarts or stops the run)."""
    if start_step:
        tracker.log_metrics({"restarted_from_step": start_step}, run.step_offset + start_step)
    progress = ProgressLine(run.title, run.steps, start_step, context.is_main)

    def log(step: int, metrics: dict[str, float]) -> None:
        extra = run.log_extra()
        tracker.log_metrics(metrics | extra, run.step_offset + step)
        progress.show(step, metrics | {key: extra.get(key, 0.0) for key in run.progress_extra})

    def save(step: int, metrics: dict[str, float]) -> None:
        if run.checkpoint_scores is not None:
            scores = run.checkpoint_scores(step)
            tracker.log_metrics(scores, step)
            metrics = metrics | scores
        report({"step": step, **metrics}, run.checkpoint_state(step), context)
        crash_once_after(crash_once, step)

    hooks = LoopHooks(log=log, checkpoint=save, log_every=run.train.log_every,
                      checkpoint_every=run.checkpoint_every or run.train.checkpoint_every)  # fmt: skip
    try:
        return train(run.step_losses, optimizer, run.steps, run.train.optim.poly_power, start_step, hooks)
    except BaseException:
        tracker.finish("FAILED")
        raise
