"""Models: dilated ResNet and EfficientNet-Lite backbones, the DeepLabV2 classifier and the DASS segmentor
(design.md §4)."""

from pipeline.models.factory import create_segmentor
from pipeline.models.segmentor import Segmentor, SegmentorOutput

__all__ = ["Segmentor", "SegmentorOutput", "create_segmentor"]
