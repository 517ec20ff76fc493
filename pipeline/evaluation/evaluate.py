"""Models on target val at full label resolution, as Ray tasks (the `evaluate` stage: stages/evaluate.py).

Inference runs as Ray tasks (pipeline/evaluation/scoring.py), one per model and shard, where
`inference.gpus_per_task` says (pipeline/distributed/devices.py: a CPU, one image per forward pass, or
the GPU Ray gave the task, `inference.batch_size` images per pass), each returning a confusion matrix; a
model's are summed (never averaged per image) and turned into the protocol's mIoU and per-class IoU. The
same forward passes give the target sums of the feature-alignment diagnostic
(pipeline/evaluation/alignment.py); its source sums come from one more task per model and source shard
over the first `evaluate.alignment_source_images` source rows. Every model's tasks go out as one set, so
the cores stay busy across models instead of idling at the end of each model's uneven shards.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pipeline import artifacts
from pipeline.config import Config
from pipeline.data.shards import shard_paths, verify_shards
from pipeline.distributed.devices import images_per_pass, inference_device, inference_gpus
from pipeline.distributed.tasks import run_tasks
from pipeline.evaluation.alignment import AlignmentSums, merge_sums
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.scoring import (
    ShardEvaluation,
    SourceAlignment,
    evaluate_shard,
    source_alignment_shard,
)

log = logging.getLogger(__name__)


class ModelEvaluation(NamedTuple):
    matrix: ConfusionMatrix
    predictions: list  # (id, uint8 prediction) of the first panel images
    alignment: AlignmentSums | None  # target-val sums; None without the alignment diagnostic
    source_alignment: AlignmentSums | None = None  # source sums; None when no source rows were planned


def evaluation_task(task: ShardEvaluation | SourceAlignment) -> dict[str, Any] | AlignmentSums:
    """One Ray task of `evaluate_models` (a target-val shard or a source alignment shard), on the device Ray
    gave the task (the CPU when it asked for no GPU)."""
    device = inference_device(task.config)
    if isinstance(task, SourceAlignment):
        return source_alignment_shard(task, device, images_per_pass(task.config, device))
    return evaluate_shard(task, device, images_per_pass(task.config, device))


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
    gpus = inference_gpus(config)
    results = iter(run_tasks(evaluation_task, tasks, description, "image", weights, gpus_per_task=gpus))
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
