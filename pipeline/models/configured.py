"""The segmentor that params.yaml's `model` section describes (one place, used by every stage)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.config import Config
from pipeline.models.batchnorm import domain_batchnorm
from pipeline.models.factory import RESNET, create_segmentor
from pipeline.models.pretrained import IMAGENET, load_segmentor_state
from pipeline.models.segmentor import Segmentor


def build_model(config: Config, per_domain: bool | None = None) -> Segmentor:
    """The configured segmentor; with domain-specific BatchNorm when `per_domain` (default: when
    adapt.bn_statistics is per_domain). The warmup and the oracle always train plain BatchNorm."""
    model = config.model
    if per_domain is None:
        per_domain = config.adapt.bn_statistics == "per_domain"
    # depth, width and stride_in_1x1 describe a ResNet; params.yaml keeps them for any backbone.
    resnet_only = (
        {"depth": model.depth, "width": model.width, "stride_in_1x1": model.stride_in_1x1}
        if model.backbone == RESNET
        else {}
    )
    pretrained = model.pretrained
    if pretrained is not None and pretrained != IMAGENET:  # a file, relative to the project
        pretrained = config.resolve(pretrained)
    segmentor = create_segmentor(
        backbone=model.backbone,
        **resnet_only,
        output_stride=model.output_stride,
        frozen_bn=model.frozen_bn,
        freeze_stages=model.freeze_stages,
        embedding=model.embedding,
        projection_dim=model.projection_dim,
        target_stem=model.target_stem,
        pretrained=pretrained,
    )
    return domain_batchnorm(segmentor) if per_domain else segmentor


def load_model(config: Config, model_path: str | Path) -> Segmentor:
    """The params' segmentor with a checkpoint's weights, in eval mode (evaluation, labelling, `predict`).
    `model.pretrained` is not read: the checkpoint replaces every weight, and a model fetched from MLflow
    must load where that file is absent."""
    without_init = dataclasses.replace(config, model=dataclasses.replace(config.model, pretrained=None))
    model = build_model(without_init)
    load_segmentor_state(model, model_path)
    return model.eval()
