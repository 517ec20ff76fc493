"""The held-out slice of target train that a sweep selects hyper-parameters on.

Trials train on target train minus the slice and are scored on it, so the evaluation split (target
val) never takes part in a choice. The slice is every k-th Parquet row group (k = round(1/fraction)),
which spreads it over every city and shard; its labels are either the static CBST pseudo labels (no
target ground truth is read) or the target-train ground truth (an oracle upper bound), by param.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.config import Config, ConfigError
from pipeline.constants import IGNORE_INDEX, NUM_CLASSES
from pipeline.data.loader import ReadUnit, ShardStream, read_units
from pipeline.distributed.collectives import all_reduce_sum
from pipeline.distributed.worker_api import WorkerContext
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.protocols import protocol_metrics, to_percent
from pipeline.models.batchnorm import modes_restored


@dataclass(frozen=True)
class HoldoutSplit:
    train: list[ReadUnit]
    holdout: list[ReadUnit]

    @property
    def holdout_images(self) -> int:
        return sum(unit.rows for unit in self.holdout)


def split_holdout(units: list[ReadUnit], fraction: float) -> HoldoutSplit:
    """Every k-th row group (k = max(2, round(1/fraction))) is held out, the rest trains."""
    every = max(2, round(1 / fraction))
    holdout = units[every - 1 :: every]
    train = [unit for index, unit in enumerate(units) if index % every != every - 1]
    if not holdout or not train:
        raise ConfigError(
            f"sweep.holdout_fraction = {fraction} holds out {len(holdout)} of the {len(units)} row groups "
            "of target train: both the held-out slice and the rest must be non-empty "
            "(raise the fraction or lower preprocess.rows_per_row_group)"
        )
    return HoldoutSplit(train, holdout)


def target_train_holdout(config: Config) -> HoldoutSplit:
    return split_holdout(read_units(config.shards_root / "target_train"), config.sweep.holdout_fraction)


def holdout_stream(config: Config, units: list[ReadUnit], labels: str, label_split: str,
                   context: WorkerContext) -> ShardStream:  # fmt: skip
    """This worker's share of the slice, in order, with pseudo labels (from `label_split`) or truth."""
    label_folder = config.shards_root / label_split if labels == "pseudo" else None
    return ShardStream(units, rank=context.rank, world_size=context.world_size, endless=False,
                       label_folder=label_folder)  # fmt: skip


@torch.no_grad()
def holdout_confusion(model: torch.nn.Module, stream: ShardStream, device: torch.device) -> ConfusionMatrix:
    """Confusion matrix of `model` (a segmentor, target domain) over the slice, summed over all workers.

    Every worker must call this (the counts are all-reduced). Predictions are made on the whole
    preprocessed image and upsampled to the label, as the evaluate stage does.
    """
    with modes_restored(model):  # adaptation keeps BatchNorm in eval mode: restore each module's own
        model.eval()
        return _holdout_confusion(model, stream, device)


def _holdout_confusion(model: torch.nn.Module, stream: ShardStream, device: torch.device) -> ConfusionMatrix:
    matrix = ConfusionMatrix(NUM_CLASSES, IGNORE_INDEX)
    for sample in stream:
        image = sample["image"][None].to(device)
        label = sample["label"].to(device)
        logits = model(image, domain="target").logits
        logits = F.interpolate(logits, size=tuple(label.shape), mode="bilinear", align_corners=False)
        matrix.update(logits.argmax(dim=1)[0].cpu(), label.cpu())
    matrix.matrix = all_reduce_sum(matrix.matrix)  # every rank scores the whole held-out slice
    return matrix


def holdout_scores(matrix: ConfusionMatrix, source_name: str) -> dict[str, float]:
    """`holdout.miou` (headline protocol) and `holdout.pixel_accuracy`, in percent; 0 when undefined
    (no labelled pixel), so a trial can still be ranked and stopped."""
    miou = protocol_metrics(matrix, source_name)["miou"]
    accuracy = to_percent(matrix.pixel_accuracy())
    return {"holdout.miou": miou or 0.0, "holdout.pixel_accuracy": accuracy or 0.0}
