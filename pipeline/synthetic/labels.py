"""Label ids of the synthetic domains: scene codes → the ids each dataset's label files hold, the colours
of GTA5's palette label PNGs, and Cityscapes' gtFine instance ids."""

from __future__ import annotations

import numpy as np

from pipeline.constants import CITYSCAPES_ID_OF_TRAIN_ID, SYNTHIA_ID_OF_TRAIN_ID, SYNTHIA_IGNORED_IDS
from pipeline.synthetic.codes import INSTANCE_CODES, LANE_MARKING, NUM_CODES, PARKING, ROAD


def _cityscapes_lut() -> np.ndarray:
    """Scene code → Cityscapes label id: identity, lane markings are road (as in gtFine and GTA5)."""
    lut = np.arange(NUM_CODES, dtype=np.uint8)
    lut[LANE_MARKING] = ROAD
    return lut


def _synthia_lut() -> np.ndarray:
    """Scene code → SYNTHIA class id; codes SYNTHIA has no class for become void (0)."""
    lut = np.full(NUM_CODES, SYNTHIA_IGNORED_IDS["void"], dtype=np.uint16)
    for cityscapes_id, synthia_id in zip(CITYSCAPES_ID_OF_TRAIN_ID, SYNTHIA_ID_OF_TRAIN_ID, strict=True):
        lut[cityscapes_id] = synthia_id
    lut[LANE_MARKING] = SYNTHIA_IGNORED_IDS["lanemarking"]
    lut[PARKING] = SYNTHIA_IGNORED_IDS["parking-slot"]
    return lut


LABEL_LUTS: dict[str, np.ndarray] = {
    "gta5": _cityscapes_lut(),
    "synthia": _synthia_lut(),
    "cityscapes": _cityscapes_lut(),
}

# Colour of every Cityscapes label id 0–33 (cityscapesScripts `labels.py`): the palette of GTA5 label PNGs.
CITYSCAPES_LABEL_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230),
    (119, 11, 32),
)  # fmt: skip


def cityscapes_instance_ids(label: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """gtFine instanceIds: label_id·1000 + k (k = 0, 1, … per object of that class) for classes with
    instances, label_id elsewhere."""
    out = label.astype(np.int32)
    has = (instance > 0) & np.isin(label, INSTANCE_CODES)
    if has.any():
        keys = label[has].astype(np.int64) << 16 | instance[has]
        unique, inverse = np.unique(keys, return_inverse=True)
        classes = unique >> 16
        # Rank of each object among the objects of its class.
        first = np.searchsorted(classes, classes)
        rank = np.arange(len(unique)) - first
        out[has] = (classes * 1000 + rank)[inverse]
    return out.astype(np.uint16)
