"""Target pseudo labels of DASS: static CBST labels y_F, dynamic prototype labels y_D, their hybrid,
and the density / accuracy diagnostic of paper Table 4.

Diagnostic convention: both numbers are measured on the pixels whose ground truth is valid (≠ ignore),
the only pixels whose correctness can be judged:

    density  = #{labelled ∧ valid GT} / #{valid GT}
    accuracy = #{labelled ∧ valid GT ∧ correct} / #{labelled ∧ valid GT}

(The official DASS code divides its "prop" by all pixels instead, which lowers density by the share of
ignored ground truth, ~10% of a Cityscapes image.) `label_quality` returns counts, not ratios, so they
add up over batches and workers; `density_accuracy` turns the totals into percentages.
"""

from __future__ import annotations

import math

import torch

from pipeline.constants import IGNORE_INDEX
from pipeline.pseudo_labels.dynamic import (
    PrototypeMemory,
    best_prototype_match,
    best_prototype_similarity,
    dynamic_pseudo_labels,
)
from pipeline.pseudo_labels.fusion import hybrid_pseudo_labels
from pipeline.pseudo_labels.static import CbstHistogram, cbst_pseudo_labels, cbst_thresholds


def label_quality(
    labels: torch.Tensor, ground_truth: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Counts behind pseudo-label density and accuracy.

    Args:
        labels: [...] pseudo labels (ignore_index = unlabelled); ground_truth: same shape.

    Returns:
        (labelled_pixels, correct_pixels, valid_pixels) as int64 scalars on the inputs' device:
        labelled and valid-GT, labelled and correct, valid-GT.
    """
    if labels.shape != ground_truth.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and ground truth {tuple(ground_truth.shape)} differ")
    ground_truth = ground_truth.to(labels.device)
    valid = ground_truth != ignore_index
    labelled = valid & (labels != ignore_index)
    correct = labelled & (labels.long() == ground_truth.long())
    return labelled.sum(), correct.sum(), valid.sum()


def density_accuracy(
    labelled_pixels: int | torch.Tensor, correct_pixels: int | torch.Tensor, valid_pixels: int | torch.Tensor
) -> tuple[float, float]:
    """(density %, accuracy %) from summed `label_quality` counts; NaN where a denominator is zero."""
    labelled, correct, valid = (int(count) for count in (labelled_pixels, correct_pixels, valid_pixels))
    density = 100.0 * labelled / valid if valid else math.nan
    accuracy = 100.0 * correct / labelled if labelled else math.nan
    return density, accuracy


__all__ = [
    "CbstHistogram",
    "PrototypeMemory",
    "best_prototype_match",
    "best_prototype_similarity",
    "cbst_pseudo_labels",
    "cbst_thresholds",
    "density_accuracy",
    "dynamic_pseudo_labels",
    "hybrid_pseudo_labels",
    "label_quality",
]
