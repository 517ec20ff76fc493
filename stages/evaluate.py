"""DVC stage `evaluate`: every model the DAG has produced, on target val, at full label resolution.

All models are scored by the library in one set of Ray tasks (pipeline/evaluation/evaluate.py: confusion
matrix and, when `evaluate.alignment_source_images` > 0, the feature-alignment diagnostic); this stage
writes metrics/evaluate.json, plots/ (per-class IoU, confusion matrices, alignment, a qualitative panel)
and metrics/label_coverage.json (which learnable classes the static labels reach: the oracle's IoU judges
what is learnable, metrics/pseudo_static.json what the labels reach), and logs them to MLflow: the
stage's run, and each adapted model's final figures to its cell's run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException

from pipeline import artifacts
from pipeline.atomic import write_json_atomic
from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.data.shards import read_rows, shard_paths
from pipeline.evaluation.alignment import feature_alignment
from pipeline.evaluation.coverage import coverage_metrics, label_coverage
from pipeline.evaluation.evaluate import ModelEvaluation, evaluate_models, source_alignment_rows
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.panels import qualitative_panel, save_panel
from pipeline.evaluation.plots import (
    confusion_matrix_plot,
    confusion_plot_rows,
    feature_alignment_plot,
    feature_alignment_summary_plot,
    iou_plot_rows,
    per_class_iou_plot,
    write_plot_rows,
)
from pipeline.evaluation.protocols import protocol_metrics
from pipeline.tracking.mlflow_run import Tracker, tracking_available

log = logging.getLogger("stages.evaluate")


def known_models(config: Config) -> dict[str, Path]:
    """Model name → checkpoint, for every model file the DAG has produced so far (in report order).

    Adapted models are taken from the params' ablation cells, not from a folder glob, so cells dropped
    from params (whose old files may linger) are not evaluated.
    """
    candidates = {
        "source_only": config.resolve(artifacts.WARMUP_MODEL),
        # Normalisation only: the warmup model with target BatchNorm statistics (AdaBN), no training.
        "source_only_target_bn": config.resolve(artifacts.NORMALISATION_ONLY_MODEL),
        "oracle": config.resolve(artifacts.ORACLE_MODEL),
    }
    for row in config.ablation.rows:
        for seed in config.ablation.seeds:
            candidates[artifacts.cell_name(row, seed)] = config.resolve(artifacts.cell_model(row, seed))
    return {name: path for name, path in candidates.items() if path.is_file()}


def panel_inputs(config: Config, count: int) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    rows = list(read_rows(shard_paths(config.shards_root / artifacts.TARGET_VAL)[0], limit=count))
    return [row.id for row in rows], [row.image for row in rows], [row.label for row in rows]


def log_to_cell_run(config: Config, model_name: str, metrics: dict[str, Any]) -> None:
    """Final mIoU and per-class IoU of an adapted model, into its ablation cell's own MLflow run."""
    cell_metrics = config.resolve(f"{artifacts.CELL_METRICS}/{model_name}.json")
    if not cell_metrics.is_file():
        return
    run_id = json.loads(cell_metrics.read_text()).get("mlflow_run_id")
    if not run_id:
        return
    values = {f"final.{key}": value for key, value in metrics.items() if isinstance(value, float)}
    values |= {f"final.iou.{name}": iou for name, iou in metrics["per_class_iou"].items() if iou is not None}
    try:
        Tracker(config, "ablation", model_name, "evaluate", run_id=run_id).log_metrics(values)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        # The cell ran against another store (tracking.uri changed, or its metrics file was copied from
        # another project): its evaluation is still written to metrics/evaluate.json.
        log.warning(
            "%s: its MLflow run %s is not in %s (did tracking.uri change since the cell ran?); "
            "its final metrics are not logged to that run",
            model_name, run_id, config.tracking_uri,
        )  # fmt: skip


def model_metrics(evaluation: ModelEvaluation, source_name: str) -> dict[str, Any]:
    """One model's metrics: protocol mIoU, per-class IoU and, when it was measured, feature alignment."""
    metrics = protocol_metrics(evaluation.matrix, source_name)
    if evaluation.alignment is not None and evaluation.source_alignment is not None:
        metrics["feature_alignment"] = feature_alignment(evaluation.source_alignment, evaluation.alignment)
    return metrics


