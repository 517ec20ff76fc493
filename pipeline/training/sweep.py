"""The `sweep` stage: Ray Tune over τ (adapt.tau), λ (adapt.ema_momentum) and 𝒯 (adapt.threshold).

Every trial is the adaptation of one ablation row (`sweep.row`) from models/pseudo_labeller.pt, as the
`adapt` stage runs it, with three differences: the swept values replace adapt.*, `sweep.steps` replaces
adapt.steps (one round), and the held-out slice of target train is left out of training and scored
every `sweep.eval_every` steps. The scores go to Tune (ASHA stops trials that fall behind), to the
trial's MLflow child run, and at the end to reports/sweep.md and metrics/sweep.json.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from pipeline.config import SWEPT_AXES, Config
from pipeline.distributed.train import fit
from pipeline.distributed.tune import TrialOutcome, current_trial_id, run_trials, trial_seed
from pipeline.errors import InputError
from pipeline.evaluation.sweep_report import write_sweep_outputs
from pipeline.pseudo_labels.stage import OUTPUT as PSEUDO_SPLIT
from pipeline.tracking.mlflow_run import Tracker, child_run_ids, tracking_available
from pipeline.training.adapt import AdaptJob, SweepTrial, adapt_worker
from pipeline.training.holdout import HoldoutSplit, target_train_holdout


class SweepFailedError(RuntimeError):
    """Every trial of the sweep failed; the message lists their errors."""


def trial_config(config: Config, params: dict[str, Any]) -> Config:
    """The config one trial trains with: swept adapt.* values, sweep.steps, one round, sweep CPUs."""
    sweep = config.sweep
    swept = {axis: float(params[axis]) for axis in SWEPT_AXES}
    adapt = dataclasses.replace(config.adapt, steps=sweep.steps, rounds=1, **swept)
    distributed = dataclasses.replace(config.distributed, cpus_per_worker=sweep.cpus_per_worker)
    return dataclasses.replace(config, adapt=adapt, distributed=distributed)


def run_trial(params: dict[str, Any], config: Config, split: HoldoutSplit, parent_run_id: str | None) -> None:
    """One Tune trial (its driver function): a TorchTrainer of the adaptation with these params."""
    trial = current_trial_id()
    settings = trial_config(config, params)
    seed = trial_seed(params, config.seed)
    run_name = f"{config.name}_sweep_{trial}"
    extra = {"sweep.trial": trial, "ablation.row": config.sweep.row, "ablation.seed": seed}
    job = AdaptJob(settings, config.sweep.row, seed, trial=SweepTrial(
        run_name=run_name, parent_run_id=parent_run_id, train_units=split.train,
        holdout_units=split.holdout, eval_every=config.sweep.eval_every,
        labels=config.sweep.selection_labels, extra_params=extra,
    ))  # fmt: skip
    fit(adapt_worker, {"job": job}, settings, run_name=f"{run_name}_{time.strftime('%Y%m%d-%H%M%S')}",
        report_to_tune=True)  # fmt: skip


def sweep(config: Config) -> dict[str, Any]:
    """Run the sweep; write metrics/sweep.json, reports/sweep.md and reports/sweep.png."""
    tracking_available(config)  # fail fast if the store is required and down
    if not (config.shards_root / PSEUDO_SPLIT).is_dir():
        labels = config.shards_root / PSEUDO_SPLIT
        raise InputError(f"{labels}: no static labels (run the pseudo_label stage first)")
    split = target_train_holdout(config)
    metric = f"holdout.{config.sweep.metric}"
    parent = Tracker(config, "sweep", f"{config.name}_sweep_{config.sweep.row}", "sweep",
                     extra_params={"sweep.holdout_images": split.holdout_images},
                     tags={"sweep.role": "parent"})  # fmt: skip
    started = time.perf_counter()
    try:
        outcomes = run_trials(run_trial, {"config": config, "split": split, "parent_run_id": parent.run_id},
                              config.sweep, metric, config.seed, config.storage_path,
                              name=f"{config.name}_sweep_{time.strftime('%Y%m%d-%H%M%S')}",
                              num_workers=config.distributed.num_workers)  # fmt: skip
        if not any(outcome.history for outcome in outcomes):
            raise SweepFailedError("every trial of the sweep failed: " + failures(outcomes))
    except BaseException:
        parent.finish("FAILED")
        raise
    run_ids = child_run_ids(config, parent.run_id) if parent.active else {}
    summary = write_sweep_outputs(config, outcomes, metric, split.holdout_images, run_ids,
                                  seconds=time.perf_counter() - started)  # fmt: skip
    best = summary["best"]
    parent.log_metrics({f"best.{metric}": best["value"], "trials": len(outcomes),
                        "trials_failed": summary["trials_failed"],
                        "seconds": summary["seconds"]})  # fmt: skip
    parent.log_params({f"best.adapt.{axis}": value for axis, value in best["params"].items()})
    for path in summary["files"]:
        parent.log_artifact(config.resolve(path))
    parent.finish()
    return summary


def failures(outcomes: list[TrialOutcome]) -> str:
    return "; ".join(f"{outcome.trial}: {outcome.error}" for outcome in outcomes if outcome.error)
