"""The sweep: its search space, held-out slice and report, and a real Ray Tune run of the stage."""

from __future__ import annotations

import itertools

import pytest
from dvc_project import ROOT
from ray import tune

from pipeline.config import ConfigError, load_config
from pipeline.data.loader import ReadUnit
from pipeline.distributed.tune import REPEAT_KEY, TrialOutcome, expected_trials, search_space
from pipeline.evaluation.sweep_report import markdown, run_status, summarise, with_logged_evaluations
from pipeline.tracking.mlflow_run import close_runs_left_running, metric_histories
from pipeline.training.holdout import split_holdout
from pipeline.training.sweep import trial_config

PARAMS = ROOT / "params.yaml"


def sweep_config(**values):
    return load_config(PARAMS, {f"sweep.{key}": value for key, value in values.items()})


def test_grid_space_lists_every_value_and_the_repeats():
    config = sweep_config(search="grid", num_samples=2, space={"tau": [0.1, 0.05], "ema_momentum": [0.99],
                                                             "threshold": [0.8, 0.9, 0.95]})  # fmt: skip
    space = search_space(config.sweep)
    assert space["tau"] == tune.grid_search([0.05, 0.1])
    assert space["threshold"] == tune.grid_search([0.8, 0.9, 0.95])
    assert space[REPEAT_KEY] == tune.grid_search([0, 1])
    assert expected_trials(config.sweep) == 2 * 1 * 3 * 2


def test_random_space_draws_between_the_ends_log_uniformly_where_asked():
    space = {"tau": [0.2, 0.05], "ema_momentum": [0.99], "threshold": [0.8, 0.95]}
    config = sweep_config(search="random", num_samples=5, log_scale=["tau"], space=space)
    space = search_space(config.sweep)
    assert space["ema_momentum"] == 0.99  # one value fixes the axis
    assert (space["tau"].lower, space["tau"].upper) == (0.05, 0.2)
    assert type(space["tau"].get_sampler()).__name__ == "_LogUniform"
    assert type(space["threshold"].get_sampler()).__name__ == "_Uniform"
    assert expected_trials(config.sweep) == 5


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("space.tau", [0.1, 0.0], "sweep.space.tau[1] (a value of adapt.tau) = 0.0 is out of range"),
        ("space.ema_momentum", [1.0], "sweep.space.ema_momentum[0] (a value of adapt.ema_momentum) = 1.0"),
        ("space.threshold", [1.5], "sweep.space.threshold[0] (a value of adapt.threshold) = 1.5"),
        ("eval_every", 1000, "sweep.eval_every = 1000 must be ≤ sweep.steps"),
        ("holdout_fraction", 1.0, "sweep.holdout_fraction = 1.0 is out of range"),
        ("scheduler", "hyperband", "sweep.scheduler = 'hyperband' is not allowed (one of: fifo | asha)"),
    ],
)
def test_bad_sweep_params_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):  # fmt: skip
        sweep_config(**{key: value})


def test_log_scale_needs_positive_values():
    with pytest.raises(ConfigError, match="sweep.log_scale lists threshold"):
        sweep_config(
            log_scale=["threshold"], space={"tau": [0.1], "ema_momentum": [0.9], "threshold": [-0.5, 0.9]}
        )


def units(count: int) -> list[ReadUnit]:
    return [ReadUnit(f"part-{i // 10:05d}.parquet", i % 10, 10) for i in range(count)]


def test_holdout_is_every_kth_row_group_and_disjoint_from_training():
    split = split_holdout(units(50), 0.1)
    assert split.holdout == units(50)[9::10] and split.holdout_images == 50
    assert not set(split.holdout) & set(split.train) and len(split.train) == 45


def test_an_empty_holdout_or_training_slice_is_refused():
    with pytest.raises(ConfigError, match="sweep.holdout_fraction = 0.1 holds out 0 of the 3 row groups"):
        split_holdout(units(3), 0.1)


def test_trial_config_replaces_the_swept_values_steps_cpus_and_restarts():
    config = sweep_config(
        steps=7, eval_every=7, asha={"grace_period": 7, "reduction_factor": 2}, cpus_per_worker=0.5
    )
    trial = trial_config(config, {"tau": 0.07, "ema_momentum": 0.95, "threshold": 0.85, REPEAT_KEY: 0})
    assert (trial.adapt.tau, trial.adapt.ema_momentum, trial.adapt.threshold) == (0.07, 0.95, 0.85)
    assert trial.adapt.steps == 7 and trial.adapt.rounds == 1 and trial.distributed.cpus_per_worker == 0.5
    assert trial.distributed.max_failures == 0 < config.distributed.max_failures  # no worker-group restart
    assert trial.adapt.lr == config.adapt.lr  # everything else as the ablation trains


