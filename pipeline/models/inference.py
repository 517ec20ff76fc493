"""A segmentor applied to target images: class probabilities averaged over test-time views.

The CBST labeller (pipeline/labelling.py) and `predict` (pipeline/predict.py) share this:
each view (a scale of the image, and its mirror image when `flip`) is run through the model, its logits
are upsampled bilinearly to the output size, turned into probabilities and averaged. With one scale of
1.0 and no flip the argmax is that of the upsampled logits, which is what `evaluate` scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def class_probabilities(model: torch.nn.Module, images: torch.Tensor, sizes: Sequence[tuple[int, int]],
                        scales: Sequence[float], flip: bool) -> list[torch.Tensor]:  # fmt: skip
    """Softmax probabilities [C, h, w] of each image of the batch `images` [B, 3, H, W], averaged over
    the views, at that image's output size `sizes[i]` = (h, w)."""
    if len(sizes) != images.shape[0]:
        raise ValueError(f"class_probabilities: {images.shape[0]} images but {len(sizes)} output sizes")
    totals: list[torch.Tensor | float] = [0.0] * len(sizes)
    views = 0
    for scale in scales:
        scaled = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                           align_corners=False)  # fmt: skip
        for flipped in (False, True) if flip else (False,):
            view = scaled.flip(-1) if flipped else scaled
            logits = model(view, domain="target").logits
            logits = logits.flip(-1) if flipped else logits
            for index, size in enumerate(sizes):
                upsampled = F.interpolate(logits[index : index + 1], size=size, mode="bilinear",
                                          align_corners=False)  # fmt: skip
                totals[index] = totals[index] + upsampled.softmax(1)
            views += 1
    return [(total / views)[0] for total in totals]


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
