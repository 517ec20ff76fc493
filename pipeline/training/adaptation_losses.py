"""The DASS objective for one step, over the global batch (paper Sec. 3; design.md §2, §4, §5).

    L = CE(source) + w_t·CE(target, y_F or y_T) + w_fc·L_FC + w_bc·L_BC

Ablation rows switch terms on cumulatively: `base` (source CE + target CE on static CBST labels y_F),
`fc` (+L_FC), `fc_bc` (+L_BC), `dyn_nocal` (y_T = hybrid of dynamic labels with ξ = 0 and the static
ones), `dass` (dynamic labels from calibrated prototypes ρ_S + ξ, ξ = μ_T − μ_S). y_T builds the
contrast's training pairs (ρ_T and L_FC's anchors); the target cross-entropy keeps y_F unless
`adapt.target_ce_labels` is hybrid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.constants import ABLATION_ROWS, IGNORE_INDEX, NUM_CLASSES
from pipeline.distributed.collectives import all_reduce_sum, all_reduce_with_grad, global_mean
from pipeline.losses.contrastive import (
    anchor_mask,
    class_feature_sums,
    pixel_prototype_loss,
    prototypes_from_sums,
)
from pipeline.losses.segmentation import resize_labels, segmentation_cross_entropy
from pipeline.pseudo_labels.dynamic import PrototypeMemory, best_prototype_match, labels_above_threshold
from pipeline.pseudo_labels.fusion import hybrid_pseudo_labels


@dataclass(frozen=True)
class RowSwitches:
    """Which parts of the method an ablation row uses."""

    contrast_forward: bool  # L_FC: target pixels vs source prototypes
    contrast_backward: bool  # L_BC: source pixels vs target prototypes
    dynamic_labels: bool  # y_T = hybrid(dynamic, static) instead of static
    calibration: bool  # dynamic labels from ρ_S + ξ instead of ρ_S


# In the order of ABLATION_ROWS (base, fc, fc_bc, dyn_nocal, dass): each row adds one part.
ROWS: dict[str, RowSwitches] = dict(
    zip(
        ABLATION_ROWS,
        (
            RowSwitches(False, False, False, False),
            RowSwitches(True, False, False, False),
            RowSwitches(True, True, False, False),
            RowSwitches(True, True, True, False),
            RowSwitches(True, True, True, True),
        ),
        strict=True,
    )
)


@dataclass(frozen=True)
class ObjectiveWeights:
    target: float  # w_t, weight of the target cross-entropy
    forward_contrast: float  # w_fc
    backward_contrast: float  # w_bc
    tau: float  # τ of the contrast
    threshold: float  # 𝒯, cosine threshold of the dynamic labels
    ce_on_hybrid: bool = False  # target CE on y_T (adapt.target_ce_labels: hybrid) instead of y_F


def global_prototypes(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ρ over the global batch: class sums all-reduced with gradient, counts without."""
    sums, counts = class_feature_sums(features, labels, NUM_CLASSES, IGNORE_INDEX)
    return prototypes_from_sums(all_reduce_with_grad(sums), all_reduce_sum(counts))


def global_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    local = segmentation_cross_entropy(logits, labels, IGNORE_INDEX, reduction="sum")
    return global_mean(local, (labels != IGNORE_INDEX).sum())


def global_contrast(features, labels, prototypes, present, tau: float) -> torch.Tensor:
    local = pixel_prototype_loss(features, labels, prototypes, present, tau, IGNORE_INDEX, reduction="sum")
    return global_mean(local, anchor_mask(labels, present, IGNORE_INDEX).sum())


def upsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Feature-resolution labels [N, h, w] → [N, H, W] (nearest: labels are never blended)."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


@dataclass
class StepOutcome:
    losses: dict[str, torch.Tensor]
    target_labels: torch.Tensor  # y_T this step (hybrid in the dynamic rows, else y_F), label resolution
    dynamic_labels: dict[str, torch.Tensor]  # "dynamic_nocal" / "dynamic_cal" at label resolution
    best_cosine: torch.Tensor  # [N, h, w] max_c s(f_T(p), ρ_S(c) + ξ(c)): its distribution guides 𝒯
    # "dynamic_nocal" / "dynamic_cal" → (best cosine, its class) [N, h, w] at feature resolution, as the
    # dynamic labels are made: the matched-density Table 4 (step_diagnostics bins them, then upsamples)
    best_matches: dict[str, tuple[torch.Tensor, torch.Tensor]]


def dass_objective(
    source_logits: torch.Tensor,
    source_embedding: torch.Tensor,
    source_labels: torch.Tensor,
    target_logits: torch.Tensor,
    target_embedding: torch.Tensor,
    static_labels: torch.Tensor,
    memory: PrototypeMemory,
    row: RowSwitches,
    weights: ObjectiveWeights,
) -> StepOutcome:
    """Named losses of one step; updates `memory` with this step's global prototypes.

    Shapes: logits [N, C, H, W] at label resolution, embeddings [N, D, h, w], labels [N, H, W].
    Dynamic labels are computed at feature resolution from the current (detached) features, both with
    and without calibration (the Table-4 diagnostics), and brought to label resolution with nearest
    interpolation; the memory is updated after they are computed, so ξ comes from earlier steps.
    """
    size = tuple(source_labels.shape[-2:])
    feature_size = tuple(source_embedding.shape[-2:])
    source_small = resize_labels(source_labels, feature_size)
    rho_source, present_source = global_prototypes(source_embedding, source_small)

    detached = target_embedding.detach()
    frozen_source = rho_source.detach()
    biases = {"dynamic_nocal": None, "dynamic_cal": memory.bias()}
    matches = {
        kind: best_prototype_match(detached, frozen_source, present_source, bias)
        for kind, bias in biases.items()
    }
    dynamic_small = {
        kind: labels_above_threshold(best, best_class, weights.threshold, IGNORE_INDEX)
        for kind, (best, best_class) in matches.items()
    }
    dynamic = {name: upsample_labels(labels, size) for name, labels in dynamic_small.items()}
    # y_T is fused twice, at each resolution it is used at: label resolution for the cross-entropy,
    # feature resolution for ρ_T and L_FC. Fusing once and resizing back would not be the identity
    # when the label size is not a multiple of the feature size (730 ↔ 92 moves most rows by one).
    target_labels = static_labels
    target_small = resize_labels(static_labels, feature_size)
    if row.dynamic_labels:
        chosen = "dynamic_cal" if row.calibration else "dynamic_nocal"
        target_labels = hybrid_pseudo_labels(dynamic[chosen], static_labels, IGNORE_INDEX)
        target_small = hybrid_pseudo_labels(dynamic_small[chosen], target_small, IGNORE_INDEX)
    rho_target, present_target = global_prototypes(target_embedding, target_small)
    memory.update(frozen_source, present_source, rho_target.detach(), present_target)

    losses = {"ce_source": global_cross_entropy(source_logits, source_labels)}
    if weights.target:
        ce_labels = target_labels if weights.ce_on_hybrid else static_labels
        losses["ce_target"] = weights.target * global_cross_entropy(target_logits, ce_labels)
    if row.contrast_forward:
        losses["contrast_fc"] = weights.forward_contrast * global_contrast(
            target_embedding, target_small, rho_source, present_source, weights.tau
        )
    if row.contrast_backward:
        losses["contrast_bc"] = weights.backward_contrast * global_contrast(
            source_embedding, source_small, rho_target, present_target, weights.tau
        )
    return StepOutcome(losses, target_labels, dynamic, matches["dynamic_cal"][0], matches)
