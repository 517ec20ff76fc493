"""`create_segmentor`: the one way the pipeline builds a model (timm-style factory over a plain dict).

Defaults are the DASS setting scaled by argument: a ResNet, DeepLabV2 output stride 8, the ASPP-concat
embedding of the official code, trainable BatchNorm, torchvision-style Bottleneck. For the DeepLabV2
ResNet-101 init file, pass `depth=101, stride_in_1x1=True, pretrained=<file>` (usually with
`frozen_bn=True`); for the packaged ImageNet EfficientNet-Lite0, `backbone="efficientnet_lite0",
pretrained="imagenet"`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.constants import NUM_CLASSES
from pipeline.models.efficientnet import efficientnet_lite0, efficientnet_lite1, efficientnet_lite2
from pipeline.models.pretrained import load_backbone_weights
from pipeline.models.resnet import (
    STAGE_STRIDES,
    ResNet,
    StagedBackbone,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
)
from pipeline.models.segmentor import EMBEDDINGS, Segmentor

RESNET = "resnet"
RESNET_DEPTHS: dict[int, Callable[..., ResNet]] = {
    18: resnet18,
    34: resnet34,
    50: resnet50,
    101: resnet101,
}
BOTTLENECK_DEPTHS = (50, 101)


def _resnet(*, depth: int, width: float, stride_in_1x1: bool, **common: Any) -> ResNet:
    return RESNET_DEPTHS[depth](width=width, stride_in_1x1=stride_in_1x1, **common)


# Every backbone builder takes output_stride, frozen_bn and freeze_stages; the ResNet also depth, width
# and stride_in_1x1.
BACKBONES: dict[str, Callable[..., StagedBackbone]] = {
    RESNET: _resnet,
    "efficientnet_lite0": efficientnet_lite0,
    "efficientnet_lite1": efficientnet_lite1,
    "efficientnet_lite2": efficientnet_lite2,
}
OUTPUT_STRIDES = sorted(STAGE_STRIDES)  # every backbone's (tests/test_efficientnet.py checks GROUP_STRIDES)


def _check(name: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r}: allowed {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def create_segmentor(
    *,
    backbone: str = RESNET,
    depth: int | None = None,
    num_classes: int = NUM_CLASSES,
    width: float = 1.0,
    output_stride: int = 8,
    frozen_bn: bool = False,
    stride_in_1x1: bool = False,
    freeze_stages: int = 0,
    embedding: str = "aspp_concat",
    projection_dim: int = 64,
    target_stem: bool = False,
    pretrained: str | Path | None = None,
) -> Segmentor:
    """Build a `Segmentor` on a `backbone`: "resnet" (of `depth` 18, 34, 50, 101) or
    "efficientnet_lite0" / "_lite1" / "_lite2".

    depth, width, stride_in_1x1: ResNet only (an EfficientNet-Lite refuses any but the defaults).
    width: multiplier of every stage's channel count (0.25 → ResNet-18 stages of 16/32/64/128).
    output_stride: 8 (DeepLabV2: ResNet layer3/layer4 dilated 2/4), 16 or 32.
    frozen_bn: FrozenBatchNorm2d in the backbone (statistics and affine fixed).
    stride_in_1x1: Caffe / DeepLabV2 Bottleneck (depth 50/101 only).
    freeze_stages: the first k backbone stages get no gradient and keep BatchNorm in eval mode (ResNet:
        1 conv1+bn1, 2–5 layer1–layer4; EfficientNet-Lite: 1 stem, 2–8 the block groups, 9 the head).
    embedding: "aspp_concat" (D = 4·num_classes) or "projection" (D = projection_dim, unit length).
    target_stem: a second conv1/bn1/layer1 for domain="target", a copy of the source one (ResNet only,
        freeze_stages 0).
    pretrained: a local backbone weights file, or "imagenet" for an EfficientNet-Lite's packaged weights
        (see `pipeline.models.pretrained`); None keeps the random initialisation. Nothing is downloaded.
    """
    _check("backbone", backbone, backbone in BACKBONES, f"values {list(BACKBONES)}")
    is_resnet = backbone == RESNET
    if is_resnet:
        _check("depth", depth, _is_int(depth) and depth in RESNET_DEPTHS, f"values {sorted(RESNET_DEPTHS)}")
    else:
        only_resnet = f"only with backbone={RESNET!r} (backbone={backbone!r})"
        _check("depth", depth, depth is None, f"None: depth is {only_resnet}")
        _check("width", width, width == 1.0, f"1.0: width is {only_resnet}")
        _check("stride_in_1x1", stride_in_1x1, stride_in_1x1 is False, f"False: True is {only_resnet}")
        _check("target_stem", target_stem, target_stem is False, f"False: a target stem is {only_resnet}")
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
        _is_int(output_stride) and output_stride in OUTPUT_STRIDES,
        f"values {OUTPUT_STRIDES}",
    )
    _check("embedding", embedding, embedding in EMBEDDINGS, f"values {list(EMBEDDINGS)}")
    flags = {"frozen_bn": frozen_bn, "stride_in_1x1": stride_in_1x1, "target_stem": target_stem}
    for name, flag in flags.items():
        _check(name, flag, isinstance(flag, bool), "True or False")
    if is_resnet:
        _check(
            "stride_in_1x1",
            stride_in_1x1,
            not stride_in_1x1 or depth in BOTTLENECK_DEPTHS,
            f"True only with a Bottleneck depth {list(BOTTLENECK_DEPTHS)} (depth={depth} uses BasicBlock)",
        )
    _check("freeze_stages", freeze_stages, _is_int(freeze_stages) and freeze_stages >= 0, "an integer >= 0")
    _check(
        "target_stem",
        target_stem,
        not target_stem or freeze_stages == 0,
        f"True only with freeze_stages=0 (a copied stem is not frozen; freeze_stages={freeze_stages})",
    )

    resnet_args = {"depth": depth, "width": width, "stride_in_1x1": stride_in_1x1} if is_resnet else {}
    trunk = BACKBONES[backbone](output_stride=output_stride, frozen_bn=frozen_bn, **resnet_args)
    _check(
        "freeze_stages",
        freeze_stages,
        freeze_stages <= trunk.num_stages,
        f"0 to {trunk.num_stages}, the stages of backbone={backbone!r}",
    )
    trunk.set_freeze_stages(freeze_stages)
    if pretrained is not None:
        load_backbone_weights(trunk, pretrained)
    return Segmentor(
        trunk,
        num_classes,
        embedding=embedding,
        projection_dim=projection_dim,
        target_stem=target_stem,  # copied from the backbone after loading, so both stems start equal
    )
