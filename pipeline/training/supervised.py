"""Supervised training on one labelled split: the source-only warmup and the target oracle.

`supervised_worker` runs inside every Ray Train worker (on the skeleton of training/worker.py);
`train_supervised` is the driver side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.config import Config
from pipeline.distributed.train import checkpoint_state, fit
from pipeline.distributed.worker_api import prepare_model, unwrap, worker_context
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
from pipeline.training.optim import build_optimizer
from pipeline.training.worker import WorkerRun, batches, resume, run_worker, seed_everything


@dataclass(frozen=True)
class SupervisedJob:
    """What one supervised run needs inside its workers (pickled by Ray)."""

    config: Config
    model_name: str  # source_only | oracle
    split: str  # shards folder name: source | target_train
    domain: str  # source | target (routes images through the target stem when the model has one)
    stage: str


def run_name(config: Config, model_name: str, seed: int | None = None) -> str:
    return f"{config.name}_{model_name}_seed{config.seed if seed is None else seed}"


def supervised_worker(loop_config: dict[str, Any]) -> None:
    job: SupervisedJob = loop_config["job"]
    config = job.config
    context = worker_context(config.distributed.cpus_per_worker)
    seed_everything(config.seed + context.rank)
    model = build_model(config, per_domain=False)
    state, start_step = resume()
    if state is not None:
        model.load_state_dict(state["model"])
    model = prepare_for_speed(model, config.train)
    model = prepare_model(model, some_parameters_unused=model.has_target_stem or model.projection is not None)
    optimizer = build_optimizer(model, config.train.optim)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    data = batches(config, job.split, context, seed=config.seed, skip_batches=start_step)
    tracker = Tracker(config, "stages", run_name(config, job.model_name), job.stage, active=context.is_main,
                      extra_params={"run.model": job.model_name, "run.split": job.split},
                      run_id=(state or {}).get("mlflow_run_id") or None)  # fmt: skip

    def step_losses(step: int) -> dict[str, torch.Tensor]:
        batch = next(data)
        images = batch["image"].to(context.device, non_blocking=True)
        labels = batch["label"].to(context.device, non_blocking=True)
        with autocast(config.train, context.device):
            output = model(input_batch(images, config.train), domain=job.domain)
        return {"ce": segmentation_cross_entropy(full_precision(output).logits, labels)}

    def checkpoint_state(step: int) -> dict[str, Any]:
        return {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "mlflow_run_id": tracker.run_id or "",
                "peak_memory": peak_memory(context.device)}  # fmt: skip

    run = WorkerRun(job.model_name, config.warmup.steps, step_losses, checkpoint_state, config.train)
    model.train()
    result = run_worker(run, optimizer, tracker, context, start_step, loop_config.get("crash_once"))
    tracker.log_metrics({"train_seconds": result.seconds, **peak_memory(context.device)})
    tracker.finish()


def trained_weights(state: dict[str, Any], domain: str) -> dict[str, torch.Tensor]:
    """The model file's content: a final checkpoint's weights without those the run never trained."""
    untrained = untrained_prefixes(domain)
    return {key: value for key, value in state["model"].items() if not key.startswith(untrained)}


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
    write_checkpoint(trained_weights(state, job.domain), output)
    return {
        "steps": int(state["step"]),
        **{k: v for k, v in result.metrics.items() if isinstance(v, int | float)},
        **state.get("peak_memory", {}),  # rank 0's worker process, at the last checkpoint
    }
