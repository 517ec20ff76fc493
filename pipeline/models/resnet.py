"""Dilated ResNet backbones (He et al. 2016) with torchvision's state-dict key names.

Depth 18/34 use the BasicBlock, 50/101 the Bottleneck. Three options matter for DASS:

- `output_stride` 8 is DeepLabV2's: layer3 runs at stride 1 with dilation 2 and layer4 at stride 1 with
  dilation 4 (every block of the layer, as the DeepLabV2 / AdaptSegNet `_make_layer`); 16 dilates only
  layer4 (dilation 2); 32 is the classification network.
- `stride_in_1x1` puts a Bottleneck's stride on its first 1x1 conv, as the Caffe ResNet-101 the DeepLabV2
  init weights come from (AdaptSegNet `model/deeplab.py`); torchvision puts it on the 3x3 conv.
- `frozen_bn` replaces every BatchNorm2d by `FrozenBatchNorm2d` (fixed statistics and affine, as
  detectron2), the usual choice for segmentation batches of one or two images.
- `freeze_stages` = k freezes the first k of the five stages 1 conv1 + bn1, 2 layer1, 3 layer2, 4 layer3,
  5 layer4 (`StagedBackbone`); 0 freezes none.

Keys are torchvision's (`conv1`, `bn1`, `layer1.0.conv1`, …, `layer1.0.downsample.0/1`) without `fc`, so
torchvision and DeepLabV2 checkpoints load without renaming (see `pipeline/models/pretrained.py`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# Base channel widths of the stem and of layer1..layer4 (before the Bottleneck expansion).
STEM_WIDTH = 64
STAGE_WIDTHS = (64, 128, 256, 512)

NormLayer = Callable[[int], nn.Module]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (detectron2 `FrozenBatchNorm2d`).

    All four tensors are buffers, so no optimiser sees them and `requires_grad` is False; the state-dict
    keys are nn.BatchNorm2d's (`weight`, `bias`, `running_mean`, `running_var`). A `num_batches_tracked`
    entry in a loaded state dict (written by nn.BatchNorm2d) is accepted and ignored.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batchnorm(cls, layer: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        """A frozen copy of `layer`'s affine parameters and running statistics (eps kept)."""
        frozen = cls(layer.num_features, eps=layer.eps).to(layer.running_mean.device)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                value = getattr(layer, name)
                if value is not None:
                    getattr(frozen, name).copy_(value)
        return frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] → y [N, C, H, W], an affine map per channel (differentiable in x only)."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class StagedBackbone(nn.Module):
    """A backbone made of numbered stages (1 = the stem), the first `freeze_stages` of them frozen.

    A frozen stage's parameters have `requires_grad=False`, it stays in eval mode after `.train()`, and it
    runs under `torch.no_grad()`, so no backward pass goes through it (the stages are a prefix: nothing
    before them needs a gradient). Its BatchNorm2d layers become FrozenBatchNorm2d with the same values
    (same state-dict keys, less the counters the loaders ignore): running statistics never move, and
    code that switches every BatchNorm's γ, β back on (`batchnorm_affine_trainable`, adapt.bn_affine:
    train) finds none there, so no parameter is left that requires a gradient it never gets (which
    DistributedDataParallel would refuse). Subclasses list their stages in `stage_modules` and run stage
    i inside `self.frozen(i)`; they provide `forward_stem`, `forward_body`, `copy_stem` and `out_channels`.
    """

    freeze_stages: int = 0
    stem_stages: int  # how many of the stages `forward_stem` runs

    def _init_weights(self) -> None:
        # Fan-out normal convolutions, unit BatchNorm (torchvision's ResNet and the TensorFlow EfficientNet
        # builder agree); pretrained weights, when given, overwrite it.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stage_modules(self) -> list[tuple[nn.Module, ...]]:
        """The modules holding the parameters of stage 1, 2, …, in order."""
        raise NotImplementedError

    @property
    def num_stages(self) -> int:
        return len(self.stage_modules())

    def set_freeze_stages(self, freeze_stages: int) -> None:
        """Freeze stages 1..`freeze_stages` (0: none). The count can only grow: a frozen stage's
        BatchNorm has been replaced, so there is no unfreezing."""
        if (
            not isinstance(freeze_stages, int)
            or isinstance(freeze_stages, bool)
            or not (self.freeze_stages <= freeze_stages <= self.num_stages)
        ):
            raise ValueError(
                f"freeze_stages={freeze_stages!r}: allowed an integer from {self.freeze_stages} to "
                f"{self.num_stages} (stages of {type(self).__name__}; {self.freeze_stages} frozen already)"
            )
        self.freeze_stages = freeze_stages
        frozen = {
            id(inner)
            for modules in self.stage_modules()[:freeze_stages]
            for m in modules
            for inner in m.modules()
        }
        for name, module in list(self.named_modules()):
            if isinstance(module, nn.BatchNorm2d) and id(module) in frozen:
                parent, _, attribute = name.rpartition(".")
                setattr(self.get_submodule(parent), attribute, FrozenBatchNorm2d.from_batchnorm(module))
        for modules in self.stage_modules()[:freeze_stages]:
            for module in modules:
                module.requires_grad_(False)
        self.train(self.training)

    def frozen(self, stage: int) -> contextlib.AbstractContextManager:
        """`torch.no_grad()` around a frozen stage (1-based), else a no-op."""
        return torch.no_grad() if stage <= self.freeze_stages else contextlib.nullcontext()

    def train(self, mode: bool = True) -> StagedBackbone:
        super().train(mode)
        for modules in self.stage_modules()[: self.freeze_stages]:
            for module in modules:
                module.train(False)  # a frozen stage computes as in evaluation
        return self


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution whose padding keeps the size at stride 1 (padding = dilation)."""
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        bias=False,
    )


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual (ResNet-18/34); the stride sits on the first conv."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int,
        dilation: int,
        downsample: nn.Module | None,
        norm_layer: NormLayer,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        del stride_in_1x1  # a BasicBlock has no 1x1 conv; the factory refuses the combination
        self.conv1 = conv3x3(in_channels, planes, stride, dilation)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 → 3x3 → 1x1 with a residual (ResNet-50/101), output `planes * 4` channels.

    `stride_in_1x1=True` is the Caffe / DeepLabV2 placement of the stride (on conv1), False torchvision's
    (on conv2, "ResNet v1.5").
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int,
        dilation: int,
        downsample: nn.Module | None,
        norm_layer: NormLayer,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_channels, planes, stride_1x1)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride_3x3, dilation)
        self.bn2 = norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]

# (stride, dilation) of layer2..layer4 for each output stride; layer1 always runs at stride 1.
STAGE_STRIDES: dict[int, tuple[tuple[int, int], ...]] = {
    8: ((2, 1), (1, 2), (1, 4)),  # DeepLabV2
    16: ((2, 1), (2, 1), (1, 2)),
    32: ((2, 1), (2, 1), (2, 1)),
}


def scaled_width(base: int, width: float) -> int:
    """Channel count `base * width`, rounded half up, at least 1 (width 0.25: 64 → 16, 512 → 128)."""
    return max(1, int(base * width + 0.5))


class ResNetStem(nn.Module):
    """conv1 → bn1 → ReLU → max-pool → layer1: the part the official DASS code duplicates for target
    images. Built only by `ResNet.copy_stem`, so its keys (`conv1`, `bn1`, `layer1.*`) are the backbone's.
    """

    def __init__(self, conv1: nn.Module, bn1: nn.Module, layer1: nn.Module) -> None:
        super().__init__()
        self.conv1 = conv1
        self.bn1 = bn1
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = layer1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] → layer1 features [N, C1, ⌈H/4⌉, ⌈W/4⌉]."""
        return self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))


