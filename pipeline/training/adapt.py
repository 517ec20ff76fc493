"""The adaptation worker: what every Ray Train worker of a DASS ablation cell (row × seed) or of a sweep
trial runs, from models/pseudo_labeller.pt (the driver is stages/adapt.py, or stages/sweep.py).

Each step takes a source batch (ground truth) and a target batch (static CBST labels; target ground
truth rides along only for the Table-4 diagnostics), runs both through the model in one call, and
minimises the row's objective (`pipeline.training.adaptation_losses`). The prototype memory is part
of the checkpoint, so a restarted worker resumes it exactly.

With `adapt.rounds` > 1 a cell is CRST-style self-training: each round is a new Ray Train run that
continues from the previous round's model, memory, diagnostics and MLflow run (`AdaptJob.previous_state`)
on the labels its model made (`AdaptJob.label_split`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline import artifacts
from pipeline.config import CbstConfig, Config
from pipeline.constants import CLASS_NAMES, LABEL_KINDS, NUM_CLASSES
from pipeline.data.loader import ReadUnit
from pipeline.distributed.worker_api import (
    WorkerContext,
    prepare_model,
    unwrap,
    worker_context,
)
from pipeline.models.batchnorm import batchnorm_affine_trainable, hold_batchnorm_statistics
from pipeline.models.configured import build_model
from pipeline.models.pretrained import load_segmentor_state
from pipeline.pseudo_labels.diagnostics import summarise_label_counts
from pipeline.pseudo_labels.dynamic import PrototypeMemory
from pipeline.tracking.mlflow_run import Tracker
from pipeline.training.acceleration import (
    autocast,
    full_precision,
    input_batch,
    peak_memory,
    prepare_for_speed,
)
from pipeline.training.adaptation_losses import ROWS, ObjectiveWeights, dass_objective
from pipeline.training.holdout import holdout_confusion, holdout_scores, holdout_stream
from pipeline.training.optim import build_optimizer
from pipeline.training.step_diagnostics import COSINE_BINS, DYNAMIC_KINDS, step_diagnostics
from pipeline.training.worker import WorkerRun, batches, resume, run_worker, seed_everything


class TwoDomains(nn.Module):
    """Source and target forward passes in one call, so DDP sees one forward per backward."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, source: torch.Tensor, target: torch.Tensor):
        return self.segmentor(source, domain="source"), self.segmentor(target, domain="target")


def adaptation_mode(model: nn.Module, bn_statistics: str) -> nn.Module:
    """Train mode for an adaptation step under `adapt.bn_statistics` (pipeline/models/batchnorm.py).

    frozen, per_domain: every BatchNorm holds its running statistics, so the labeller, an adaptation step
    and evaluation normalise an image the same way. batch (the official code's `model.train()`): every
    BatchNorm normalises each domain's pass by that batch's own statistics and updates its running ones.
    """
    model.train()
    return model if bn_statistics == "batch" else hold_batchnorm_statistics(model)


@dataclass(frozen=True)
class SweepTrial:
    """A sweep trial: train without the held-out slice, score on it every `eval_every` steps, and log
    to the sweep's experiment as a child of its parent run."""

    run_name: str
    parent_run_id: str | None
    train_units: list[ReadUnit]
    holdout_units: list[ReadUnit]
    eval_every: int
    labels: str  # pseudo | oracle
    extra_params: dict[str, Any]


@dataclass(frozen=True)
class AdaptJob:
    config: Config
    row: str
    seed: int
    round: int = 0
    label_split: str = artifacts.PSEUDO_STATIC  # shards folder of this round's static labels
    previous_state: str | None = None  # the previous round's final state file; None: start from LABELLER
    trial: SweepTrial | None = None  # set by the sweep stage


def round_portion(cbst: CbstConfig, round_index: int) -> float:
    """CRST's growing CBST portion: min(p + r·Δp, p_max) for round r (round 0: cbst.portion)."""
    return min(cbst.portion + round_index * cbst.portion_step, cbst.portion_max)


