"""Hybrid pseudo labels of DASS (Sec. 3.3): dynamic labels y_D first, static CBST labels y_F where y_D
has none.

    y_T(p, c) = y_D(p, c)  if y_D(p, c) = 1
              = y_F(p, c)  if y_D(p, c') = 0 for every c' and y_F(p, c) = 1
              = 0          otherwise
"""

from __future__ import annotations

import torch

from pipeline.constants import IGNORE_INDEX


def hybrid_pseudo_labels(
    dynamic: torch.Tensor, static: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The dynamic label where it exists, else the static one, else ignore_index.

    Args:
        dynamic: [N, h, w] y_D; static: [N, h, w] y_F (same resolution; resize first if needed).

    Returns:
        [N, h, w] labels in the dtype of `dynamic`.
    """
    if dynamic.shape != static.shape:
        raise ValueError(
            f"dynamic {tuple(dynamic.shape)} and static {tuple(static.shape)} labels differ in shape"
        )
    return torch.where(
        dynamic != ignore_index, dynamic, static.to(device=dynamic.device, dtype=dynamic.dtype)
    )