def test_summary_ranks_trials_by_their_last_evaluation_and_marks_early_stops():
    config = sweep_config(steps=60)
    outcomes = [
        TrialOutcome("a", {"tau": 0.1, "ema_momentum": 0.9, "threshold": 0.8}, 0, [(20, 10.0), (40, 12.0)]),
        TrialOutcome("b", {"tau": 0.2, "ema_momentum": 0.9, "threshold": 0.9}, 0, [(20, 11.0), (60, 14.5)]),
        TrialOutcome("c", {"tau": 0.05, "ema_momentum": 0.9, "threshold": 0.9}, 0, [], error="ValueError: x"),
    ]
    summary = summarise(config, outcomes, "holdout.miou", 50, {"b": "run-b"}, 12.0)
    assert [t["trial"] for t in summary["trials"]] == ["b", "a", "c"]
    assert summary["best"] == {"params": {"tau": 0.2, "ema_momentum": 0.9, "threshold": 0.9},
                               "value": 14.5, "trial": "b"}  # fmt: skip
    assert summary["trials"][1]["stopped_early"] and not summary["trials"][0]["stopped_early"]
    assert summary["trials"][0]["mlflow_run_id"] == "run-b" and summary["trials_failed"] == 1
    text = markdown(summary)
    assert "dvc exp run -S adapt.tau=0.2 -S adapt.ema_momentum=0.9 -S adapt.threshold=0.9" in text
    assert "stopped early (ASHA)" in text and "ValueError: x" in text
    assert [run_status(trial) for trial in summary["trials"]] == ["FINISHED", "KILLED", "FAILED"]


def test_trial_runs_left_running_end_with_their_status_as_of_their_last_metric(tmp_path):
    """A real sqlite store: runs a stopped trial left RUNNING end with the status given, at the time of
    their last logged metric; a run its trial ended itself is left as it is."""
    from mlflow.tracking import MlflowClient

    config = load_config(PARAMS, {"tracking.uri": f"sqlite:///{tmp_path}/mlflow.db"})
    client = MlflowClient(config.tracking_uri)
    experiment = client.create_experiment("trials")
    stopped, finished, ended = (client.create_run(experiment).info.run_id for _ in range(3))
    for run_id in (stopped, finished, ended):
        client.log_metric(run_id, "loss", 1.0, timestamp=1_000, step=1)
        client.log_metric(run_id, "holdout.miou", 5.0, timestamp=3_000, step=2)
        client.log_metric(run_id, "loss", 0.5, timestamp=2_000, step=2)
    client.set_terminated(ended, "FINISHED", end_time=9_000)
    closed = close_runs_left_running(config, {stopped: "KILLED", finished: "FINISHED", ended: "KILLED"})
    assert sorted(closed) == sorted([stopped, finished])
    runs = {run_id: client.get_run(run_id).info for run_id in (stopped, finished, ended)}
    assert (runs[stopped].status, runs[stopped].end_time) == ("KILLED", 3_000)
    assert (runs[finished].status, runs[finished].end_time) == ("FINISHED", 3_000)
    assert (runs[ended].status, runs[ended].end_time) == ("FINISHED", 9_000)


def test_evaluations_tune_dropped_after_a_stop_count_when_mlflow_logged_them():
    """A trial ASHA stopped at step 2 that evaluated again, up to its last step, before the stop reached
    it: MLflow logged those evaluations, Tune dropped them. The summary holds them, so it agrees with the
    trial's run (scored at step 4, ended FINISHED, not "stopped early")."""
    config = sweep_config(steps=4, eval_every=2, asha={"grace_period": 2, "reduction_factor": 2})
    params = {"tau": 0.1, "ema_momentum": 0.9, "threshold": 0.8}
    outcomes = [TrialOutcome(name, params, 0, [(2, 10.0)]) for name in "abcde"]
    logged = {
        "a": [(2, 10.0), (4, 13.0)],  # ran to its end after the stop
        "b": [(2, 10.0)],  # stopped where Tune says
        "c": [(2, 8.0), (4, 12.0)],  # not the trial Tune recorded: Tune's record stands
        "d": [(2, 10.0), (2, 10.0), (4, 11.0)],  # restarted from its step-2 checkpoint: step 2 counts once
    }
    merged = {outcome.trial: outcome.history for outcome in with_logged_evaluations(outcomes, logged)}
    assert merged == {"a": [(2, 10.0), (4, 13.0)], "b": [(2, 10.0)], "c": [(2, 10.0)],
                      "d": [(2, 10.0), (4, 11.0)], "e": [(2, 10.0)]}  # fmt: skip
    summary = summarise(config, with_logged_evaluations(outcomes, logged), "holdout.miou", 10, {}, 1.0)
    first = summary["trials"][0]
    assert (first["trial"], first["value"], first["stopped_early"]) == ("a", 13.0, False)
    assert run_status(first) == "FINISHED"
    assert [t["stopped_early"] for t in summary["trials"][1:]] == [False, True, True, True]  # d, then b c e


