"""Which images BatchNorm's running statistics come from (the `adapt.bn_statistics` option).

A model trained on the source keeps source running means and variances, and evaluation on the target
normalises target features with them. Re-estimating them on target images alone (AdaBN, Li et al.
2017) is the cheapest adaptation there is; measured in issue 4's prototype it mattered more than any
loss. Two tools:

- `reestimate_batchnorm`: replace the running statistics by the cumulative average over given batches.
- `running_statistics_frozen`: a forward pass in train mode (batch statistics) that leaves the running
  statistics untouched, so source batches during adaptation do not pull them back to the source.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer that keeps running statistics (FrozenBatchNorm2d is not one)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@contextmanager
def running_statistics_frozen(model: nn.Module) -> Iterator[None]:
    """Inside: BatchNorm normalises with batch statistics (in train mode) but does not update its
    running statistics. `track_running_stats=False` in train mode makes PyTorch pass no buffers."""
    layers = batchnorm_layers(model)
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in layers:
            layer.track_running_stats = True


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, image_batches: Iterable[torch.Tensor], domain: str) -> int:
    """Set every BatchNorm's running mean/var to the cumulative average over `image_batches`.

    Layers the batches never reach (the source stem when `domain` is "target" and the model has a
    target stem) keep their statistics. Weights and affine parameters are unchanged; the model is left
    in eval mode. Returns the number
    of images seen. Raises ValueError when the model has no BatchNorm with running statistics (a
    frozen-BN backbone) or no batch was given.
    """
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError("the model has no BatchNorm with running statistics (model.frozen_bn is true?)")
    saved = [(layer.momentum, layer.running_mean.clone(), layer.running_var.clone()) for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    images = 0
    try:
        for batch in image_batches:
            model(batch, domain=domain)
            images += batch.shape[0]
    finally:
        for layer, (momentum, mean, var) in zip(layers, saved, strict=True):
            layer.momentum = momentum
            if int(layer.num_batches_tracked) == 0:  # not on this domain's path (the other stem): keep
                layer.running_mean.copy_(mean)
                layer.running_var.copy_(var)
        model.eval()
    if images == 0:
        raise ValueError("no images to re-estimate BatchNorm statistics on")
    return images
