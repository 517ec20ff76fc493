"""Target images through a model as `evaluate` scores them: the train-id prediction at label resolution."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.transforms import image_to_tensor
from pipeline.models.inference import model_device


@torch.no_grad()
def predict_batch(
    model: torch.nn.Module, images: torch.Tensor, label_sizes: Sequence[tuple[int, int]]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Train-id prediction [h_i, w_i] of each image of `images` [B, 3, H, W] (on the model's device) at
    its label's resolution `label_sizes[i]` (logits upsampled bilinearly, image by image), and the
    embedding [B, D, h', w'] of the same forward pass."""
    if len(label_sizes) != images.shape[0]:
        raise ValueError(f"predict_batch: {images.shape[0]} images but {len(label_sizes)} label sizes")
    output = model(images, domain="target")
    predictions = [
        F.interpolate(
            output.logits[index : index + 1], size=size, mode="bilinear", align_corners=False
        ).argmax(dim=1)[0]
        for index, size in enumerate(label_sizes)
    ]
    return predictions, output.embedding


def predict(
    model: torch.nn.Module, image: np.ndarray, label_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`predict_batch` of one image, uint8 [H, W, 3]: its prediction [h, w] and embedding [1, D, h', w']."""
    predictions, embedding = predict_batch(
        model, image_to_tensor(image)[None].to(model_device(model)), [label_size]
    )
    return predictions[0], embedding
