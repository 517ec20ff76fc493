"""Target pseudo labels of DASS: static CBST labels y_F, dynamic prototype labels y_D, their hybrid,
and the density / accuracy diagnostic of paper Table 4.

Diagnostic convention: both numbers are measured on the pixels whose ground truth is valid (≠ ignore),
the only pixels whose correctness can be judged:

    density  = #{labelled ∧ valid GT} / #{valid GT}
    accuracy = #{labelled ∧ valid GT ∧ correct} / #{labelled ∧ valid GT}

(The official DASS code divides its "prop" by all pixels instead, which lowers density by the share of
ignored ground truth, ~10% of a Cityscapes image; `diagnostics.summarise_label_counts` reports that
density too, and the share of labels on ignore ground truth.) The counting lives in `diagnostics`.
"""

from __future__ import annotations

from pipeline.pseudo_labels.dynamic import (
    PrototypeMemory,
    best_prototype_match,
    best_prototype_similarity,
    dynamic_pseudo_labels,
)
from pipeline.pseudo_labels.fusion import hybrid_pseudo_labels
from pipeline.pseudo_labels.static import CbstHistogram, cbst_pseudo_labels, cbst_thresholds

__all__ = [
    "CbstHistogram",
    "PrototypeMemory",
    "best_prototype_match",
    "best_prototype_similarity",
    "cbst_pseudo_labels",
    "cbst_thresholds",
    "dynamic_pseudo_labels",
    "hybrid_pseudo_labels",
]
