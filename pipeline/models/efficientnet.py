"""EfficientNet-Lite backbones (Tan & Le 2019; the Lite variants of tensorflow/tpu `efficientnet/lite`).

The Lite variants differ from EfficientNet-B: ReLU6 instead of swish, no squeeze-excite, and the stem
(32 channels) and head (1280 channels) are not scaled with the width coefficient, nor are the repeats of
the first and last block groups scaled with the depth coefficient. Lite0/1/2 are built here.

State-dict keys are the `efficientnet_pytorch` layout the ImageNet weights ship in (`_conv_stem`, `_bn0`,
`_blocks.<i>._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`, `_conv_head`, `_bn1`); the
ImageNet classifier `_fc` exists only in `EfficientNetLiteClassifier`. What the weights need, checked
against them (tests/test_efficientnet.py classifies scikit-image's photos):

- TensorFlow "SAME" padding: a stride-2 convolution of an even-sized input pads one pixel less at the
  top/left than at the bottom/right (PyTorch's symmetric padding would move its sampling grid by one
  input pixel);
- BatchNorm eps 1e-3, momentum 0.01 (TensorFlow's decay 0.99);
- inputs scaled as (pixel − 127) / 128 (the Lite builder's "inception-style" MEAN_RGB / STDDEV_RGB). The
  pipeline feeds ImageNet mean/std-normalised images (pipeline/data/transforms.py), so the first
  operation is the fixed per-channel affine map from that normalisation to this one (`input_conversion`).

Options as the ResNet's (pipeline/models/resnet.py): `output_stride` 32 is the classification network;
16 runs the last stride-2 block group (group 6 of 7) and the one after it at stride 1, dilation 2; 8
also the two before (groups 4–5 at stride 1, dilation 2; groups 6–7 at dilation 4). `frozen_bn` uses
FrozenBatchNorm2d. `freeze_stages` = k freezes stages 1..k of: 1 the stem (`_conv_stem`, `_bn0`), 2–8
the seven block groups, 9 the head (`_conv_head`, `_bn1`). `forward_stem` runs stages 1–3 (stride 4,
like the ResNet's conv1…layer1).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.constants import IMAGE_MEAN_RGB, IMAGE_STD_RGB
from pipeline.models.resnet import FrozenBatchNorm2d, NormLayer, StagedBackbone

STEM_CHANNELS = 32  # fixed in the Lite variants, whatever the width coefficient
HEAD_CHANNELS = 1280  # idem
IMAGENET_CLASSES = 1000
BN_EPS = 1e-3  # TensorFlow's; the weights' running variances were estimated with it
BN_MOMENTUM = 0.01  # TensorFlow's decay 0.99
# The Lite builder's input scaling: (pixel − 127) / 128 for pixels in 0..255, every channel.
WEIGHTS_INPUT_MEAN = 127.0
WEIGHTS_INPUT_STD = 128.0
# What the pipeline feeds: (pixel / 255 − mean) / std with the ImageNet statistics (pipeline/constants.py,
# the one definition pipeline/data/transforms.py normalises with).
PIPELINE_INPUT_MEAN = IMAGE_MEAN_RGB
PIPELINE_INPUT_STD = IMAGE_STD_RGB
CHANNEL_DIVISOR = 8  # scaled channel counts are multiples of it (TensorFlow `round_filters`)


class BlockGroup(NamedTuple):
    """One row of the EfficientNet-B0 / Lite0 table (paper Table 1): `repeats` MBConv blocks."""

    repeats: int
    kernel: int
    stride: int  # of the group's first block; the others have stride 1
    expand: int  # expansion ratio of the inverted bottleneck
    in_channels: int
    out_channels: int


# tensorflow/tpu efficientnet_lite_builder.py, without squeeze-excite.
LITE_GROUPS = (
    BlockGroup(1, 3, 1, 1, 32, 16),
    BlockGroup(2, 3, 2, 6, 16, 24),
    BlockGroup(2, 5, 2, 6, 24, 40),
    BlockGroup(3, 3, 2, 6, 40, 80),
    BlockGroup(3, 5, 1, 6, 80, 112),
    BlockGroup(4, 5, 2, 6, 112, 192),
    BlockGroup(1, 3, 1, 6, 192, 320),
)
# (width coefficient, depth coefficient) of each variant (efficientnet_lite_builder.py).
VARIANTS: dict[str, tuple[float, float]] = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}
# (stride, dilation) of each block group for each output stride: the stride-2 groups are groups 2, 3, 4
# and 6 (1-based); OS 16 dilates from group 6 on, OS 8 from group 4 on (2, then 4 from group 6).
GROUP_STRIDES: dict[int, tuple[tuple[int, int], ...]] = {
    32: ((1, 1), (2, 1), (2, 1), (2, 1), (1, 1), (2, 1), (1, 1)),
    16: ((1, 1), (2, 1), (2, 1), (2, 1), (1, 1), (1, 2), (1, 2)),
    8: ((1, 1), (2, 1), (2, 1), (1, 2), (1, 2), (1, 4), (1, 4)),
}
NUM_STAGES = 1 + len(LITE_GROUPS) + 1  # stem, the block groups, head
STEM_STAGES = 3  # forward_stem: the stem and groups 1–2 (stride 4)


def scaled_channels(channels: int, width: float) -> int:
    """`channels · width` rounded to a multiple of 8, never more than 10 % below (TF `round_filters`)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    return rounded + CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded


