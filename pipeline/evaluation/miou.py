"""Confusion matrix over a whole split, per-class IoU and mIoU.

The convention is the Cityscapes benchmark's and detectron2's `SemSegEvaluator`: one [C, C] count
matrix is accumulated with `bincount` over every pixel of the split (never an average of per-image
scores), rows are ground truth, columns are predictions, and

    IoU(c) = TP(c) / (TP(c) + FP(c) + FN(c))

with TP the diagonal, FP a column sum minus TP and FN a row sum minus TP. A class absent from both
ground truth and prediction has no IoU (NaN) and is left out of the mean; a class present only in the
prediction has IoU 0 and counts. Matrices from several Ray workers or torch.distributed ranks are summed
before any score is read, so the scores do not depend on how the split was sharded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from pipeline.constants import IGNORE_INDEX

LabelMap = torch.Tensor | np.ndarray


def _as_tensor(value: LabelMap, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise ValueError(
            f"{name}: expected integer class ids, got dtype {tensor.dtype} "
            "(pass logits.argmax(dim=1), not the logits)"
        )
    return tensor


class ConfusionMatrix:
    """Pixel counts `matrix[t, p]` of ground-truth class t predicted as class p, int64 [C, C].

    The matrix lives on the device of the last `update` inputs (CPU until then); the scores
    (`iou`, `miou`, `pixel_accuracy`) are computed in float64 on the CPU.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a class id (num_classes={num_classes})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    # ---------------------------------------------------------------- accumulation
    def update(self, pred: LabelMap, target: LabelMap) -> ConfusionMatrix:
        """Add the pixels of one batch. `pred` and `target`: integer ids of equal shape (any shape).

        Pixels whose target is `ignore_index` are skipped, whatever their prediction. Every other
        target and prediction must be a class id in [0, num_classes).
        """
        pred = _as_tensor(pred, "prediction")
        target = _as_tensor(target, "target")
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}; "
                "resize the prediction to the label (nearest) before update"
            )
        if pred.device != target.device:
            raise ValueError(f"prediction on {pred.device} but target on {target.device}")
        # int64 before any arithmetic: a uint8 label times num_classes would overflow.
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).long()
        counted = target != self.ignore_index
        target, pred = target[counted], pred[counted]
        c = self.num_classes
        bad = (target < 0) | (target >= c) | (pred < 0) | (pred >= c)
        if bool(bad.any()):  # one device sync per batch; the messages below only run on failure
            bad_targets = torch.unique(target[(target < 0) | (target >= c)]).tolist()
            bad_preds = torch.unique(pred[(pred < 0) | (pred >= c)]).tolist()
            raise ValueError(
                f"ids outside [0, {c}) (ignore_index {self.ignore_index} aside): "
                f"target {bad_targets[:10]}, prediction {bad_preds[:10]}"
            )
        counts = torch.bincount(c * target + pred, minlength=c * c).reshape(c, c)
        self.matrix = self.matrix.to(counts.device) + counts
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix (e.g. from another Ray worker) into this one; returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one"
            )
        if other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge matrices with ignore_index {other.ignore_index} and {self.ignore_index}"
            )
        self.matrix = self.matrix + other.matrix.to(self.matrix.device)
        return self

    @classmethod
    def merge_all(cls, matrices: Iterable[ConfusionMatrix]) -> ConfusionMatrix:
        """A new matrix holding the sum of `matrices` (at least one); the inputs are not modified."""
        matrices = list(matrices)
        if not matrices:
            raise ValueError("merge_all needs at least one ConfusionMatrix")
        total = cls(matrices[0].num_classes, matrices[0].ignore_index)
        total.matrix = total.matrix.to(matrices[0].matrix.device)
        for matrix in matrices:
            total.merge(matrix)
        return total

    def reset(self) -> None:
        self.matrix = torch.zeros_like(self.matrix)

    # ---------------------------------------------------------------- scores
    @property
    def num_pixels(self) -> int:
        """Pixels counted so far (ignored pixels excluded)."""
        return int(self.matrix.sum())

    def iou(self) -> torch.Tensor:
        """Per-class IoU, float64 [C] on the CPU, fractions in [0, 1]; NaN where TP + FP + FN = 0."""
        matrix = self.matrix.cpu().double()
        true_positive = matrix.diagonal()
        false_positive = matrix.sum(dim=0) - true_positive
        false_negative = matrix.sum(dim=1) - true_positive
        union = true_positive + false_positive + false_negative
        return torch.where(union > 0, true_positive / union.clamp(min=1), torch.nan)

    def miou(self, classes: Sequence[int] | None = None) -> float:
        """Mean IoU (fraction 0–1) over `classes` (train ids; all when None), NaN classes excluded.

        NaN when every selected class is NaN (nothing of them in ground truth or prediction).
        """
        iou = self.iou()
        if classes is not None:
            index = torch.as_tensor(list(classes), dtype=torch.long)
            if index.numel() == 0:
                raise ValueError("miou: `classes` is empty")
            if bool(((index < 0) | (index >= self.num_classes)).any()):
                raise ValueError(f"miou: classes {list(classes)} outside [0, {self.num_classes})")
            iou = iou[index]
        return float(torch.nanmean(iou))

    def pixel_accuracy(self) -> float:
        """Fraction of counted pixels predicted correctly; NaN before any pixel was counted."""
        total = self.num_pixels
        return float(self.matrix.trace()) / total if total else math.nan

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (plain ints), e.g. to ship across Ray workers or save to a file."""
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "matrix": self.matrix.cpu().tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ConfusionMatrix:
        """Inverse of `to_dict`; checks the matrix is [num_classes, num_classes] of counts ≥ 0."""
        try:
            result = cls(int(state["num_classes"]), int(state["ignore_index"]))
            matrix = torch.as_tensor(state["matrix"], dtype=torch.int64)
        except KeyError as error:
            raise ValueError(
                f"confusion matrix state lacks key {error}; expected {{num_classes, ignore_index, matrix}}"
            ) from error
        c = result.num_classes
        if matrix.shape != (c, c):
            raise ValueError(
                f"confusion matrix state: matrix shape {tuple(matrix.shape)}, expected ({c}, {c})"
            )
        if bool((matrix < 0).any()):
            raise ValueError("confusion matrix state: negative counts")
        result.matrix = matrix
        return result

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={self.num_pixels})"
        )
