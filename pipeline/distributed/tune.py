"""Ray Tune: the sweep's search space, scheduler and trials (every Ray Tune call of the project).

Ray 2.60 runs Ray Train V2, where `Tuner(TorchTrainer(...))` is gone: each trial is a driver function
that builds its own TorchTrainer (`pipeline.distributed.train.fit(..., report_to_tune=True)`), whose
reports reach Tune through `TuneReportCallback`, so ASHA can stop a trial between evaluations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from pipeline.config import SWEPT_AXES, SweepConfig
from pipeline.distributed.placement import release_held_placement_groups
from pipeline.distributed.runtime import init_ray

log = logging.getLogger(__name__)
REPEAT_KEY = "repeat"  # grid search: which repeat of the grid a trial is (its seed offset)
STEP_KEY = "step"  # the reported metric every scheduler decision is made on
TRIAL_DRIVER_MEMORY = 64 * 1024**2  # bytes of Ray's logical memory resource


def search_space(sweep: SweepConfig) -> dict[str, Any]:
    """Tune's param_space over adapt.tau / ema_momentum / threshold.

    grid: `grid_search` over each axis's values and over `repeat` (0 … num_samples − 1);
    random: an axis with one value is fixed, otherwise drawn between its smallest and largest value,
    log-uniformly for the axes in `sweep.log_scale`.
    """
    space: dict[str, Any] = {}
    for axis in SWEPT_AXES:
        values = sorted(set(getattr(sweep.space, axis)))
        if sweep.search == "grid":
            space[axis] = tune.grid_search(values)
        elif len(values) == 1:
            space[axis] = values[0]
        elif axis in sweep.log_scale:
            space[axis] = tune.loguniform(values[0], values[-1])
        else:
            space[axis] = tune.uniform(values[0], values[-1])
    space[REPEAT_KEY] = tune.grid_search(list(range(sweep.num_samples))) if sweep.search == "grid" else 0
    return space


def trial_scheduler(sweep: SweepConfig, metric: str) -> FIFOScheduler | ASHAScheduler:
    if sweep.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr=STEP_KEY, metric=metric, mode="max", max_t=sweep.steps,
                         grace_period=sweep.asha.grace_period,
                         reduction_factor=sweep.asha.reduction_factor)  # fmt: skip


def expected_trials(sweep: SweepConfig) -> int:
    if sweep.search == "random":
        return sweep.num_samples
    return sweep.num_samples * math.prod(len(set(getattr(sweep.space, axis))) for axis in SWEPT_AXES)


@dataclass
class TrialOutcome:
    """What the sweep report needs of one trial, free of Ray types."""

    trial: str
    params: dict[str, float]
    repeat: int
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, metric) per evaluation
    last: dict[str, Any] = field(default_factory=dict)  # the last reported metrics
    error: str | None = None


def warn_if_trials_cannot_fit(sweep: SweepConfig, num_workers: int) -> None:
    """Concurrent trials whose workers need more CPUs than the cluster has wait in Ray Train's worker
    start-up (60 s timeouts and retries; seen here to stall a sweep): say so before starting."""
    needed = sweep.max_concurrent_trials * num_workers * sweep.cpus_per_worker
    available = ray.cluster_resources().get("CPU", 0)
    if needed > available:
        log.warning(
            "sweep.max_concurrent_trials (%d) × distributed.num_workers (%d) × sweep.cpus_per_worker (%g) "
            "= %g CPUs, but the Ray cluster has %g: trials will wait for each other's workers; "
            "lower sweep.max_concurrent_trials",
            sweep.max_concurrent_trials, num_workers, sweep.cpus_per_worker, needed, available,
        )  # fmt: skip


def current_trial_id() -> str:
    """The running trial's id (e.g. `b9301_00000`); outcomes and MLflow child runs are named by it."""
    return tune.get_context().get_trial_id()


def run_trials(trial: Callable[..., None], trial_kwargs: dict[str, Any], sweep: SweepConfig, metric: str,
               seed: int, storage: str, name: str, num_workers: int) -> list[TrialOutcome]:  # fmt: skip
    """Run `trial(params, **trial_kwargs)` for every point of the search space; outcomes in trial order
    (a failed trial is recorded with its error, not raised). Each trial trains `num_workers` workers."""
    init_ray()
    warn_if_trials_cannot_fit(sweep, num_workers)
    # The trial function only drives a TorchTrainer whose workers hold the CPUs/GPUs: it asks for no CPU,
    # so max_concurrent_trials alone decides how many run at once (1 CPU each would starve the workers).
    # Tune refuses an empty request, hence a token amount of Ray's logical memory.
    trainable = tune.with_resources(tune.with_parameters(trial, **trial_kwargs),
                                    {"CPU": 0, "memory": TRIAL_DRIVER_MEMORY})  # fmt: skip
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(sweep),
        tune_config=tune.TuneConfig(
            num_samples=1 if sweep.search == "grid" else sweep.num_samples,  # grid repeats are an axis
            # The concurrency limit goes to the generator: Tune ignores TuneConfig.max_concurrent_trials
            # when it is handed a generator instance (seen here: all trials started at once).
            search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=sweep.max_concurrent_trials),
            scheduler=trial_scheduler(sweep, metric),
            time_budget_s=sweep.time_budget_minutes * 60 or None,
        ),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=1),
    )
    grid = tuner.fit()
    # Every trial has ended: once Ray's own cleanup is done, what the job still holds is Ray's leak.
    release_held_placement_groups("the sweep's trials")
    outcomes = []
    for result in grid:
        frame = result.metrics_dataframe
        history = []
        if frame is not None and metric in frame:
            history = [(int(s), float(v)) for s, v in zip(frame[STEP_KEY], frame[metric], strict=True)]
        config = result.config or {}
        reported = result.metrics or {}
        numbers = {key: value for key, value in reported.items() if isinstance(value, int | float)}
        outcomes.append(TrialOutcome(
            trial=str(reported.get("trial_id") or Path(result.path).name),
            params={axis: float(config[axis]) for axis in SWEPT_AXES if axis in config},
            repeat=int(config.get(REPEAT_KEY, 0)),
            history=history,
            last=numbers,
            error=None if result.error is None else first_line(result.error),
        ))  # fmt: skip
    return outcomes


def first_line(error: BaseException) -> str:
    """The trial's own error message (Ray wraps it in a task error with a long traceback)."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"


def trial_seed(params: dict[str, Any], base_seed: int) -> int:
    return base_seed + int(params.get(REPEAT_KEY, 0))