def scaled_repeats(repeats: int, depth: float) -> int:
    return math.ceil(repeats * depth)


class Conv2dSame(nn.Conv2d):
    """Bias-free nn.Conv2d with TensorFlow's "SAME" padding: output size ⌈H/stride⌉.

    At stride 1 (odd kernel) that is the symmetric padding (kernel − 1)·dilation / 2, done by nn.Conv2d.
    At stride 2 the total padding depends on the input size, and its odd pixel goes to the bottom/right
    (TensorFlow) where PyTorch would put it on both sides; it is computed per input in `forward`.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, dilation: int = 1,
        groups: int = 1,
    ) -> None:  # fmt: skip
        span = (kernel_size - 1) * dilation
        padding = span // 2 if stride == 1 else 0
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
            groups=groups, bias=False,
        )  # fmt: skip
        self._span = span

    def _same_padding(self, size: int) -> tuple[int, int]:
        stride = self.stride[0]
        total = max((math.ceil(size / stride) - 1) * stride + self._span + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] != 1:
            top, bottom = self._same_padding(x.shape[-2])
            left, right = self._same_padding(x.shape[-1])
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Inverted residual (MobileNetV2): 1x1 expand → depthwise k×k → 1x1 project, ReLU6, no SE.

    x [N, in_channels, H, W] → [N, out_channels, ⌈H/stride⌉, ⌈W/stride⌉]; the residual is added when
    the block of the classification network has stride 1 and in_channels == out_channels (`residual`).
    The expand conv is absent at expansion ratio 1 (group 1), as in the weights.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel: int, stride: int, dilation: int, expand: int,
        residual: bool, norm_layer: NormLayer,
    ) -> None:  # fmt: skip
        super().__init__()
        hidden = in_channels * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False)
            self._bn0 = norm_layer(hidden)
        self._depthwise_conv = Conv2dSame(
            hidden, hidden, kernel, stride=stride, dilation=dilation, groups=hidden
        )
        self._bn1 = norm_layer(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)
        self._bn2 = norm_layer(out_channels)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if hasattr(self, "_expand_conv"):
            out = F.relu6(self._bn0(self._expand_conv(out)), inplace=True)
        out = F.relu6(self._bn1(self._depthwise_conv(out)), inplace=True)
        out = self._bn2(self._project_conv(out))  # linear bottleneck: no activation
        return out + x if self.residual else out


def input_conversion() -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) [1, 3, 1, 1] with scale·x + shift = (255·p − 127) / 128 for x = (p − mean) / std,
    p in [0, 1]: the pipeline's ImageNet normalisation to the weights' one."""
    mean = torch.tensor(PIPELINE_INPUT_MEAN, dtype=torch.float64)
    std = torch.tensor(PIPELINE_INPUT_STD, dtype=torch.float64)
    scale = 255.0 * std / WEIGHTS_INPUT_STD
    shift = (255.0 * mean - WEIGHTS_INPUT_MEAN) / WEIGHTS_INPUT_STD
    return scale.float().view(1, 3, 1, 1), shift.float().view(1, 3, 1, 1)


