"""`create_segmentor`: the one way the pipeline builds a model (timm-style factory over a plain dict).

Defaults are the DASS setting scaled by argument: DeepLabV2 output stride 8, the ASPP-concat embedding
of the official code, trainable BatchNorm, torchvision-style Bottleneck. For the DeepLabV2 ResNet-101 init
file, pass `depth=101, stride_in_1x1=True, pretrained=<file>` (usually with `frozen_bn=True`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.constants import NUM_CLASSES
from pipeline.models.pretrained import load_backbone_weights
from pipeline.models.resnet import STAGE_STRIDES, ResNet, resnet18, resnet34, resnet50, resnet101
from pipeline.models.segmentor import EMBEDDINGS, Segmentor

BACKBONES: dict[int, Callable[..., ResNet]] = {
    18: resnet18,
    34: resnet34,
    50: resnet50,
    101: resnet101,
}
BOTTLENECK_DEPTHS = (50, 101)


def _check(name: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r}: allowed {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def create_segmentor(
    *,
    depth: int,
    num_classes: int = NUM_CLASSES,
    width: float = 1.0,
    output_stride: int = 8,
    frozen_bn: bool = False,
    stride_in_1x1: bool = False,
    embedding: str = "aspp_concat",
    projection_dim: int = 64,
    target_stem: bool = False,
    pretrained: str | Path | None = None,
) -> Segmentor:
    """Build a `Segmentor` on a ResNet of `depth` (18, 34, 50, 101).

    width: multiplier of every stage's channel count (0.25 → ResNet-18 stages of 16/32/64/128).
    output_stride: 8 (DeepLabV2, layer3/layer4 dilated 2/4), 16 or 32.
    frozen_bn: FrozenBatchNorm2d in the backbone (statistics and affine fixed).
    stride_in_1x1: Caffe / DeepLabV2 Bottleneck (depth 50/101 only).
    embedding: "aspp_concat" (D = 4·num_classes) or "projection" (D = projection_dim, unit length).
    target_stem: a second conv1/bn1/layer1 for domain="target", a copy of the source one.
    pretrained: a local backbone weights file (see `pipeline.models.pretrained`); None keeps the
        random initialisation. Nothing is ever downloaded.
    """
    _check("depth", depth, _is_int(depth) and depth in BACKBONES, f"values {sorted(BACKBONES)}")
    for name, count in (("num_classes", num_classes), ("projection_dim", projection_dim)):
        _check(name, count, _is_int(count) and count >= 1, "an integer >= 1")
    _check(
        "width",
        width,
        isinstance(width, int | float) and not isinstance(width, bool) and math.isfinite(width) and width > 0,
        "a finite number > 0",
    )
    _check(
        "output_stride",
        output_stride,
        _is_int(output_stride) and output_stride in STAGE_STRIDES,
        f"values {sorted(STAGE_STRIDES)}",
    )
    _check("embedding", embedding, embedding in EMBEDDINGS, f"values {list(EMBEDDINGS)}")
    flags = {"frozen_bn": frozen_bn, "stride_in_1x1": stride_in_1x1, "target_stem": target_stem}
    for name, flag in flags.items():
        _check(name, flag, isinstance(flag, bool), "True or False")
    _check(
        "stride_in_1x1",
        stride_in_1x1,
        not stride_in_1x1 or depth in BOTTLENECK_DEPTHS,
        f"True only with a Bottleneck depth {list(BOTTLENECK_DEPTHS)} (depth={depth} uses BasicBlock)",
    )

    backbone = BACKBONES[depth](
        width=width, output_stride=output_stride, frozen_bn=frozen_bn, stride_in_1x1=stride_in_1x1
    )
    if pretrained is not None:
        load_backbone_weights(backbone, pretrained)
    return Segmentor(
        backbone,
        num_classes,
        embedding=embedding,
        projection_dim=projection_dim,
        target_stem=target_stem,  # copied from the backbone after loading, so both stems start equal
    )
