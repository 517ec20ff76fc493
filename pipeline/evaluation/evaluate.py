"""One model on target val at full label resolution, as Ray tasks (the `evaluate` stage: stages/evaluate.py).

Inference runs as Ray tasks, one per shard, each returning a confusion matrix; they are summed (never
averaged per image) and turned into the protocol's mIoU and per-class IoU. The same forward passes give
the target sums of the feature-alignment diagnostic (pipeline/evaluation/alignment.py); its source sums
come from one more set of tasks over the first `evaluate.alignment_source_images` source rows.
"""

from __future__ import annotations

import logging
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


def evaluate_model(config: Config, model_path: Path, panel_images: int) -> ModelEvaluation:
    folder = config.shards_root / artifacts.TARGET_VAL
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


def source_alignment(config: Config, model_path: Path, plan: list[tuple[Path, int]]) -> AlignmentSums:
    tasks = [SourceAlignment(config, str(model_path), str(shard), rows) for shard, rows in plan]
    weights = [rows for _, rows in plan]
    parts = run_tasks(source_alignment_shard, tasks, f"source features {model_path.stem}", "image", weights)
    return merge_sums(parts)
