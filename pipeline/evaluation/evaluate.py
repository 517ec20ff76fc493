"""The `evaluate` stage: every model the DAG has produced, on target val, at full label resolution.

Inference runs as Ray tasks, one per shard, each returning a confusion matrix; they are summed (never
averaged per image) and turned into the protocol's mIoU and per-class IoU. The same forward passes give
the target sums of the feature-alignment diagnostic (pipeline/evaluation/alignment.py); its source sums
come from one more set of tasks over the first `evaluate.alignment_source_images` source rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from mlflow.exceptions import MlflowException

from pipeline.atomic import write_json_atomic
from pipeline.config import Config
from pipeline.constants import IGNORE_INDEX, NUM_CLASSES
from pipeline.data.images import decode_image, decode_label
from pipeline.data.shards import shard_paths, verify_shards
from pipeline.data.transforms import image_to_tensor
from pipeline.distributed.tasks import run_tasks
from pipeline.errors import InputError
from pipeline.evaluation.alignment import (
    AlignmentSums,
    alignment_sums,
    feature_alignment,
    merge_sums,
    zero_sums,
)
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
from pipeline.models.configured import load_model
from pipeline.tracking.mlflow_run import Tracker, tracking_available

log = logging.getLogger(__name__)

METRICS = "metrics/evaluate.json"
PLOTS = "plots"


@dataclass(frozen=True)
class ShardEvaluation:
    config: Config
    model_path: str
    shard: str
    keep_predictions: int  # predictions returned for the qualitative panel (first rows of the shard)


@dataclass(frozen=True)
class SourceAlignment:
    config: Config
    model_path: str
    shard: str
    rows: int  # the first rows of the shard that enter the source prototypes


class ModelEvaluation(NamedTuple):
    matrix: ConfusionMatrix
    predictions: list  # (id, uint8 prediction) of the first panel images
    alignment: AlignmentSums | None  # target-val sums; None without the alignment diagnostic


def known_models(config: Config) -> dict[str, Path]:
    """Model name → checkpoint, for every model file the DAG has produced so far (in report order).

    Adapted models are taken from the params' ablation cells, not from a folder glob, so cells dropped
    from params (whose old files may linger) are not evaluated.
    """
    candidates = {
        "source_only": config.resolve("models/warmup.pt"),
        # Normalisation only: the warmup model with target BatchNorm statistics (AdaBN), no training.
        "source_only_target_bn": config.resolve("models/source_only_target_bn.pt"),
        "oracle": config.resolve("models/oracle/oracle.pt"),
    }
    for row in config.ablation.rows:
        for seed in config.ablation.seeds:
            candidates[f"{row}_seed{seed}"] = config.resolve(f"models/adapt/{row}_seed{seed}.pt")
    return {name: path for name, path in candidates.items() if path.is_file()}


@torch.no_grad()
def predict(
    model: torch.nn.Module, image: np.ndarray, label_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train-id prediction [h, w] at the label's resolution (logits upsampled bilinearly), and the
    embedding [1, D, h', w'] of the same forward pass."""
    output = model(image_to_tensor(image)[None], domain="target")
    logits = F.interpolate(output.logits, size=label_size, mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)[0], output.embedding


def evaluate_shard(task: ShardEvaluation) -> dict[str, Any]:
    """One Ray task: confusion matrix (and target alignment sums, if asked) of one model over one shard."""
    torch.set_num_threads(1)
    model = load_model(task.config, task.model_path)
    matrix = ConfusionMatrix(NUM_CLASSES, IGNORE_INDEX)
    with_alignment = task.config.evaluate.alignment_source_images > 0
    sums = zero_sums(model.embedding_dim)
    kept = []
    rows = pq.read_table(task.shard, columns=["id", "image", "label"]).to_pylist()
    for index, row in enumerate(rows):
        label = torch.from_numpy(decode_label(row["label"]).astype(np.int64))
        prediction, embedding = predict(model, decode_image(row["image"]), tuple(label.shape))
        matrix.update(prediction, label)
        if with_alignment:
            sums = merge_sums([sums, alignment_sums(embedding, label[None])])
        if index < task.keep_predictions:
            kept.append((row["id"], prediction.numpy().astype(np.uint8)))
    return {"matrix": matrix.to_dict(), "predictions": kept, "alignment": sums if with_alignment else None}


def evaluate_model(config: Config, model_path: Path, panel_images: int) -> ModelEvaluation:
    folder = config.shards_root / "target_val"
    shards = shard_paths(folder, verify_shards(folder))
    tasks = [ShardEvaluation(config, str(model_path), str(shard), panel_images if i == 0 else 0)
             for i, shard in enumerate(shards)]  # fmt: skip
    results = run_tasks(evaluate_shard, tasks, f"evaluate {model_path.stem}", unit="shard")
    matrix = ConfusionMatrix.merge_all(ConfusionMatrix.from_dict(r["matrix"]) for r in results)
    parts = [r["alignment"] for r in results if r["alignment"] is not None]
    return ModelEvaluation(matrix, results[0]["predictions"], merge_sums(parts) if parts else None)