class EfficientNetLite(StagedBackbone):
    """EfficientNet-Lite trunk without `_fc`: images [N, 3, H, W] (ImageNet-normalised, as the pipeline's
    loaders give) → features [N, 1280, ⌈H/s⌉, ⌈W/s⌉], s = output_stride: the `_conv_head`/`_bn1` output
    after ReLU6, as the classification network pools.
    """

    stem_stages = STEM_STAGES

    def __init__(
        self,
        variant: str = "efficientnet_lite0",
        *,
        output_stride: int = 32,
        frozen_bn: bool = False,
        freeze_stages: int = 0,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r}: allowed values are {list(VARIANTS)}")
        if output_stride not in GROUP_STRIDES:
            raise ValueError(f"output_stride={output_stride!r}: allowed values are {sorted(GROUP_STRIDES)}")
        self.variant = variant
        self.output_stride = output_stride
        width, depth = VARIANTS[variant]
        self.norm_layer: NormLayer = (
            functools.partial(FrozenBatchNorm2d, eps=BN_EPS)
            if frozen_bn
            else functools.partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM)
        )
        scale, shift = input_conversion()
        # Not in the state dict: fixed by the two normalisations, never trained or loaded.
        self.register_buffer("input_scale", scale, persistent=False)
        self.register_buffer("input_shift", shift, persistent=False)

        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = self.norm_layer(STEM_CHANNELS)
        blocks: list[MBConvBlock] = []
        self.group_bounds: list[tuple[int, int]] = []  # [first, last + 1) block index of each group
        in_channels = STEM_CHANNELS
        last = len(LITE_GROUPS) - 1
        for index, (group, (stride, dilation)) in enumerate(
            zip(LITE_GROUPS, GROUP_STRIDES[output_stride], strict=True)
        ):
            fixed = index in (0, last)  # the Lite variants keep the first and last groups' repeats
            repeats = group.repeats if fixed else scaled_repeats(group.repeats, depth)
            out_channels = scaled_channels(group.out_channels, width)
            start = len(blocks)
            for position in range(repeats):
                block_in = in_channels if position == 0 else out_channels
                network_stride = group.stride if position == 0 else 1  # in the classification network
                blocks.append(
                    MBConvBlock(
                        block_in,
                        out_channels,
                        kernel=group.kernel,
                        stride=stride if position == 0 else 1,
                        dilation=dilation,
                        expand=group.expand,
                        residual=network_stride == 1 and block_in == out_channels,
                        norm_layer=self.norm_layer,
                    )
                )
            self.group_bounds.append((start, len(blocks)))
            in_channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(in_channels, HEAD_CHANNELS, kernel_size=1, bias=False)
        self._bn1 = self.norm_layer(HEAD_CHANNELS)
        self.out_channels = HEAD_CHANNELS
        self._init_weights()
        self.set_freeze_stages(freeze_stages)

    def stage_modules(self) -> list[tuple[nn.Module, ...]]:
        """The modules of stage 1 (stem), 2–8 (block groups 1–7) and 9 (head), in order."""
        groups = [tuple(self._blocks[first:end]) for first, end in self.group_bounds]
        return [(self._conv_stem, self._bn0), *groups, (self._conv_head, self._bn1)]

    def _run_group(self, x: torch.Tensor, group: int) -> torch.Tensor:
        """Block group `group` (0-based), i.e. stage group + 2."""
        first, end = self.group_bounds[group]
        with self.frozen(group + 2):
            for block in self._blocks[first:end]:
                x = block(x)
        return x

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] → group-2 features [N, 24, ⌈H/4⌉, ⌈W/4⌉] (stages 1–3)."""
        with self.frozen(1):
            x = x * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)
            x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for group in range(STEM_STAGES - 1):
            x = self._run_group(x, group)
        return x

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        """group-2 features → head features [N, 1280, ⌈H/s⌉, ⌈W/s⌉] (stages 4–9)."""
        for group in range(STEM_STAGES - 1, len(self.group_bounds)):
            x = self._run_group(x, group)
        with self.frozen(NUM_STAGES):
            return F.relu6(self._bn1(self._conv_head(x)), inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_body(self.forward_stem(x))

    def copy_stem(self) -> nn.Module:
        raise NotImplementedError(
            f"a target stem (model.target_stem) is supported only for ResNet backbones, not {self.variant}"
        )


class EfficientNetLiteClassifier(EfficientNetLite):
    """The ImageNet classification network: the trunk at output stride 32, global average pooling and
    `_fc` (dropout is identity at inference). images [N, 3, H, W] → logits [N, 1000]. Holds every key
    of the shipped weights file, `_fc` included, to check the weights on labelled photos."""

    def __init__(self, variant: str = "efficientnet_lite0", **kwargs: Any) -> None:
        super().__init__(variant, output_stride=32, **kwargs)
        self._fc = nn.Linear(HEAD_CHANNELS, IMAGENET_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = super().forward(x)  # [N, 1280, ⌈H/32⌉, ⌈W/32⌉]
        return self._fc(features.mean(dim=(2, 3)))


def efficientnet_lite0(**kwargs: Any) -> EfficientNetLite:
    return EfficientNetLite("efficientnet_lite0", **kwargs)


def efficientnet_lite1(**kwargs: Any) -> EfficientNetLite:
    return EfficientNetLite("efficientnet_lite1", **kwargs)


def efficientnet_lite2(**kwargs: Any) -> EfficientNetLite:
    return EfficientNetLite("efficientnet_lite2", **kwargs)
