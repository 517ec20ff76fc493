"""The segmentor DASS trains: a dilated backbone (ResNet or EfficientNet-Lite), the DeepLabV2 classifier
and the contrast embedding.

`forward` returns the logits at input size (for cross-entropy on labels and for evaluation), the logits
at feature resolution, and the embedding the pixel-prototype contrast uses (design.md §4):

- `"aspp_concat"` (default, the official DASS code): the four ASPP branch outputs concatenated,
  D = 4·num_classes, raw (the losses take cosine similarities).
- `"projection"`: a head on the backbone features, 1x1 conv → BN → ReLU → 1x1 conv to `projection_dim`,
  L2-normalised along channels (the pixel-contrast projection head of Wang et al., ICCV 2021).

With `target_stem=True` (ResNet backbones) the segmentor also holds a target copy of conv1, bn1 and
layer1, as the official DASS code does: `domain="target"` routes images through it, `domain="source"`
through the backbone's own.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.batchnorm import set_domain
from pipeline.models.deeplabv2 import DeepLabV2Head
from pipeline.models.resnet import StagedBackbone

EMBEDDINGS = ("aspp_concat", "projection")
DOMAINS = ("source", "target")


class SegmentorOutput(NamedTuple):
    """What `Segmentor.forward` returns; h, w = ⌈H/s⌉, ⌈W/s⌉ for output stride s."""

    logits: torch.Tensor  # [N, C, H, W], bilinear upsampling of logits_lowres (align_corners=False)
    logits_lowres: torch.Tensor  # [N, C, h, w]
    embedding: torch.Tensor  # [N, D, h, w]; D = 4·C for "aspp_concat", projection_dim for "projection"


class ProjectionHead(nn.Module):
    """features [N, in_channels, h, w] → unit-length embedding [N, dim, h, w]."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        # A head of its own, trained from scratch: ordinary BatchNorm even when the backbone's is frozen.
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, dim, kernel_size=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(features), p=2, dim=1)


class Segmentor(nn.Module):
    """images [N, 3, H, W] → `SegmentorOutput`. Build it with `pipeline.models.create_segmentor`."""

    def __init__(
        self,
        backbone: StagedBackbone,
        num_classes: int,
        *,
        embedding: str = "aspp_concat",
        projection_dim: int = 64,
        target_stem: bool = False,
    ) -> None:
        super().__init__()
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding={embedding!r}: allowed values are {list(EMBEDDINGS)}")
        self.backbone = backbone
        self.classifier = DeepLabV2Head(backbone.out_channels, num_classes)
        self.embedding_type = embedding
        self.projection: ProjectionHead | None = None
        self.embedding_dim = self.classifier.num_branches * num_classes
        if embedding == "projection":
            self.projection = ProjectionHead(backbone.out_channels, projection_dim)
            self.embedding_dim = projection_dim
        self.target_stem = backbone.copy_stem() if target_stem else None

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    @property
    def has_target_stem(self) -> bool:
        return self.target_stem is not None

    @torch.no_grad()
    def copy_source_stem_to_target(self) -> None:
        """Overwrite the target stem with the backbone's conv1, bn1 and layer1 (no-op without one).

        Called after pretrained weights are loaded, so both stems start from the same weights.
        """
        if self.target_stem is None:
            return
        for name in ("conv1", "bn1", "layer1"):
            getattr(self.target_stem, name).load_state_dict(getattr(self.backbone, name).state_dict())

    def forward(self, images: torch.Tensor, domain: str = "source") -> SegmentorOutput:
        """images [N, 3, H, W] of `domain` ("source" or "target") → logits, logits_lowres, embedding."""
        if domain not in DOMAINS:
            raise ValueError(f"domain={domain!r}: allowed values are {list(DOMAINS)}")
        set_domain(self, domain)  # domain-specific BatchNorm (adapt.bn_statistics: per_domain) only
        if domain == "target" and self.target_stem is not None:
            stem = self.target_stem(images)
        else:
            stem = self.backbone.forward_stem(images)
        features = self.backbone.forward_body(stem)  # [N, F, h, w]
        branches = self.classifier.forward_branches(features)  # 4 x [N, C, h, w]
        logits_lowres = torch.stack(branches).sum(dim=0)
        # [N, 4C, h, w] (aspp_concat) or [N, projection_dim, h, w] (projection)
        embedding = torch.cat(branches, dim=1) if self.projection is None else self.projection(features)
        logits = F.interpolate(logits_lowres, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return SegmentorOutput(logits=logits, logits_lowres=logits_lowres, embedding=embedding)
