"""Bi-directional pixel-prototype contrast of DASS (Lee et al., ECCV 2022, Sec. 3.2).

Class prototypes are the mean raw (unnormalised) feature of the pixels labelled with the class:

    ρ_S(c) = Σ_p f_S(p) y_S(p, c) / Σ_p y_S(p, c),      ρ_T(c) = Σ_p f_T(p) y_T(p, c) / Σ_p y_T(p, c)

with y_S the source ground truth and y_T the target pseudo labels (both one-hot, at feature
resolution). Each pixel is pulled to the prototype of its class *of the other domain* and pushed away
from the prototypes of the other classes, an InfoNCE over classes with cosine similarity s and
temperature τ:

    L_FC = −Σ_c Σ_p y_T(p, c) log( exp(s(f_T(p), ρ_S(c))/τ) / Σ_c' exp(s(f_T(p), ρ_S(c'))/τ) )
    L_BC = −Σ_c Σ_p y_S(p, c) log( exp(s(f_S(p), ρ_T(c))/τ) / Σ_c' exp(s(f_S(p), ρ_T(c'))/τ) )

so that  L_FC = pixel_prototype_loss(f_T, y_T, ρ_S, present_S, τ)  (forward: target pixels against
source prototypes) and  L_BC = pixel_prototype_loss(f_S, y_S, ρ_T, present_T, τ)  (backward: source
pixels against target prototypes). The sums over c' run over the classes that have a prototype in the
batch (absent classes have no prototype and are excluded); the loss is averaged over anchor pixels
(labelled with a class that has a prototype) instead of summed, so its scale does not depend on the
image size.

The paper does not detach the prototypes: gradients reach the features both through the anchor pixel
and through the prototypes of the other domain. We keep that (callers may `.detach()` themselves).

Prototypes are built in two public steps, `class_feature_sums` then `prototypes_from_sums`, so that a
distributed caller can all-reduce the per-class sums and counts in between (design.md §5) and obtain
prototypes of the global batch.

Precision: sums, prototypes, similarities and the loss are computed in at least float32
(`torch.promote_types(dtype, float32)`), so half-precision features do not lose the sums of many pixels.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from pipeline.constants import IGNORE_INDEX

# Guards the cosine similarity against zero vectors (absent prototypes are zero rows): vectors are
# divided by max(‖v‖, COSINE_EPS), the convention of torch.nn.functional.normalize.
COSINE_EPS = 1e-8

Reduction = Literal["mean", "sum"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: half-precision sums over many pixels lose precision."""
    return torch.promote_types(dtype, torch.float32)