class ResNet(StagedBackbone):
    """ResNet trunk without `fc`: images [N, 3, H, W] → features [N, out_channels, ⌈H/s⌉, ⌈W/s⌉],
    s = output_stride. `forward_stem` + `forward_body` split it after layer1 (for a separate target stem).
    `freeze_stages` = k freezes stages 1..k of: 1 conv1 + bn1, 2 layer1, 3 layer2, 4 layer3, 5 layer4.
    """

    stem_stages = 2

    def __init__(
        self,
        block: Block,
        layers: tuple[int, int, int, int],
        *,
        width: float = 1.0,
        output_stride: int = 8,
        frozen_bn: bool = False,
        stride_in_1x1: bool = False,
        freeze_stages: int = 0,
    ) -> None:
        super().__init__()
        if output_stride not in STAGE_STRIDES:
            raise ValueError(f"output_stride={output_stride!r}: allowed values are {sorted(STAGE_STRIDES)}")
        if not width > 0:
            raise ValueError(f"width={width!r}: must be a positive number")
        self.norm_layer: NormLayer = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        self.output_stride = output_stride
        self.stride_in_1x1 = stride_in_1x1
        self._block = block

        stem_channels = scaled_width(STEM_WIDTH, width)
        self.conv1 = nn.Conv2d(3, stem_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self.norm_layer(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        # torchvision's floor-mode pooling (DeepLabV2 uses ceil_mode=True, which adds a row/column for
        # even sizes); floor keeps the feature size at exactly ⌈H/s⌉.
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self._in_channels = stem_channels
        widths = [scaled_width(w, width) for w in STAGE_WIDTHS]
        self.layer1 = self._make_layer(widths[0], layers[0], stride=1, dilation=1)
        (s2, d2), (s3, d3), (s4, d4) = STAGE_STRIDES[output_stride]
        self.layer2 = self._make_layer(widths[1], layers[1], stride=s2, dilation=d2)
        self.layer3 = self._make_layer(widths[2], layers[2], stride=s3, dilation=d3)
        self.layer4 = self._make_layer(widths[3], layers[3], stride=s4, dilation=d4)
        self.out_channels = self._in_channels
        self._init_weights()
        self.set_freeze_stages(freeze_stages)

    def _make_layer(self, planes: int, blocks: int, *, stride: int, dilation: int) -> nn.Sequential:
        out_channels = planes * self._block.expansion
        downsample = None
        if stride != 1 or self._in_channels != out_channels:
            downsample = nn.Sequential(
                conv1x1(self._in_channels, out_channels, stride), self.norm_layer(out_channels)
            )
        kwargs = {"norm_layer": self.norm_layer, "stride_in_1x1": self.stride_in_1x1, "dilation": dilation}
        layers = [self._block(self._in_channels, planes, stride=stride, downsample=downsample, **kwargs)]
        self._in_channels = out_channels
        layers += [
            self._block(out_channels, planes, stride=1, downsample=None, **kwargs) for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def stage_modules(self) -> list[tuple[nn.Module, ...]]:
        """The modules of stage 1 (conv1, bn1), 2–5 (layer1–layer4)."""
        return [(self.conv1, self.bn1), (self.layer1,), (self.layer2,), (self.layer3,), (self.layer4,)]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] → layer1 features [N, C1, ⌈H/4⌉, ⌈W/4⌉] (stages 1–2)."""
        with self.frozen(1):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        with self.frozen(2):
            return self.layer1(x)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        """layer1 features → layer4 features [N, out_channels, ⌈H/s⌉, ⌈W/s⌉] (stages 3–5)."""
        for stage, layer in enumerate((self.layer2, self.layer3, self.layer4), start=3):
            with self.frozen(stage):
                x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_body(self.forward_stem(x))

    def copy_stem(self) -> ResNetStem:
        """An independent copy of conv1, bn1 and layer1 (same weights, no shared tensors)."""
        return ResNetStem(copy.deepcopy(self.conv1), copy.deepcopy(self.bn1), copy.deepcopy(self.layer1))


def resnet18(**kwargs: Any) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


def resnet34(**kwargs: Any) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), **kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)


def resnet101(**kwargs: Any) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 23, 3), **kwargs)
