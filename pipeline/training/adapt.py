"""The `adapt` stage: one DASS ablation cell (row × seed) on Ray Train, from models/warmup.pt.

Each step takes a source batch (ground truth) and a target batch (static CBST labels; target ground
truth rides along only for the Table-4 diagnostics), runs both through the model in one call, and
minimises the row's objective (`pipeline.training.adaptation_losses`). The prototype memory is part
of the checkpoint, so a restarted worker resumes it exactly.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.atomic import atomic_path, write_json_atomic
from pipeline.config import Config
from pipeline.constants import NUM_CLASSES
from pipeline.distributed.train import (
    checkpoint_state,
    fit,
    load_latest_state,
    prepare_model,
    report,
    unwrap,
    worker_context,
)
from pipeline.models.pretrained import load_segmentor_state
from pipeline.pseudo_labels import density_accuracy
from pipeline.pseudo_labels.dynamic import PrototypeMemory
from pipeline.pseudo_labels.stage import OUTPUT as PSEUDO_SPLIT
from pipeline.tracking.mlflow_run import Tracker
from pipeline.training.adaptation_losses import ROWS, ObjectiveWeights, dass_objective, pseudo_label_counts
from pipeline.training.loop import LoopHooks, ProgressLine, train
from pipeline.training.optim import build_optimizer
from pipeline.training.supervised import batches, build_model, crash_once_after, seed_everything

LABEL_KINDS = ("static", "dynamic_nocal", "dynamic_cal", "hybrid")


def cell_name(row: str, seed: int) -> str:
    return f"{row}_seed{seed}"


def model_path(config: Config, row: str, seed: int) -> Path:
    return config.resolve(f"models/adapt/{cell_name(row, seed)}.pt")


def metrics_path(config: Config, row: str, seed: int) -> Path:
    return config.resolve(f"metrics/adapt/{cell_name(row, seed)}.json")


class TwoDomains(nn.Module):
    """Source and target forward passes in one call, so DDP sees one forward per backward."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, source: torch.Tensor, target: torch.Tensor):
        return self.segmentor(source, domain="source"), self.segmentor(target, domain="target")


@dataclass(frozen=True)
class AdaptJob:
    config: Config
    row: str
    seed: int


def objective_weights(config: Config) -> ObjectiveWeights:
    adapt = config.adapt
    return ObjectiveWeights(adapt.weight_target, adapt.weight_fc, adapt.weight_bc, adapt.tau, adapt.threshold)


