"""DVC stage `adapt` (a matrix over ablation rows × seeds): one DASS ablation cell on Ray Train.

Each round is a Ray Train run of the adaptation worker (pipeline/training/adapt.py). With
`adapt.rounds` > 1 the cell is CRST-style self-training: after each round of `adapt.steps` steps the
current model relabels target train at a grown CBST portion (pipeline/labelling.py), and the next round
continues from the previous round's model, memory, diagnostics and MLflow run. Writes the cell's model
(also logged to its MLflow run, with the params that rebuild it) and its metrics JSON.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline import artifacts
from pipeline.atomic import write_json_atomic
from pipeline.cli import run_stage
from pipeline.config import Config, ConfigError, to_params
from pipeline.constants import CLASS_NAMES
from pipeline.distributed.train import checkpoint_state, fit
from pipeline.labelling import label_target_train
from pipeline.models.pretrained import write_checkpoint
from pipeline.pseudo_labels.diagnostics import matched_density_accuracy, summarise_label_counts
from pipeline.tracking.mlflow_run import Tracker, tracking_available
from pipeline.training.adapt import AdaptJob, adapt_worker, round_portion
from pipeline.training.adaptation_losses import ROWS

# Scratch space of multi-round cells under the shards root (workers read labels from there).
ROUNDS_FOLDER = "pseudo_rounds"
MODEL_ARTIFACTS = "model"  # the MLflow artifact folder of a cell's model and params


def adapt(config: Config, row: str, seed: int, crash_once: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one ablation cell; write models/adapt/<row>_seed<seed>.pt and its metrics JSON."""
    if row not in ROWS:
        raise ConfigError(f"unknown ablation row {row!r}: expected one of {', '.join(ROWS)}")
    tracking_available(config)  # fail fast, before any training, if the store is required and down
    started = time.perf_counter()
    cell = artifacts.cell_name(row, seed)
    scratch = config.shards_root / ROUNDS_FOLDER / cell
    shutil.rmtree(scratch, ignore_errors=True)  # leftovers of an interrupted earlier attempt
    job = AdaptJob(config, row, seed)
    relabelled: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    peak: dict[str, float] = {}  # rank 0's peak memory, the largest over rounds (each a new Ray Train run)
    for round_index in range(config.adapt.rounds):
        if round_index:
            job = next_round(config, job, state, scratch, relabelled)
        name = f"{config.name}_{cell}_adapt_r{round_index}_{time.strftime('%Y%m%d-%H%M%S')}"
        state = checkpoint_state(fit(adapt_worker, {"job": job, "crash_once": crash_once}, config,
                                     run_name=name))  # fmt: skip
        peak = {key: max(value, peak.get(key, 0.0)) for key, value in state.get("peak_memory", {}).items()}
    output = config.resolve(artifacts.cell_model(row, seed))
    output.parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint(state["model"], output)
    log_model(config, row, seed, output, state["mlflow_run_id"] or None)
    shutil.rmtree(scratch, ignore_errors=True)
    labels = {kind: summarise_label_counts(sums, CLASS_NAMES) for kind, sums in state["label_counts"].items()}
    static_density = labels["static"]["density"]
    static_density = math.nan if static_density is None else static_density
    matched = {kind: matched_density_accuracy(histogram, static_density)
               for kind, histogram in state["cosine_histograms"].items()}  # fmt: skip
    quantiles = [q / max(state["cosine_total"][3], 1) for q in state["cosine_total"][:3]]
    cosine = {f"p{p}": round(q, 4) for p, q in zip((10, 50, 90), quantiles, strict=True)}
    summary = {"row": row, "seed": seed, "steps": int(state["step"]) * config.adapt.rounds,
               "rounds": config.adapt.rounds, "relabelled": relabelled, "pseudo_labels": labels,
               "pseudo_labels_matched_density": matched,
               "best_cosine_quantiles": cosine, "mlflow_run_id": state["mlflow_run_id"], **peak,
               "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    metrics = config.resolve(artifacts.cell_metrics(row, seed))
    metrics.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(metrics, summary)
    return summary


def log_model(config: Config, row: str, seed: int, model_file: Path, run_id: str | None) -> None:
    """The cell's model, and the params that rebuild it, as artifacts `model/` of its MLflow run: fetched
    from the MLflow UI, `python -m stages.predict --params params.yaml --model <row>_seed<k>.pt` uses
    them as they are."""
    if run_id is None:
        return
    tracker = Tracker(config, "ablation", artifacts.cell_name(row, seed), "adapt", run_id=run_id)
    with tempfile.TemporaryDirectory() as folder:
        params = Path(folder) / "params.yaml"
        params.write_text(yaml.safe_dump(to_params(config), sort_keys=False))
        tracker.log_artifact(params, MODEL_ARTIFACTS)
    tracker.log_artifact(model_file, MODEL_ARTIFACTS)


def next_round(
    config: Config, job: AdaptJob, state: dict[str, Any], scratch: Path, relabelled: list[dict[str, Any]]
) -> AdaptJob:
    """Relabel target train with the model of the round just finished; the job of the next round."""
    round_index = job.round + 1
    scratch.mkdir(parents=True, exist_ok=True)
    state_file = scratch / f"round{job.round}_state.pt"
    write_checkpoint(state, state_file)
    model_file = scratch / f"round{job.round}_model.pt"
    write_checkpoint(state["model"], model_file)
    split = f"{ROUNDS_FOLDER}/{scratch.name}/round{round_index}"
    quality = label_target_train(config, model_file, split, round_portion(config.cbst, round_index))
    keys = ("portion", "density", "accuracy")
    relabelled.append({"round": round_index} | {key: quality[key] for key in keys})
    run_id = state["mlflow_run_id"] or None
    tracker = Tracker(config, "ablation", "", "adapt", run_id=run_id, active=run_id is not None)
    metrics = {f"relabel.{key}": float(quality[key] or 0.0) for key in keys}
    tracker.log_metrics(metrics, round_index * config.adapt.steps)
    return dataclasses.replace(job, round=round_index, label_split=split, previous_state=str(state_file))


if __name__ == "__main__":
    run_stage("adapt", adapt, options={"--row": str, "--seed": int})