def source_alignment_shard(task: SourceAlignment) -> AlignmentSums:
    """One Ray task: source alignment sums of one model over the first `task.rows` rows of one shard."""
    torch.set_num_threads(1)
    model = load_model(task.config, task.model_path)
    sums = zero_sums(model.embedding_dim)
    rows = pq.read_table(task.shard, columns=["id", "image", "label"]).slice(0, task.rows).to_pylist()
    for row in rows:
        if row["label"] is None:
            raise InputError(f"{task.shard}: source row {row['id']} has no label (expected labelled rows)")
        label = torch.from_numpy(decode_label(row["label"]).astype(np.int64))
        with torch.no_grad():
            embedding = model(image_to_tensor(decode_image(row["image"]))[None], domain="source").embedding
        sums = merge_sums([sums, alignment_sums(embedding, label[None])])
    return sums


def source_alignment_rows(config: Config) -> list[tuple[Path, int]]:
    """(shard, rows to use) covering the first `evaluate.alignment_source_images` source rows, in shard
    order; fewer when the source split is smaller."""
    folder = config.shards_root / "source"
    manifest = verify_shards(folder)
    wanted = remaining = config.evaluate.alignment_source_images
    plan = []
    for path, entry in zip(shard_paths(folder, manifest), manifest.shards, strict=True):
        if remaining <= 0:
            break
        plan.append((path, min(remaining, entry["rows"])))
        remaining -= plan[-1][1]
    if remaining > 0:
        log.warning("evaluate.alignment_source_images = %d, but %s holds %d rows: using them all",
                    wanted, folder, wanted - remaining)  # fmt: skip
    return plan


def source_alignment(config: Config, model_path: Path, plan: list[tuple[Path, int]]) -> AlignmentSums:
    tasks = [SourceAlignment(config, str(model_path), str(shard), rows) for shard, rows in plan]
    weights = [rows for _, rows in plan]
    parts = run_tasks(source_alignment_shard, tasks, f"source features {model_path.stem}", "image", weights)
    return merge_sums(parts)


def panel_inputs(config: Config, count: int) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    first = shard_paths(config.shards_root / "target_val")[0]
    rows = pq.read_table(first, columns=["id", "image", "label"]).to_pylist()[:count]
    return (
        [r["id"] for r in rows],
        [decode_image(r["image"]) for r in rows],
        [decode_label(r["label"]) for r in rows],
    )


def log_to_cell_run(config: Config, model_name: str, metrics: dict[str, Any]) -> None:
    """Final mIoU and per-class IoU of an adapted model, into its ablation cell's own MLflow run."""
    cell_metrics = config.resolve(f"metrics/adapt/{model_name}.json")
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


def evaluate(config: Config) -> dict[str, Any]:
    tracking_available(config)  # fail fast, before any inference, if the store is required and down
    models = known_models(config)
    if not models:
        raise FileNotFoundError("no trained model found (models/warmup.pt): run the `warmup` stage first")
    plots = config.resolve(PLOTS)
    plots.mkdir(parents=True, exist_ok=True)
    source = config.data.source.name
    tracker = Tracker(config, "stages", f"{config.name}_evaluate_seed{config.seed}", "evaluate")
    alignment_plan = source_alignment_rows(config) if config.evaluate.alignment_source_images else []
    results, predictions, iou_rows = {}, {}, []
    for name, path in models.items():
        matrix, kept, target_sums = evaluate_model(config, path, config.evaluate.panel_images)
        results[name] = protocol_metrics(matrix, source)
        metrics = {f"{name}.{key}": value for key, value in results[name].items() if isinstance(value, float)}
        if alignment_plan and target_sums is not None:
            alignment = feature_alignment(source_alignment(config, path, alignment_plan), target_sums)
            results[name]["feature_alignment"] = alignment
            metrics |= {f"{name}.alignment.{key}": value for key, value in alignment["mean"].items()
                        if value is not None}  # fmt: skip
            feature_alignment_plot(alignment["per_class"], plots / f"feature_alignment_{name}.png",
                                   title=f"{name}: feature alignment on target val")  # fmt: skip
        predictions[name] = [prediction for _, prediction in kept]
        iou_rows += iou_plot_rows(results[name]["per_class_iou"], model=name)
        confusion_matrix_plot(matrix, plots / f"confusion_{name}.png", title=f"{name} on target val")
        write_plot_rows(confusion_plot_rows(matrix), plots / f"confusion_{name}.json")
        tracker.log_metrics(metrics)
        log_to_cell_run(config, name, results[name])
        log.info("%s: mIoU %.2f", name, results[name]["miou"] or float("nan"))
    write_plot_rows(iou_rows, plots / "per_class_iou.json")
    per_class_iou_plot({name: r["per_class_iou"] for name, r in results.items()}, plots / "per_class_iou.png")
    alignment_means = {name: r["feature_alignment"]["mean"] for name, r in results.items()
                       if "feature_alignment" in r}  # fmt: skip
    if alignment_means:
        feature_alignment_summary_plot(alignment_means, plots / "feature_alignment.png")
    if config.evaluate.panel_images:
        ids, images, truths = panel_inputs(config, config.evaluate.panel_images)
        save_panel(qualitative_panel(images, truths, predictions, row_titles=ids), plots / "qualitative.png")
    write_json_atomic(config.resolve(METRICS), results)
    for artifact in sorted(plots.glob("*.png")):
        tracker.log_artifact(artifact, "plots")
    tracker.log_artifact(config.resolve(METRICS))
    tracker.finish()
    return results