def adapt_worker(loop_config: dict[str, Any]) -> None:
    job: AdaptJob = loop_config["job"]
    config, adapt = job.config, job.config.adapt
    context = worker_context(config.distributed.cpus_per_worker)
    seed_everything(job.seed * 1000 + context.rank)
    segmentor = build_model(config)
    load_segmentor_state(segmentor, config.resolve("models/warmup.pt"))
    memory = PrototypeMemory(NUM_CLASSES, segmentor.embedding_dim, adapt.ema_momentum)
    state = load_latest_state()
    start_step = 0
    if state is not None:
        segmentor.load_state_dict(state["model"])
        memory.load_state_dict(state["memory"])
        start_step = int(state["step"])
    model = prepare_model(TwoDomains(segmentor), some_parameters_unused=segmentor.projection is not None)
    optimizer = build_optimizer(model, dataclasses.replace(config.train.optim, lr=adapt.lr))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    memory.to(context.device)
    source = batches(config, "source", context, seed=job.seed * 1000 + start_step)
    target = batches(config, "target_train", context, seed=job.seed * 1000 + start_step + 1,
                     label_split=PSEUDO_SPLIT, with_truth=True)  # fmt: skip
    row, weights = ROWS[job.row], objective_weights(config)
    run = f"{config.name}_{cell_name(job.row, job.seed)}"
    tracker = Tracker(config, "ablation", run, "adapt", active=context.is_main,
                      extra_params={"ablation.row": job.row, "ablation.seed": job.seed})  # fmt: skip
    counts = {kind: torch.zeros(3, dtype=torch.float64) for kind in LABEL_KINDS}
    window = {kind: torch.zeros(3, dtype=torch.float64) for kind in LABEL_KINDS}
    cosines: list[torch.Tensor] = []  # per step: 10/50/90 % quantiles of the best calibrated cosine
    cosine_total = torch.zeros(4, dtype=torch.float64)  # summed quantiles and the number of steps
    if state is not None:  # a restarted worker continues the run's diagnostics too
        counts = {
            kind: torch.tensor(values, dtype=torch.float64) for kind, values in state["label_counts"].items()
        }
        cosine_total = torch.tensor(state["cosine_total"], dtype=torch.float64)

    def step_losses(step: int) -> dict[str, torch.Tensor]:
        source_batch, target_batch = next(source), next(target)
        device = context.device
        source_out, target_out = model(source_batch["image"].to(device), target_batch["image"].to(device))
        static = target_batch["label"].to(device)
        source_labels = source_batch["label"].to(device)
        outcome = dass_objective(
            source_out.logits, source_out.embedding, source_labels,
            target_out.logits, target_out.embedding, static, memory, row, weights,
        )  # fmt: skip
        for kind, values in pseudo_label_counts(outcome, static, target_batch["truth"].to(device)).items():
            counts[kind] += torch.tensor(values, dtype=torch.float64)
            window[kind] += torch.tensor(values, dtype=torch.float64)
        finite = outcome.best_cosine[torch.isfinite(outcome.best_cosine)]
        if finite.numel():
            cosines.append(torch.quantile(finite.float().cpu()[:100_000], torch.tensor([0.1, 0.5, 0.9])))
            cosine_total[:3] += cosines[-1].double()
            cosine_total[3] += 1
        return outcome.losses

    progress = ProgressLine(cell_name(job.row, job.seed), adapt.steps, start_step, context.is_main)

    def log(step: int, metrics: dict[str, float]) -> None:
        quality = {}
        for kind in LABEL_KINDS:
            density, accuracy = density_accuracy(*window[kind].tolist())
            quality |= {f"{kind}.density": density, f"{kind}.accuracy": accuracy}
            window[kind].zero_()
        if cosines:
            quantiles = torch.stack(cosines).mean(0).tolist()
            quality |= {"cosine.p10": quantiles[0], "cosine.p50": quantiles[1], "cosine.p90": quantiles[2]}
            cosines.clear()
        tracker.log_metrics(metrics | quality, step)
        progress.show(step, metrics | {"dynamic_cal.density": quality["dynamic_cal.density"]})

    def save(step: int, metrics: dict[str, float]) -> None:
        state = {"model": unwrap(model).segmentor.state_dict(), "optimizer": optimizer.state_dict(),
                 "memory": memory.state_dict(), "step": step,
                 "label_counts": {kind: value.tolist() for kind, value in counts.items()},
                 "cosine_total": cosine_total.tolist()}  # fmt: skip
        report({"step": step, **metrics}, state, context)
        crash_once_after(loop_config.get("crash_once"), step)

    hooks = LoopHooks(log=log, checkpoint=save, log_every=config.train.log_every,
                      checkpoint_every=config.train.checkpoint_every)  # fmt: skip
    model.train()
    try:
        result = train(step_losses, optimizer, adapt.steps, config.train.optim.poly_power, start_step, hooks)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.log_metrics({"train_seconds": result.seconds})
    tracker.finish()


def adapt(config: Config, row: str, seed: int, crash_once: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one ablation cell; write models/adapt/<row>_seed<seed>.pt and its metrics JSON."""
    if row not in ROWS:
        raise ValueError(f"unknown ablation row {row!r}: expected one of {', '.join(ROWS)}")
    started = time.perf_counter()
    name = f"{config.name}_{cell_name(row, seed)}_adapt_{time.strftime('%Y%m%d-%H%M%S')}"
    result = fit(
        adapt_worker, {"job": AdaptJob(config, row, seed), "crash_once": crash_once}, config, run_name=name
    )
    state = checkpoint_state(result)
    output = model_path(config, row, seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as temporary:
        torch.save(state["model"], temporary)
    labels = {}
    for kind, values in state["label_counts"].items():
        density, accuracy = density_accuracy(*values)
        labels[kind] = {"density": round(density, 2), "accuracy": round(accuracy, 2)}
    quantiles = [q / max(state["cosine_total"][3], 1) for q in state["cosine_total"][:3]]
    cosine = {f"p{p}": round(q, 4) for p, q in zip((10, 50, 90), quantiles, strict=True)}
    summary = {"row": row, "seed": seed, "steps": int(state["step"]), "pseudo_labels": labels,
               "best_cosine_quantiles": cosine,
               "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    metrics_path(config, row, seed).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(metrics_path(config, row, seed), summary)
    return summary