def flat_metrics(name: str, metrics: dict[str, Any]) -> dict[str, float]:
    """A model's figures as MLflow metrics `<model>.<key>`."""
    flat = {f"{name}.{key}": value for key, value in metrics.items() if isinstance(value, float)}
    if "feature_alignment" in metrics:
        means = metrics["feature_alignment"]["mean"]
        flat |= {f"{name}.alignment.{key}": value for key, value in means.items() if value is not None}
    return flat


def write_model_plots(plots: Path, name: str, metrics: dict[str, Any], matrix: ConfusionMatrix) -> None:
    if "feature_alignment" in metrics:
        per_class = metrics["feature_alignment"]["per_class"]
        feature_alignment_plot(per_class, plots / f"feature_alignment_{name}.png",
                               title=f"{name}: feature alignment on target val")  # fmt: skip
    confusion_matrix_plot(matrix, plots / f"confusion_{name}.png", title=f"{name} on target val")
    write_plot_rows(confusion_plot_rows(matrix), plots / f"confusion_{name}.json")


def write_summary_plots(
    config: Config, plots: Path, results: dict[str, dict], predictions: dict[str, list]
) -> None:
    iou_rows = [row for name, r in results.items() for row in iou_plot_rows(r["per_class_iou"], model=name)]
    write_plot_rows(iou_rows, plots / "per_class_iou.json")
    per_class_iou_plot({name: r["per_class_iou"] for name, r in results.items()}, plots / "per_class_iou.png")
    alignment_means = {name: r["feature_alignment"]["mean"] for name, r in results.items()
                       if "feature_alignment" in r}  # fmt: skip
    if alignment_means:
        feature_alignment_summary_plot(alignment_means, plots / "feature_alignment.png")
    if config.evaluate.panel_images:
        ids, images, truths = panel_inputs(config, config.evaluate.panel_images)
        save_panel(qualitative_panel(images, truths, predictions, row_titles=ids), plots / "qualitative.png")


def static_label_coverage(config: Config, results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """`label_coverage` of the static labels (None before the `pseudo_label` stage has run)."""
    labels = config.resolve(artifacts.PSEUDO_LABEL_METRICS)
    if not labels.is_file():
        return None
    oracle = results.get("oracle")
    return label_coverage(json.loads(labels.read_text())["per_class"], oracle and oracle["per_class_iou"])


def evaluate(config: Config) -> dict[str, Any]:
    tracking_available(config)  # fail fast, before any inference, if the store is required and down
    models = known_models(config)
    if not models:
        raise FileNotFoundError(
            f"no trained model found ({artifacts.WARMUP_MODEL}): run the `warmup` stage first"
        )
    plots = config.resolve(artifacts.PLOTS)
    plots.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(config, "stages", f"{config.name}_evaluate_seed{config.seed}", "evaluate")
    alignment_plan = source_alignment_rows(config) if config.evaluate.alignment_source_images else []
    evaluations = evaluate_models(config, models, config.evaluate.panel_images, alignment_plan)
    results, predictions = {}, {}
    for name, evaluation in evaluations.items():
        results[name] = model_metrics(evaluation, config.data.source.name)
        predictions[name] = [prediction for _, prediction in evaluation.predictions]
        write_model_plots(plots, name, results[name], evaluation.matrix)
        tracker.log_metrics(flat_metrics(name, results[name]))
        log_to_cell_run(config, name, results[name])
        log.info("%s: mIoU %.2f", name, results[name]["miou"] or float("nan"))
    write_summary_plots(config, plots, results, predictions)
    metrics = config.resolve(artifacts.EVALUATE_METRICS)
    write_json_atomic(metrics, results)
    coverage = static_label_coverage(config, results)
    write_json_atomic(config.resolve(artifacts.LABEL_COVERAGE), coverage or {"static_labels": None})
    if coverage is not None:
        tracker.log_metrics(coverage_metrics(coverage))
        tracker.log_artifact(config.resolve(artifacts.LABEL_COVERAGE))
    for artifact in sorted(plots.glob("*.png")):
        tracker.log_artifact(artifact, "plots")
    tracker.log_artifact(metrics)
    tracker.finish()
    return results


if __name__ == "__main__":
    run_stage("evaluate", evaluate)
