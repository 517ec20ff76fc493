"""Segmentation cross-entropy with ignored pixels, and label resizing to feature resolution.

L_base of DASS is this cross-entropy on source ground truth plus, weighted, the same on target pseudo
labels.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from pipeline.constants import IGNORE_INDEX


def segmentation_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    """Pixel-wise cross-entropy −Σ_p log softmax(logits(p))[y(p)] over pixels with y(p) ≠ ignore_index.

    Args:
        logits: [N, C, H, W] class scores; labels: [N, H, W] integer class ids.
        reduction: "mean" over labelled pixels, or "sum" (a distributed caller divides by the global
            count of labelled pixels, `(labels != ignore_index).sum()` all-reduced).

    Returns:
        Scalar. Unlike `F.cross_entropy(reduction="mean")`, which gives NaN when every pixel is ignored,
        this returns zero with a gradient path to `logits` then.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if logits.dim() != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"expected logits [N, C, H, W] and labels [N, H, W], got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    labels = labels.long()
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    if reduction == "sum":
        return total
    labelled = (labels != ignore_index).sum()
    return total / labelled.clamp(min=1).to(total.dtype)


def resize_labels(labels: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize label maps [N, H, W] → [N, h, w] by nearest-neighbour sampling (no class mixing).

    Uses `F.interpolate(mode="nearest")`, i.e. source index ⌊i · H / h⌋ (PyTorch's legacy "nearest", the
    one the official DASS code uses to bring labels to feature resolution), not "nearest-exact". The
    interpolation runs on float, which holds every class id (and 255) exactly; the output keeps the
    input dtype and device.
    """
    if labels.dim() != 3:
        raise ValueError(f"expected labels [N, H, W], got {tuple(labels.shape)}")
    resized = F.interpolate(labels.unsqueeze(1).float(), size=size, mode="nearest")
    return resized.squeeze(1).to(labels.dtype)