def test_metric_histories_are_read_in_logging_order(tmp_path):
    """A real sqlite store: a run restarted from step 2 logs step 2 again after step 3 was logged."""
    from mlflow.tracking import MlflowClient

    config = load_config(PARAMS, {"tracking.uri": f"sqlite:///{tmp_path}/mlflow.db"})
    client = MlflowClient(config.tracking_uri)
    run_id = client.create_run(client.create_experiment("trials")).info.run_id
    for step, value, timestamp in [(2, 5.0, 1_000), (3, 6.0, 2_000), (2, 5.5, 3_000), (4, 7.0, 4_000)]:
        client.log_metric(run_id, "holdout.miou", value, timestamp=timestamp, step=step)
    client.log_metric(run_id, "loss", 1.0, timestamp=500, step=1)
    assert metric_histories(config, {"t": run_id}, "holdout.miou") == {
        "t": [(2, 5.0), (3, 6.0), (2, 5.5), (4, 7.0)]
    }


def test_grid_repeats_choose_by_the_mean_over_repeats():
    config = sweep_config(steps=10, eval_every=10, asha={"grace_period": 10, "reduction_factor": 2})
    low = {"tau": 0.1, "ema_momentum": 0.9, "threshold": 0.8}
    high = {"tau": 0.1, "ema_momentum": 0.9, "threshold": 0.9}
    outcomes = [
        TrialOutcome("a0", low, 0, [(10, 20.0)]),
        TrialOutcome("a1", low, 1, [(10, 10.0)]),
        TrialOutcome("b0", high, 0, [(10, 16.0)]),
        TrialOutcome("b1", high, 1, [(10, 16.0)]),
    ]
    summary = summarise(config, outcomes, "holdout.miou", 10, {}, 1.0)
    assert summary["best"]["params"] == high and summary["best"]["value"] == 16.0  # not the single best trial
    assert summary["settings"][1] == {"params": low, "mean": 15.0, "std": 7.07, "repeats": 2}


# The sweep stage itself (a real Ray Tune run through `dvc repro`) is tested on the DAG of
# test_dvc_pipeline.py: test_sweep_runs_tune_trials_with_mlflow_parent_and_children.


@pytest.mark.slow  # a Ray Tune run
def test_max_concurrent_trials_1_runs_trials_one_after_another(tmp_path, ray_runtime):
    """The generator gets the limit (Tune ignores TuneConfig.max_concurrent_trials when handed one, and
    then started every trial at once: this test fails that way). The test DAG's sweep also runs one trial
    at a time (tests/dvc_project.py)."""
    from pipeline.distributed.tune import run_trials

    def record_window(params, log: str) -> None:
        """A trial that only records when it ran (no training; nested, so Ray pickles it by value)."""
        import time
        from pathlib import Path

        started = time.time()
        time.sleep(0.3)
        with Path(log).open("a") as file:
            file.write(f"{started} {time.time()}\n")
        tune.report({"holdout.miou": params["tau"], "step": 1})

    # Two trials on the runtime's 2 CPUs: without the limit both would start at once.
    space = {"tau": [0.1, 0.2], "ema_momentum": [0.9], "threshold": [0.0]}
    sweep = sweep_config(search="grid", num_samples=1, max_concurrent_trials=1, scheduler="fifo", space=space)
    log = tmp_path / "windows.txt"
    outcomes = run_trials(record_window, {"log": str(log)}, sweep.sweep, "holdout.miou", 0,
                          str(tmp_path / "tune"), "limit", num_workers=1)  # fmt: skip
    assert [outcome.error for outcome in outcomes] == [None] * 2
    windows = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
    assert len(windows) == 2
    ordered = sorted(windows)
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(ordered)), windows
