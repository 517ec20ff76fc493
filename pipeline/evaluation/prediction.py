"""One target image through a model as `evaluate` scores it: the train-id prediction at label resolution."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.transforms import image_to_tensor
from pipeline.models.inference import model_device


@torch.no_grad()
def predict(
    model: torch.nn.Module, image: np.ndarray, label_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train-id prediction [h, w] at the label's resolution (logits upsampled bilinearly), and the
    embedding [1, D, h', w'] of the same forward pass."""
    output = model(image_to_tensor(image)[None].to(model_device(model)), domain="target")
    logits = F.interpolate(output.logits, size=label_size, mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)[0], output.embedding
