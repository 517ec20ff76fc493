"""The BatchNorm regimes of `adapt.bn_statistics`: one way to normalise each image, everywhere.

- `frozen` (frozen statistics, as the DeepLabV2 Caffe original): after the warmup, BatchNorm statistics
  never change; `hold_batchnorm_statistics` keeps BN layers in eval mode while the rest of the model
  trains, so the CBST labeller, an adaptation step and evaluation compute the same features for the same
  image.
- `batch` (the official DASS code, on AdaptSegNet / CCM): BN layers stay in train mode while adapting, so
  each domain's pass is normalised by the statistics of its own batch and the running statistics keep
  moving (momentum `m`: r ← (1 − m)·r + m·batch) from both domains; the labeller and evaluation use the
  running statistics in eval mode. Nothing here is needed for it: it is `model.train()`.
- `per_domain` (domain-specific BatchNorm, Chang et al., CVPR 2019): `DomainBatchNorm2d` keeps a second
  set of running statistics for target images, affine parameters shared. `Segmentor.forward(domain=…)`
  selects the set (`set_domain`).

`reestimate_batchnorm` replaces running statistics by their average over given images (AdaBN, Li et al.
2017): the "normalisation only" reference model, and the target statistics of `per_domain`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pipeline.models.resnet import FrozenBatchNorm2d

TARGET_BUFFERS = ("target_running_mean", "target_running_var", "target_num_batches_tracked")


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer that keeps running statistics (FrozenBatchNorm2d is not one)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


class DomainBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with separate running statistics for target images; weight and bias shared.

    `domain` ("source" or "target") picks the statistics of the next forward. Target statistics that
    were never estimated (`target_num_batches_tracked` = 0, e.g. a source-only checkpoint) fall back to
    the source ones in eval mode, so such a model predicts exactly as the plain one.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.register_buffer("target_running_mean", torch.zeros(num_features))
        self.register_buffer("target_running_var", torch.ones(num_features))
        self.register_buffer("target_num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.domain = "source"

    @classmethod
    def from_batchnorm(cls, layer: nn.BatchNorm2d) -> DomainBatchNorm2d:
        """A domain BatchNorm with `layer`'s affine parameters and statistics (as the source set)."""
        domain_layer = cls(layer.num_features, eps=layer.eps, momentum=layer.momentum)
        domain_layer.load_state_dict(layer.state_dict(), strict=False)
        domain_layer.weight.requires_grad_(layer.weight.requires_grad)
        domain_layer.bias.requires_grad_(layer.bias.requires_grad)
        domain_layer.train(layer.training)
        return domain_layer

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        estimated = int(self.target_num_batches_tracked) > 0
        if self.domain == "target" and (self.training or estimated):
            return self.target_running_mean, self.target_running_var, self.target_num_batches_tracked
        return self.running_mean, self.running_var, self.num_batches_tracked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var, batches = self._statistics()
        if not self.training:
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        batches.add_(1)
        factor = 1.0 / float(batches) if self.momentum is None else self.momentum  # None: cumulative
        return F.batch_norm(x, mean, var, self.weight, self.bias, True, factor, self.eps)


def domain_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every nn.BatchNorm2d of `model` (in place) by a `DomainBatchNorm2d`; returns `model`."""
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            setattr(model, name, DomainBatchNorm2d.from_batchnorm(child))
        else:
            domain_batchnorm(child)
    return model


def set_domain(model: nn.Module, domain: str) -> None:
    """Make every `DomainBatchNorm2d` of `model` use `domain`'s statistics."""
    for module in model.modules():
        if isinstance(module, DomainBatchNorm2d):
            module.domain = domain


@torch.no_grad()
def set_target_statistics(model: nn.Module, reference: nn.Module) -> int:
    """Copy `reference`'s running statistics (same architecture, plain BatchNorm) into `model`'s target
    statistics, layer by layer; returns the number of layers set."""
    statistics = {name: layer for name, layer in reference.named_modules() if isinstance(layer, _BatchNorm)}
    layers = 0
    for name, module in model.named_modules():
        if isinstance(module, DomainBatchNorm2d):
            source = statistics[name]
            module.target_running_mean.copy_(source.running_mean)
            module.target_running_var.copy_(source.running_var)
            module.target_num_batches_tracked.copy_(source.num_batches_tracked.clamp(min=1))
            layers += 1
    return layers


def hold_batchnorm_statistics(model: nn.Module) -> nn.Module:
    """Put every BatchNorm layer of `model` in eval mode (the rest keeps its mode); returns `model`.

    Call after `model.train()`: BN then normalises with its running statistics and never updates them,
    while the affine parameters can still train.
    """
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.eval()
    return model


@contextmanager
def modes_restored(model: nn.Module) -> Iterator[None]:
    """Inside, change modes freely (e.g. `model.eval()`); on exit every module gets its own back."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def thawed_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every FrozenBatchNorm2d (in place) by an nn.BatchNorm2d with the same statistics and
    affine values (γ, β not trainable), so its statistics can be re-estimated; returns `model`.

    The result's state dict loads back into the frozen model (its extra counters are ignored)."""
    for name, child in list(model.named_children()):
        if isinstance(child, FrozenBatchNorm2d):
            layer = nn.BatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(layer, key).copy_(getattr(child, key))
            layer.weight.requires_grad_(False)
            layer.bias.requires_grad_(False)
            setattr(model, name, layer)
        else:
            thawed_batchnorm(child)
    return model


def batchnorm_affine_trainable(model: nn.Module, trainable: bool) -> None:
    """Let the optimiser train BatchNorm's γ and β (or not)."""
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.affine:
            module.weight.requires_grad_(trainable)
            module.bias.requires_grad_(trainable)


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, image_batches: Iterable[torch.Tensor], domain: str) -> int:
    """Set every BatchNorm's running mean/var to the cumulative average over `image_batches` (AdaBN).

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
