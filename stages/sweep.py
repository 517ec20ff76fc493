"""DVC stage `sweep`: Ray Tune over τ (adapt.tau), λ (adapt.ema_momentum) and 𝒯 (adapt.threshold).

Each trial (pipeline/training/sweep.py) adapts `sweep.row` on Ray Train without a held-out slice of
target train and is scored on it; ASHA stops trials that fall behind. An MLflow parent run holds one
child run per trial. Writes metrics/sweep.json, reports/sweep.md (trials ranked) and reports/sweep.png.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline import artifacts
from pipeline.atomic import atomic_path, write_json_atomic
from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.distributed.tune import TrialOutcome, run_trials
from pipeline.errors import InputError
from pipeline.evaluation.sweep_report import markdown, plot, run_status, summarise, with_logged_evaluations
from pipeline.tracking.mlflow_run import (
    Tracker,
    child_run_ids,
    close_runs_left_running,
    metric_histories,
    tracking_available,
)
from pipeline.training.holdout import target_train_holdout
from pipeline.training.sweep import run_trial


class SweepFailedError(RuntimeError):
    """Every trial of the sweep failed; the message lists their errors."""


def failures(outcomes: list[TrialOutcome]) -> str:
    return "; ".join(f"{outcome.trial}: {outcome.error}" for outcome in outcomes if outcome.error)


def write_outputs(config: Config, summary: dict[str, Any]) -> None:
    plot(summary, config.sweep.log_scale, config.resolve(artifacts.SWEEP_PNG))
    config.resolve(artifacts.SWEEP_MD).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(config.resolve(artifacts.SWEEP_MD)) as temporary:
        temporary.write_text(markdown(summary))
    config.resolve(artifacts.SWEEP_JSON).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config.resolve(artifacts.SWEEP_JSON), summary)


def trial_run_ids(config: Config, parent_run_id: str | None, outcomes: list[TrialOutcome]) -> dict[str, str]:
    """Trial id → the id of its MLflow run, for the trials that started one."""
    by_name = child_run_ids(config, parent_run_id)
    names = {outcome.trial: artifacts.trial_run_name(config.name, outcome.trial) for outcome in outcomes}
    return {trial: by_name[name] for trial, name in names.items() if name in by_name}


def sweep(config: Config) -> dict[str, Any]:
    tracking_available(config)  # fail fast if the store is required and down
    labels = config.shards_root / artifacts.PSEUDO_STATIC
    if not labels.is_dir():
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
    run_ids = trial_run_ids(config, parent.run_id, outcomes) if parent.active else {}
    if parent.active:  # evaluations a trial made after ASHA stopped it, which Tune dropped, count too
        outcomes = with_logged_evaluations(outcomes, metric_histories(config, run_ids, metric))
    summary = summarise(config, outcomes, metric, split.holdout_images, run_ids,
                        seconds=time.perf_counter() - started)  # fmt: skip
    summary["files"] = [artifacts.SWEEP_JSON, artifacts.SWEEP_MD, artifacts.SWEEP_PNG]
    if parent.active:  # the trials Tune stopped could not end their own runs
        trials = [trial for trial in summary["trials"] if trial["mlflow_run_id"]]
        close_runs_left_running(config, {trial["mlflow_run_id"]: run_status(trial) for trial in trials})
    write_outputs(config, summary)
    best = summary["best"]
    parent.log_metrics({f"best.{metric}": best["value"], "trials": len(outcomes),
                        "trials_failed": summary["trials_failed"],
                        "seconds": summary["seconds"]})  # fmt: skip
    parent.log_params({f"best.adapt.{axis}": value for axis, value in best["params"].items()})
    for path in summary["files"]:
        parent.log_artifact(config.resolve(path))
    parent.finish()
    return summary


if __name__ == "__main__":
    run_stage("sweep", sweep)
