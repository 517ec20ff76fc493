"""Losses of DASS: segmentation cross-entropy (L_base) and the bi-directional pixel-prototype contrast
(L_FC, L_BC)."""

from pipeline.losses.contrastive import (
    anchor_mask,
    class_feature_sums,
    class_prototypes,
    pixel_prototype_loss,
    pixel_prototype_similarity,
    prototypes_from_sums,
)
from pipeline.losses.segmentation import resize_labels, segmentation_cross_entropy

__all__ = [
    "anchor_mask",
    "class_feature_sums",
    "class_prototypes",
    "pixel_prototype_loss",
    "pixel_prototype_similarity",
    "prototypes_from_sums",
    "resize_labels",
    "segmentation_cross_entropy",
]
