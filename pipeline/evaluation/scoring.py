"""One shard through one model on one device: the work of each task of `evaluate` (pipeline/evaluation/
evaluate.py runs these as Ray tasks, on the device Ray gave each task).

No Ray here: benchmarks/gpu_check.py runs the very same functions in process on a GPU machine where Ray is
not installed. Images go through the model `batch_size` at a time; everything scored is per image (each
prediction upsampled to its own label, each image's alignment sums), so a batch of one is the arithmetic
of every CPU run so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import Config
from pipeline.constants import IGNORE_INDEX, NUM_CLASSES
from pipeline.data.shards import read_rows
from pipeline.data.transforms import image_batches
from pipeline.errors import InputError
from pipeline.evaluation.alignment import AlignmentSums, alignment_sums, merge_sums, zero_sums
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.prediction import predict_batch
from pipeline.models.configured import load_model


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


def evaluate_shard(task: ShardEvaluation, device: torch.device, batch_size: int) -> dict[str, Any]:
    """Confusion matrix (and target alignment sums, if asked) of one model over one shard, the model on
    `device`, `batch_size` images per forward pass; returns CPU values only (the driver may have no GPU)."""
    torch.set_num_threads(1)
    model = load_model(task.config, task.model_path).to(device)
    matrix = ConfusionMatrix(NUM_CLASSES, IGNORE_INDEX)
    with_alignment = task.config.evaluate.alignment_source_images > 0
    sums = zero_sums(model.embedding_dim)
    kept = []
    seen = 0
    for rows, images in image_batches(read_rows(Path(task.shard)), batch_size):
        labels = [torch.from_numpy(row.label.astype(np.int64)).to(device) for row in rows]
        predictions, embedding = predict_batch(
            model, images.to(device), [tuple(label.shape) for label in labels]
        )
        for offset, (row, label, prediction) in enumerate(zip(rows, labels, predictions, strict=True)):
            matrix.update(prediction, label)
            if with_alignment:
                sums = merge_sums([sums, alignment_sums(embedding[offset : offset + 1], label[None])])
            if seen < task.keep_predictions:
                kept.append((row.id, prediction.cpu().numpy().astype(np.uint8)))
            seen += 1
    return {"matrix": matrix.to_dict(), "predictions": kept, "alignment": sums if with_alignment else None}


def source_alignment_shard(task: SourceAlignment, device: torch.device, batch_size: int) -> AlignmentSums:
    """Source alignment sums of one model over the first `task.rows` rows of one shard, on `device`."""
    torch.set_num_threads(1)
    model = load_model(task.config, task.model_path).to(device)
    sums = zero_sums(model.embedding_dim)
    for rows, images in image_batches(read_rows(Path(task.shard), limit=task.rows), batch_size):
        unlabelled = next((row for row in rows if row.label is None), None)
        if unlabelled is not None:
            raise InputError(
                f"{task.shard}: source row {unlabelled.id} has no label (expected labelled rows)"
            )
        with torch.no_grad():
            embedding = model(images.to(device), domain="source").embedding
        for offset, row in enumerate(rows):
            label = torch.from_numpy(row.label.astype(np.int64)).to(device)
            sums = merge_sums([sums, alignment_sums(embedding[offset : offset + 1], label[None])])
    return sums
