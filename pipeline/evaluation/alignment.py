"""Feature-alignment diagnostic: are class features domain-invariant (L_FC, L_BC) and discriminative?

Measured with ground truth (diagnostic only, nothing trains on it). Prototypes are built exactly as in
training (`class_feature_sums` → `prototypes_from_sums`: the mean raw embedding over a class's pixels,
labels brought to feature resolution by `resize_labels`). Per class c, over target-val pixels p:

    cross_domain(c) = cos(ρ_S(c), ρ_T(c))
    intra(c)        = mean_{p ∈ c} cos(f(p), ρ_T(c))
    inter(c)        = max_{k ≠ c} mean_{p ∈ c} cos(f(p), ρ_T(k)),   nearest_other(c) = that k

One pass suffices: per class the sum of raw features (for ρ), the sum of unit features f̂ and the pixel
count N_c, since mean_{p ∈ c} cos(f(p), ρ(k)) = (Σ_{p ∈ c} f̂(p) / N_c) · ρ̂(k). Sums add over images and
shards (never average per image), in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.constants import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from pipeline.losses.contrastive import COSINE_EPS, class_feature_sums, prototypes_from_sums
from pipeline.losses.segmentation import resize_labels

ALIGNMENT_METRICS = ("cross_domain", "intra", "inter")  # the per-class values and their means
DECIMALS = 4  # of every value in the JSON


@dataclass(frozen=True)
class AlignmentSums:
    """Per-class sums of one domain's pixels (float64, CPU, so they merge exactly across Ray tasks)."""

    features: torch.Tensor  # [C, D] Σ_{p ∈ c} f(p)
    unit_features: torch.Tensor  # [C, D] Σ_{p ∈ c} f(p) / ‖f(p)‖
    counts: torch.Tensor  # [C] N_c


def zero_sums(dim: int, num_classes: int = NUM_CLASSES) -> AlignmentSums:
    """Sums over no pixel, for an embedding of `dim` channels."""
    zeros = torch.zeros(num_classes, dim, dtype=torch.float64)
    return AlignmentSums(zeros, zeros.clone(), torch.zeros(num_classes, dtype=torch.float64))


def alignment_sums(
    embedding: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> AlignmentSums:
    """Per-class sums of a batch.

    Args:
        embedding: [N, D, h, w] the model's `.embedding`.
        labels: [N, H, W] integer ground truth at any resolution; resized to [N, h, w] with
            `resize_labels` (nearest, as training does); `ignore_index` pixels are skipped.
    """
    small = resize_labels(labels, tuple(embedding.shape[-2:]))
    embedding = embedding.detach().double()  # float64 from the start: sums of many pixels over a split
    features, counts = class_feature_sums(embedding, small, num_classes, ignore_index)
    unit = F.normalize(embedding, dim=1, eps=COSINE_EPS)
    unit_features, _ = class_feature_sums(unit, small, num_classes, ignore_index)
    return AlignmentSums(features.cpu(), unit_features.cpu(), counts.cpu())


def merge_sums(parts: Iterable[AlignmentSums]) -> AlignmentSums:
    """Sums over the union of the parts' pixels (at least one part)."""
    parts = list(parts)
    if not parts:
        raise ValueError("merge_sums needs at least one AlignmentSums")
    return AlignmentSums(
        torch.stack([part.features for part in parts]).sum(dim=0),
        torch.stack([part.unit_features for part in parts]).sum(dim=0),
        torch.stack([part.counts for part in parts]).sum(dim=0),
    )


def _unit_prototypes(sums: AlignmentSums) -> tuple[torch.Tensor, torch.Tensor]:
    """ρ̂(c) [C, D] (zero rows for absent classes) and present [C]."""
    prototypes, present = prototypes_from_sums(sums.features, sums.counts)
    return F.normalize(prototypes, dim=1, eps=COSINE_EPS), present


def cross_domain_alignment(source: AlignmentSums, target: AlignmentSums) -> torch.Tensor:
    """cos(ρ_S(c), ρ_T(c)) [C] float64; NaN where class c has no pixel in either domain."""
    source_unit, source_present = _unit_prototypes(source)
    target_unit, target_present = _unit_prototypes(target)
    cosine = (source_unit * target_unit).sum(dim=1)
    return torch.where(source_present & target_present, cosine, math.nan)


def class_separation(target: AlignmentSums) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intra- and inter-class cosines of one domain's pixels to its own prototypes.

    Returns:
        intra [C] = mean_{p ∈ c} cos(f(p), ρ(c)); inter [C] = max_{k ≠ c} mean_{p ∈ c} cos(f(p), ρ(k))
        over present k (float64, NaN where c has no pixel or no other class has one); nearest [C] long,
        that k (−1 where inter is NaN).
    """
    unit_prototypes, present = _unit_prototypes(target)
    mean_unit = target.unit_features / target.counts.clamp(min=1).unsqueeze(1)  # [C, D]
    similarity = mean_unit @ unit_prototypes.T  # [C, K]: mean cos of class-c pixels to ρ(k)
    intra = torch.where(present, similarity.diagonal(), math.nan)
    diagonal = torch.eye(len(present), dtype=torch.bool, device=present.device)
    others = present.unsqueeze(0) & ~diagonal  # [C, K]: present classes k ≠ c
    inter, nearest = similarity.masked_fill(~others, -math.inf).max(dim=1)
    defined = present & others.any(dim=1)
    return intra, torch.where(defined, inter, math.nan), torch.where(defined, nearest, -1)


def _rounded(number: float) -> float | None:
    return None if math.isnan(number) else round(number, DECIMALS)


def _mean(values: torch.Tensor) -> float | None:
    defined = values[~values.isnan()]
    return round(float(defined.mean()), DECIMALS) if len(defined) else None


def feature_alignment(
    source: AlignmentSums, target: AlignmentSums, class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, Any]:
    """The `feature_alignment` entry of a model in metrics/evaluate.json.

    `{"per_class": {name: {"cross_domain", "intra", "inter", "nearest_other"}}, "mean": {"cross_domain",
    "intra", "inter"}}`: None where a class has no pixel; means over the classes that have a value;
    values rounded to DECIMALS.
    """
    if len(class_names) != len(target.counts):
        raise ValueError(f"{len(class_names)} class names for sums of {len(target.counts)} classes")
    intra, inter, nearest = class_separation(target)
    values = dict(zip(ALIGNMENT_METRICS, (cross_domain_alignment(source, target), intra, inter), strict=True))
    per_class = {
        name: {metric: _rounded(float(values[metric][c])) for metric in ALIGNMENT_METRICS}
        | {"nearest_other": class_names[int(nearest[c])] if nearest[c] >= 0 else None}
        for c, name in enumerate(class_names)
    }
    # Means of the unrounded values, over the classes that have one.
    return {"per_class": per_class, "mean": {metric: _mean(values[metric]) for metric in ALIGNMENT_METRICS}}