def _check_labels(features: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    if features.dim() != 4 or labels.dim() != 3:
        raise ValueError(
            f"expected features [N, D, h, w] and labels [N, h, w], got {tuple(features.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if labels.shape != (features.shape[0], *features.shape[2:]):
        raise ValueError(
            f"labels {tuple(labels.shape)} do not match features {tuple(features.shape)}: resize the labels "
            "to feature resolution first (pipeline.losses.segmentation.resize_labels)"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"labels hold values outside [0, {num_classes}) other than ignore_index={ignore_index}: "
            f"{torch.unique(labels[bad]).tolist()[:10]}"
        )


def class_feature_sums(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of raw features and pixel counts: the numerator and denominator of ρ(c).

    Args:
        features: [N, D, h, w] embedding.
        labels: [N, h, w] integer class ids at feature resolution; `ignore_index` pixels are skipped.
        num_classes: C.

    Returns:
        sums [C, D] = Σ_p f(p) y(p, c) (differentiable w.r.t. `features`) and counts [C] = Σ_p y(p, c),
        both in the compute dtype (≥ float32; counts are exact integers below 2**24 pixels) so a
        distributed caller can all-reduce them together.
    """
    _check_labels(features, labels, num_classes, ignore_index)
    dim = features.shape[1]
    dtype = _compute_dtype(features.dtype)
    flat_features = features.permute(0, 2, 3, 1).reshape(-1, dim).to(dtype)  # [P, D]
    flat_labels = labels.reshape(-1).long()  # [P]
    # Ignored pixels go to an extra row C that is dropped: no boolean indexing, no host sync.
    rows = torch.where(flat_labels == ignore_index, num_classes, flat_labels)
    sums = flat_features.new_zeros(num_classes + 1, dim).index_add(0, rows, flat_features)
    counts = torch.bincount(rows, minlength=num_classes + 1).to(dtype)
    return sums[:num_classes], counts[:num_classes]


def prototypes_from_sums(sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ρ(c) = sums(c) / counts(c) for the classes seen; zero rows and present=False for the others.

    Args:
        sums: [C, D] per-class feature sums; counts: [C] per-class pixel counts (possibly all-reduced).

    Returns:
        prototypes [C, D] and present [C] bool. The division uses counts clamped to ≥ 1, so absent
        classes give zero rows and finite (zero) gradients.
    """
    if sums.dim() != 2 or counts.shape != sums.shape[:1]:
        raise ValueError(
            f"expected sums [C, D] and counts [C], got {tuple(sums.shape)}, {tuple(counts.shape)}"
        )
    present = counts > 0
    prototypes = sums / counts.clamp(min=1).to(sums.dtype).unsqueeze(1)
    return prototypes, present


def class_prototypes(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class prototypes ρ(c) = Σ_p f(p) y(p, c) / Σ_p y(p, c) over raw features (Sec. 3.2).

    Args:
        features: [N, D, h, w]; labels: [N, h, w] at feature resolution (ignore_index skipped).

    Returns:
        prototypes [C, D] (differentiable w.r.t. `features`; zero rows for absent classes) and
        present [C] bool.
    """
    return prototypes_from_sums(*class_feature_sums(features, labels, num_classes, ignore_index))


def pixel_prototype_similarity(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Cosine similarity s(f(p), ρ(c)) of every pixel with every prototype.

    Args:
        features: [N, D, h, w]; prototypes: [C, D].

    Returns:
        [N, C, h, w] in the compute dtype (≥ float32); zero for zero prototypes (absent classes).
    """
    if features.dim() != 4 or prototypes.dim() != 2 or prototypes.shape[1] != features.shape[1]:
        raise ValueError(
            f"expected features [N, D, h, w] and prototypes [C, D] with the same D, got "
            f"{tuple(features.shape)} and {tuple(prototypes.shape)}"
        )
    dtype = _compute_dtype(torch.promote_types(features.dtype, prototypes.dtype))
    unit_features = F.normalize(features.to(dtype), dim=1, eps=COSINE_EPS)
    unit_prototypes = F.normalize(prototypes.to(dtype), dim=1, eps=COSINE_EPS)
    return torch.einsum("ndhw,cd->nchw", unit_features, unit_prototypes)


def anchor_mask(
    labels: torch.Tensor, present: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Anchor pixels of the contrast: label c ≠ ignore_index and present[c].

    Args:
        labels: [N, h, w] integer; present: [C] bool.

    Returns:
        bool [N, h, w].
    """
    if labels.dim() != 3 or present.dim() != 1 or present.dtype != torch.bool:
        raise ValueError(
            f"expected labels [N, h, w] and bool present [C], got {tuple(labels.shape)} and "
            f"{present.dtype} {tuple(present.shape)}"
        )
    labelled = labels != ignore_index
    if bool((labelled & ((labels < 0) | (labels >= present.numel()))).any()):
        raise ValueError(f"labels outside [0, {present.numel()}) other than ignore_index={ignore_index}")
    return _anchor_mask(labels, present, ignore_index)


def _anchor_mask(labels: torch.Tensor, present: torch.Tensor, ignore_index: int) -> torch.Tensor:
    labelled = labels != ignore_index
    safe_labels = torch.where(labelled, labels.long(), 0)
    return labelled & present.to(labels.device)[safe_labels]


def pixel_prototype_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    present: torch.Tensor,
    tau: float,
    ignore_index: int = IGNORE_INDEX,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Pixel-to-prototype InfoNCE over classes; L_FC and L_BC of Sec. 3.2 (see the module docstring).

    For every anchor pixel p with label c (c ≠ ignore_index, present[c]):

        ℓ(p) = −log( exp(s(f(p), ρ(c))/τ) / Σ_{c' : present[c']} exp(s(f(p), ρ(c'))/τ) )

    Args:
        features: [N, D, h, w] pixels of one domain; labels: [N, h, w] their (pseudo) labels at feature
            resolution.
        prototypes: [C, D] of the other domain; present: [C] bool (absent classes are left out of the
            denominator).
        tau: temperature τ > 0.
        reduction: "mean" over anchors, or "sum" (a distributed caller divides by the global anchor
            count, `anchor_mask(...).sum()` all-reduced).

    Returns:
        Scalar; zero with a gradient path (no NaN) when there is no anchor. Gradients reach both
        `features` and `prototypes`.
    """
    if not tau > 0:
        raise ValueError(f"tau (contrast temperature) must be > 0, got {tau}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    num_classes = prototypes.shape[0]
    if present.shape != (num_classes,) or present.dtype != torch.bool:
        raise ValueError(f"present must be bool [{num_classes}], got {present.dtype} {tuple(present.shape)}")
    _check_labels(features, labels, num_classes, ignore_index)

    logits = pixel_prototype_similarity(features, prototypes) / tau  # [N, C, h, w]
    # Absent classes leave the softmax: a finite lowest value (not −inf) underflows to exp(...) = 0 and
    # keeps rows without any present class finite, so their zero gradient stays zero instead of NaN.
    absent = ~present.to(logits.device).view(1, num_classes, 1, 1)
    logits = logits.masked_fill(absent, torch.finfo(logits.dtype).min)
    log_probs = F.log_softmax(logits, dim=1)

    anchors = _anchor_mask(labels, present, ignore_index)  # [N, h, w]; labels checked above
    safe_labels = torch.where(anchors, labels.long(), 0)
    picked = log_probs.gather(1, safe_labels.unsqueeze(1)).squeeze(1)  # [N, h, w]
    total = torch.where(anchors, -picked, torch.zeros_like(picked)).sum()
    if reduction == "sum":
        return total
    return total / anchors.sum().clamp(min=1).to(total.dtype)