def objective_weights(config: Config) -> ObjectiveWeights:
    adapt = config.adapt
    return ObjectiveWeights(adapt.weight_target, adapt.weight_fc, adapt.weight_bc, adapt.tau, adapt.threshold,
                            ce_on_hybrid=adapt.target_ce_labels == "hybrid")  # fmt: skip


def adapt_worker(loop_config: dict[str, Any]) -> None:
    job: AdaptJob = loop_config["job"]
    config, adapt = job.config, job.config.adapt
    context = worker_context(config.distributed.cpus_per_worker)
    seed_everything(job.seed * 1000 + job.round * 100 + context.rank)
    segmentor = build_model(config)
    memory = PrototypeMemory(NUM_CLASSES, segmentor.embedding_dim, adapt.ema_momentum, init=adapt.memory_init)
    restarted, start_step = resume()  # this round's own checkpoint after a worker failure
    state = restarted
    if state is None and job.previous_state is not None:
        state = torch.load(job.previous_state, map_location="cpu", weights_only=True)
    if state is None:
        load_segmentor_state(segmentor, config.resolve(artifacts.LABELLER_MODEL))
    else:
        segmentor.load_state_dict(state["model"])
        memory.load_state_dict(state["memory"])
    segmentor = prepare_for_speed(segmentor, config.train)
    batchnorm_affine_trainable(segmentor, adapt.bn_affine == "train")
    model = prepare_model(TwoDomains(segmentor), some_parameters_unused=segmentor.projection is not None)
    optimizer = build_optimizer(model, dataclasses.replace(config.train.optim, lr=adapt.lr))
    if restarted is not None:  # a new round starts a fresh optimizer and lr schedule (CRST)
        optimizer.load_state_dict(restarted["optimizer"])
    memory.to(context.device)
    data_seed = job.seed * 1000 + job.round * 100_000
    source = batches(config, artifacts.SOURCE, context, seed=data_seed, skip_batches=start_step)
    trial = job.trial
    target = batches(config, artifacts.TARGET_TRAIN, context, seed=data_seed + 1, label_split=job.label_split,
                     with_truth=True, skip_batches=start_step,
                     units=trial.train_units if trial else None)  # fmt: skip
    row, weights = ROWS[job.row], objective_weights(config)
    tracker = cell_tracker(job, context, state.get("mlflow_run_id") if state is not None else None)
    step_offset = job.round * adapt.steps  # MLflow steps run on across rounds
    counts = {kind: torch.zeros(3 * NUM_CLASSES + 3, dtype=torch.float64) for kind in LABEL_KINDS}
    window = {kind: torch.zeros(3 * NUM_CLASSES + 3, dtype=torch.float64) for kind in LABEL_KINDS}
    histograms = {kind: torch.zeros(2, COSINE_BINS, dtype=torch.float64) for kind in DYNAMIC_KINDS}
    cosines: list[torch.Tensor] = []  # per step: 10/50/90 % quantiles of the best calibrated cosine
    cosine_total = torch.zeros(4, dtype=torch.float64)  # summed quantiles and the number of steps
    if state is not None:  # a restarted worker or a later round continues the run's diagnostics too
        counts = {
            kind: torch.tensor(values, dtype=torch.float64) for kind, values in state["label_counts"].items()
        }
        cosine_total = torch.tensor(state["cosine_total"], dtype=torch.float64)
        histograms = {
            kind: torch.tensor(values, dtype=torch.float64)
            for kind, values in state["cosine_histograms"].items()
        }

    def step_losses(step: int) -> dict[str, torch.Tensor]:
        source_batch, target_batch = next(source), next(target)
        device = context.device
        with autocast(config.train, device):
            outputs = model(input_batch(source_batch["image"].to(device), config.train),
                            input_batch(target_batch["image"].to(device), config.train))  # fmt: skip
        # The objective (CE, prototypes, contrast, memory update) runs outside autocast, in float32.
        source_out, target_out = (full_precision(output) for output in outputs)
        static = target_batch["label"].to(device)
        source_labels = source_batch["label"].to(device)
        outcome = dass_objective(
            source_out.logits, source_out.embedding, source_labels,
            target_out.logits, target_out.embedding, static, memory, row, weights,
        )  # fmt: skip
        diagnostics = step_diagnostics(outcome, static, target_batch["truth"].to(device))
        for kind, values in diagnostics.label_counts.items():
            counts[kind] += values
            window[kind] += values
        for kind, values in diagnostics.cosine_histograms.items():
            histograms[kind] += values
        if diagnostics.cosine_quantiles is not None:
            cosines.append(diagnostics.cosine_quantiles)
            cosine_total[:3] += cosines[-1].double()
            cosine_total[3] += 1
        return outcome.losses

    title = artifacts.cell_name(job.row, job.seed) + (
        f" round {job.round + 1}/{adapt.rounds}" if adapt.rounds > 1 else ""
    )

    def label_quality() -> dict[str, float]:
        """Label density and accuracy over the steps since the last log, and the cosine quantiles."""
        quality = {}
        for kind in LABEL_KINDS:
            summary = summarise_label_counts(window[kind], CLASS_NAMES)
            quality |= {f"{kind}.{key}": summary[key] for key in ("density", "accuracy", "on_ignore_truth")
                        if summary[key] is not None}  # fmt: skip
            window[kind].zero_()
        if cosines:
            quantiles = torch.stack(cosines).mean(0).tolist()
            quality |= {"cosine.p10": quantiles[0], "cosine.p50": quantiles[1], "cosine.p90": quantiles[2]}
            cosines.clear()
        return quality

    def holdout(step: int) -> dict[str, float]:
        """A sweep trial's scores on its held-out slice (every checkpoint of a trial is an evaluation)."""
        stream = holdout_stream(config, trial.holdout_units, trial.labels, job.label_split, context)
        return holdout_scores(holdout_confusion(unwrap(model).segmentor, stream, context.device),
                              config.data.source.name)  # fmt: skip

    def checkpoint_state(step: int) -> dict[str, Any]:
        return {"model": unwrap(model).segmentor.state_dict(), "optimizer": optimizer.state_dict(),
                "memory": memory.state_dict(), "step": step,
                "label_counts": {kind: value.tolist() for kind, value in counts.items()},
                "cosine_histograms": {kind: value.tolist() for kind, value in histograms.items()},
                "cosine_total": cosine_total.tolist(), "mlflow_run_id": tracker.run_id or "",
                "round": job.round, "peak_memory": peak_memory(context.device)}  # fmt: skip

    run = WorkerRun(title, adapt.steps, step_losses, checkpoint_state, config.train,
                    checkpoint_every=trial.eval_every if trial is not None else None, step_offset=step_offset,
                    log_extra=label_quality, progress_extra=("dynamic_cal.density",),
                    checkpoint_scores=holdout if trial is not None else None)  # fmt: skip
    adaptation_mode(model, adapt.bn_statistics)
    result = run_worker(run, optimizer, tracker, context, start_step, loop_config.get("crash_once"))
    tracker.log_metrics({f"train_seconds.round{job.round}": result.seconds})
    tracker.log_metrics(peak_memory(context.device), step_offset + adapt.steps)
    if job.round == adapt.rounds - 1:
        tracker.finish()


def cell_tracker(job: AdaptJob, context: WorkerContext, run_id: str | None) -> Tracker:
    """The MLflow run of an ablation cell (experiment <name>-ablation) or of a sweep trial (<name>-sweep,
    a child of the sweep's parent run); `run_id` continues it after a restart or a round."""
    config = job.config
    if job.trial is None:
        return Tracker(config, "ablation", f"{config.name}_{artifacts.cell_name(job.row, job.seed)}", "adapt",
                       active=context.is_main, run_id=run_id,
                       extra_params={"ablation.row": job.row, "ablation.seed": job.seed})  # fmt: skip
    tags = {"sweep.role": "trial"}
    if job.trial.parent_run_id:
        tags["mlflow.parentRunId"] = job.trial.parent_run_id
    return Tracker(config, "sweep", job.trial.run_name, "sweep", active=context.is_main, run_id=run_id,
                   extra_params=job.trial.extra_params, tags=tags)  # fmt: skip
