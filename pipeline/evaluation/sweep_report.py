"""The sweep's summary (metrics/sweep.json), its table (reports/sweep.md, trials ranked) and plot
(reports/sweep.png); stages/sweep.py writes them.

A trial's score is the selection metric at its last evaluation on the held-out slice; trials that
ASHA stopped early are ranked with the score they had when stopped, and marked. A trial's evaluations are
those its MLflow run logged where they extend Tune's record (`with_logged_evaluations`): trials run side
by side, so one may evaluate again, even to its last step, before ASHA's stop reaches it, and Tune drops
those reports while MLflow keeps them.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from pipeline.atomic import atomic_path
from pipeline.config import SWEPT_AXES, Config
from pipeline.distributed.tune import TrialOutcome

SYMBOLS = {
    "tau": "τ (adapt.tau)",
    "ema_momentum": "λ (adapt.ema_momentum)",
    "threshold": "𝒯 (adapt.threshold)",
}
PLOT_LABELS = SYMBOLS | {"threshold": "adapt.threshold"}  # the plot font has no 𝒯
LABEL_SOURCES = {"pseudo": "static CBST pseudo labels", "oracle": "ground truth (oracle)"}


def with_logged_evaluations(
    outcomes: list[TrialOutcome], logged: dict[str, list[tuple[int, float]]]
) -> list[TrialOutcome]:
    """Each trial's history as its MLflow run logged it (trial id → (step, value) in logging order), where
    that history begins with Tune's record and goes further; otherwise Tune's record, unchanged.

    A trial logs each evaluation to MLflow before reporting it to Tune (pipeline/training/worker.py), so
    its MLflow history holds every report Tune kept and the ones Tune dropped after stopping it. A step
    logged twice (a run Ray Train restarted from a checkpoint) counts once, with its last value."""
    merged = []
    for outcome in outcomes:
        history = sorted(dict(logged.get(outcome.trial, [])).items())
        recorded = outcome.history
        extends = len(history) > len(recorded) and all(
            step == kept[0] and math.isclose(value, kept[1], rel_tol=1e-9, abs_tol=1e-9)
            for (step, value), kept in zip(history, recorded, strict=False)
        )
        merged.append(dataclasses.replace(outcome, history=history) if extends else outcome)
    return merged


def trial_entry(outcome: TrialOutcome, steps: int, run_ids: dict[str, str]) -> dict[str, Any]:
    last_step, value = outcome.history[-1] if outcome.history else (0, None)
    return {
        "trial": outcome.trial,
        "params": {axis: round(outcome.params[axis], 6) for axis in SWEPT_AXES if axis in outcome.params},
        "repeat": outcome.repeat,
        "value": None if value is None else round(value, 2),
        "step": last_step,
        "stopped_early": bool(outcome.history) and last_step < steps,
        "history": [[step, round(score, 2)] for step, score in outcome.history],
        "error": outcome.error,
        "mlflow_run_id": run_ids.get(outcome.trial),
    }


def run_status(trial: dict[str, Any]) -> str:
    """The MLflow status a trial's run ends with: FAILED (an error), KILLED (stopped early by the
    scheduler), else FINISHED."""
    if trial["error"] is not None:
        return "FAILED"
    return "KILLED" if trial["stopped_early"] else "FINISHED"


def by_setting(trials: list[dict[str, Any]], steps: int) -> list[dict[str, Any]]:
    """Grid repeats: mean ± std over the repeats of each setting that ran all their steps."""
    groups: dict[tuple, list[float]] = {}
    for trial in trials:
        if trial["value"] is not None and trial["step"] == steps:
            groups.setdefault(tuple(trial["params"].items()), []).append(trial["value"])
    rows = [{"params": dict(key), "mean": round(statistics.fmean(values), 2),
             "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0, "repeats": len(values)}
            for key, values in groups.items()]  # fmt: skip
    return sorted(rows, key=lambda row: -row["mean"])


def summarise(config: Config, outcomes: list[TrialOutcome], metric: str, holdout_images: int,
              run_ids: dict[str, str], seconds: float) -> dict[str, Any]:  # fmt: skip
    """The sweep's summary; `run_ids` maps a trial id to its MLflow run's id."""
    sweep = config.sweep
    trials = [trial_entry(o, sweep.steps, run_ids) for o in outcomes]
    trials.sort(key=lambda t: (t["value"] is None, -(t["value"] or 0.0), t["trial"]))
    scored = [t for t in trials if t["value"] is not None]
    settings = by_setting(trials, sweep.steps)
    if any(row["repeats"] > 1 for row in settings):  # grid repeats: choose by the mean over repeats
        best = {"params": settings[0]["params"], "value": settings[0]["mean"], "trial": None}
    else:
        best = {"params": scored[0]["params"], "value": scored[0]["value"], "trial": scored[0]["trial"]}
    return {
        "row": sweep.row,
        "metric": metric,
        "selection_labels": sweep.selection_labels,
        "holdout_images": holdout_images,
        "search": sweep.search,
        "scheduler": sweep.scheduler,
        "steps_per_trial": sweep.steps,
        "trials_failed": sum(t["error"] is not None for t in trials),
        "seconds": round(seconds, 1),
        "best": best,
        "settings": settings,
        "trials": trials,
    }


def markdown(summary: dict[str, Any]) -> str:
    labels = LABEL_SOURCES[summary["selection_labels"]]
    best = summary["best"]
    apply = " ".join(f"-S adapt.{axis}={value:g}" for axis, value in best["params"].items())
    lines = [
        f"# Sweep of τ, λ, 𝒯 for the `{summary['row']}` row",
        "",
        f"Selection metric: **{summary['metric']}** (%) on {summary['holdout_images']} held-out images of "
        f"target train scored against {labels}; trials never train on them and target val is never read. "
        f"Search: {summary['search']}, scheduler: {summary['scheduler']}, {summary['steps_per_trial']} steps "
        f"per trial, {len(summary['trials'])} trials ({summary['trials_failed']} failed) in "
        f"{summary['seconds'] / 60:.1f} min.",
        "",
        f"**Best**: {', '.join(f'{SYMBOLS[a].split()[0]} = {v:g}' for a, v in best['params'].items())} "
        f"→ {best['value']:.2f}. Apply it to the ablation with `dvc exp run {apply}`.",
        "",
        "| rank | trial | τ | λ | 𝒯 | " + summary["metric"] + " | steps | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rank, trial in enumerate(summary["trials"], start=1):
        p = trial["params"]
        value = "—" if trial["value"] is None else f"{trial['value']:.2f}"
        note = trial["error"] or ("stopped early (ASHA)" if trial["stopped_early"] else "")
        cells = [str(rank), f"`{trial['trial']}`", *(f"{p.get(a, math.nan):.4g}" for a in SWEPT_AXES), value,
                 str(trial["step"]), note.replace("|", "/")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if any(row["repeats"] > 1 for row in summary["settings"]):
        lines += ["", "Grid settings over repeats (trials that ran every step):", "",
                  "| τ | λ | 𝒯 | mean | std | repeats |", "|---|---|---|---|---|---|"]  # fmt: skip
        for row in summary["settings"]:
            p = row["params"]
            values = " | ".join(f"{p[a]:.4g}" for a in SWEPT_AXES)
            lines.append(f"| {values} | {row['mean']:.2f} | {row['std']:.2f} | {row['repeats']} |")
    lines += ["", f"![{summary['metric']} against each swept parameter](sweep.png)", ""]
    return "\n".join(lines)


def plot(summary: dict[str, Any], log_scale: list[str], path: Path) -> None:
    """One panel per swept axis: each trial's score against its value; the best trial in red."""
    axes_swept = [a for a in SWEPT_AXES if len({t["params"].get(a) for t in summary["trials"]}) > 1]
    axes_swept = axes_swept or list(SWEPT_AXES)
    figure = Figure(figsize=(3.6 * len(axes_swept), 3.2), dpi=120)
    scored = [t for t in summary["trials"] if t["value"] is not None]
    for index, axis in enumerate(axes_swept):
        panel = figure.add_subplot(1, len(axes_swept), index + 1)
        full = [t for t in scored if not t["stopped_early"]]
        early = [t for t in scored if t["stopped_early"]]
        panel.scatter([t["params"][axis] for t in full], [t["value"] for t in full], color="#3366aa",
                      label="all steps")  # fmt: skip
        if early:
            panel.scatter([t["params"][axis] for t in early], [t["value"] for t in early], color="#aaaaaa",
                          marker="x", label="stopped early")  # fmt: skip
        panel.scatter([summary["best"]["params"][axis]], [summary["best"]["value"]], s=120,
                      facecolors="none", edgecolors="#cc3333", label="best")  # fmt: skip
        if axis in log_scale:
            panel.set_xscale("log")
        panel.set_xlabel(PLOT_LABELS[axis])
        if index == 0:
            panel.set_ylabel(f"{summary['metric']} (%)")
            panel.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
