"""One trial of the sweep (stages/sweep.py: Ray Tune over τ, λ and 𝒯): its config and its driver function.

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

from pipeline import artifacts
from pipeline.config import SWEPT_AXES, Config
from pipeline.distributed.train import fit
from pipeline.distributed.tune import current_trial_id, trial_seed
from pipeline.training.adapt import AdaptJob, SweepTrial, adapt_worker
from pipeline.training.holdout import HoldoutSplit


def trial_config(config: Config, params: dict[str, Any]) -> Config:
    """The config one trial trains with: swept adapt.* values, sweep.steps, one round, sweep CPUs, and no
    restart of its workers.

    No restart (distributed.max_failures 0): a trial ASHA stops is killed with its Ray Train controller,
    which sees its own workers die with it; given a restart, the dying controller started a new worker
    group whose placement group Ray 2.60 then never freed, even after the sweep's job had ended
    (pipeline/distributed/placement.py). A trial whose worker fails is recorded as failed instead; the
    other trials go on.
    """
    sweep = config.sweep
    swept = {axis: float(params[axis]) for axis in SWEPT_AXES}
    adapt = dataclasses.replace(config.adapt, steps=sweep.steps, rounds=1, **swept)
    distributed = dataclasses.replace(
        config.distributed, cpus_per_worker=sweep.cpus_per_worker, max_failures=0
    )
    return dataclasses.replace(config, adapt=adapt, distributed=distributed)


def run_trial(params: dict[str, Any], config: Config, split: HoldoutSplit, parent_run_id: str | None) -> None:
    """One Tune trial (its driver function): a TorchTrainer of the adaptation with these params."""
    trial = current_trial_id()
    settings = trial_config(config, params)
    seed = trial_seed(params, config.seed)
    run_name = artifacts.trial_run_name(config.name, trial)
    extra = {"sweep.trial": trial, "ablation.row": config.sweep.row, "ablation.seed": seed}
    job = AdaptJob(settings, config.sweep.row, seed, trial=SweepTrial(
        run_name=run_name, parent_run_id=parent_run_id, train_units=split.train,
        holdout_units=split.holdout, eval_every=config.sweep.eval_every,
        labels=config.sweep.selection_labels, extra_params=extra,
    ))  # fmt: skip
    fit(adapt_worker, {"job": job}, settings, run_name=f"{run_name}_{time.strftime('%Y%m%d-%H%M%S')}",
        report_to_tune=True)  # fmt: skip
