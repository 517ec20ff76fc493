"""The DeepLabV2 ASPP classifier (Chen et al., TPAMI 2018), as in the official DASS / AdaptSegNet code.

Four parallel 3x3 convolutions with dilations 6/12/18/24 each predict class logits from the backbone
features; the logits are the sum of the four branches. The official DASS code uses the four branch
outputs, concatenated, as the embedding of its pixel-prototype contrast (design.md §4), so they are
exposed by `forward_branches`. The module is named `conv2d_list` as AdaptSegNet's `Classifier_Module`,
so a DeepLabV2 classifier's keys (`layer5.conv2d_list.<i>.weight|bias`) map one to one.
"""

from __future__ import annotations

import torch
from torch import nn

ASPP_DILATIONS = (6, 12, 18, 24)
# The official code draws the branch weights from N(0, 0.01²) (AdaptSegNet `Classifier_Module`).
ASPP_INIT_STD = 0.01


class DeepLabV2Head(nn.Module):
    """features [N, in_channels, h, w] → logits [N, num_classes, h, w] = Σ of the four branches."""

    def __init__(
        self, in_channels: int, num_classes: int, dilations: tuple[int, ...] = ASPP_DILATIONS
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=d, dilation=d, bias=True)
            for d in dilations
        )
        for conv in self.conv2d_list:
            nn.init.normal_(conv.weight, mean=0.0, std=ASPP_INIT_STD)
            # The official code leaves the bias at PyTorch's default initialisation.

    @property
    def num_branches(self) -> int:
        return len(self.conv2d_list)

    def forward_branches(self, features: torch.Tensor) -> list[torch.Tensor]:
        """features [N, in_channels, h, w] → one [N, num_classes, h, w] tensor per dilation."""
        return [conv(features) for conv in self.conv2d_list]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.forward_branches(features)).sum(dim=0)
