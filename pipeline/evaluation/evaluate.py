"""Models on target val at full label resolution, as Ray tasks (the `evaluate` stage: stages/evaluate.py).

Inference runs as Ray tasks, one per model and shard, each returning a confusion matrix; a model's are
summed (never averaged per image) and turned into the protocol's mIoU and per-class IoU. The same forward
passes give the target sums of the feature-alignment diagnostic (pipeline/evaluation/alignment.py); its
source sums come from one more task per model and source shard over the first
`evaluate.alignment_source_images` source rows. Every model's tasks go out as one set, so the cores stay
busy across models instead of idling at the end of each model's uneven shards.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pipeline import artifacts
from pipeline.config import Config
from pipeline.constants import IGNORE_INDEX, NUM_CLASSES
from pipeline.data.shards import read_rows, shard_paths, verify_shards
from pipeline.data.transforms import image_to_tensor
from pipeline.distributed.tasks import run_tasks
from pipeline.errors import InputError
from pipeline.evaluation.alignment import (
    AlignmentSums,
    alignment_sums,
    merge_sums,
    zero_sums,
)
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.prediction import predict
from pipeline.models.configured import load_model

log = logging.getLogger(__name__)


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
    source_alignment: AlignmentSums | None = None  # source sums; None when no source rows were planned


def evaluate_shard(task: ShardEvaluation) -> dict[str, Any]:
    """One Ray task: confusion matrix (and target alignment sums, if asked) of one model over one shard."""
    torch.set_num_threads(1)
    model = load_model(task.config, task.model_path)
    matrix = ConfusionMatrix(NUM_CLASSES, IGNORE_INDEX)
    with_alignment = task.config.evaluate.alignment_source_images > 0
    sums = zero_sums(model.embedding_dim)
    kept = []
    for index, row in enumerate(read_rows(Path(task.shard))):
        label = torch.from_numpy(row.label.astype(np.int64))
        prediction, embedding = predict(model, row.image, tuple(label.shape))
        matrix.update(prediction, label)
        if with_alignment:
            sums = merge_sums([sums, alignment_sums(embedding, label[None])])
        if index < task.keep_predictions:
            kept.append((row.id, prediction.numpy().astype(np.uint8)))
    return {"matrix": matrix.to_dict(), "predictions": kept, "alignment": sums if with_alignment else None}


def evaluation_task(task: ShardEvaluation | SourceAlignment) -> dict[str, Any] | AlignmentSums:
    """One Ray task of `evaluate_models`: a target-val shard or a source alignment shard."""
    if isinstance(task, SourceAlignment):
        return source_alignment_shard(task)
    return evaluate_shard(task)


def evaluate_models(
    config: Config,
    model_paths: Mapping[str, Path],
    panel_images: int,
    alignment_plan: Sequence[tuple[Path, int]] = (),
) -> dict[str, ModelEvaluation]:
    """Every model on target val (and on the planned source rows), as one set of Ray tasks.

    Each model's parts are merged in its own task order, so its figures are those of evaluating it alone.
    """
    folder = config.shards_root / artifacts.TARGET_VAL
    manifest = verify_shards(folder)
    shards = shard_paths(folder, manifest)
    tasks: list[ShardEvaluation | SourceAlignment] = []
    weights: list[int] = []
    for path in model_paths.values():
        for index, (shard, entry) in enumerate(zip(shards, manifest.shards, strict=True)):
            tasks.append(ShardEvaluation(config, str(path), str(shard), panel_images if index == 0 else 0))
            weights.append(entry["rows"])
        for shard, rows in alignment_plan:
            tasks.append(SourceAlignment(config, str(path), str(shard), rows))
            weights.append(rows)
    description = f"evaluate {len(model_paths)} model{'s' if len(model_paths) != 1 else ''}"
    results = iter(run_tasks(evaluation_task, tasks, description, "image", weights))
    evaluations = {}
    for name in model_paths:
        target = [next(results) for _ in shards]
        source = [next(results) for _ in alignment_plan]
        matrix = ConfusionMatrix.merge_all(ConfusionMatrix.from_dict(r["matrix"]) for r in target)
        parts = [r["alignment"] for r in target if r["alignment"] is not None]
        evaluations[name] = ModelEvaluation(
            matrix,
            target[0]["predictions"],
            merge_sums(parts) if parts else None,
            merge_sums(source) if source else None,
        )
    return evaluations


def evaluate_model(config: Config, model_path: Path, panel_images: int) -> ModelEvaluation:
    """One model on target val (no source alignment sums)."""
    return evaluate_models(config, {model_path.stem: model_path}, panel_images)[model_path.stem]


def source_alignment_shard(task: SourceAlignment) -> AlignmentSums:
    """One Ray task: source alignment sums of one model over the first `task.rows` rows of one shard."""
    torch.set_num_threads(1)
    model = load_model(task.config, task.model_path)
    sums = zero_sums(model.embedding_dim)
    for row in read_rows(Path(task.shard), limit=task.rows):
        if row.label is None:
            raise InputError(f"{task.shard}: source row {row.id} has no label (expected labelled rows)")
        label = torch.from_numpy(row.label.astype(np.int64))
        with torch.no_grad():
            embedding = model(image_to_tensor(row.image)[None], domain="source").embedding
        sums = merge_sums([sums, alignment_sums(embedding, label[None])])
    return sums


def source_alignment_rows(config: Config) -> list[tuple[Path, int]]:
    """(shard, rows to use) covering the first `evaluate.alignment_source_images` source rows, in shard
    order; fewer when the source split is smaller."""
    folder = config.shards_root / artifacts.SOURCE
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
