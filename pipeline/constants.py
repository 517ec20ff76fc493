"""Label tables shared by every part of the pipeline.

Train ids follow Cityscapes (0 road … 18 bicycle); 255 marks pixels that carry no training signal.
The tables below are the published ones (Cityscapes `labels.py`, the SYNTHIA-RAND-CITYSCAPES README)
restricted to what the pipeline needs; design.md §3 fixes the mappings.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

NUM_CLASSES = 19
IGNORE_INDEX = 255
# ImageNet statistics of the input normalisation, (pixel / 255 − mean) / std: the pretrained backbones
# (torchvision / DeepLabV2 init files) expect them, and the EfficientNet-Lite converts from them to its own.
IMAGE_MEAN_RGB: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGE_STD_RGB: tuple[float, float, float] = (0.229, 0.224, 0.225)
# The target labels every adaptation step measures (Table 4): static CBST y_F, dynamic y_D without and with
# calibration, and their hybrid. Keys of the step diagnostics and rows of the report's label tables.
LABEL_KINDS: tuple[str, ...] = ("static", "dynamic_nocal", "dynamic_cal", "hybrid")
# The ablation's rows (paper Table 3), in order, with their titles in the report. The one list of them:
# params' ablation.rows and sweep.row accept these names (AblationRow), each row's loss switches are
# pipeline/training/adaptation_losses.py's ROWS (built from these names).
ABLATION_ROWS: dict[str, str] = {
    "base": "L_base",
    "fc": "+ L_FC",
    "fc_bc": "+ L_FC + L_BC",
    "dyn_nocal": "+ y_D (w/o cal.)",
    "dass": "+ y_D (w/ cal.) = DASS",
}
AblationRow = Literal[tuple(ABLATION_ROWS)]  # type: ignore[valid-type]  # Literal["base", …, "dass"]

CLASS_NAMES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# Cityscapes colour of each train id (used to colourise labels and predictions).
TRAIN_ID_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)

# Cityscapes label ids of the 19 evaluated classes, in train-id order (GTA5 labels use the same ids).
CITYSCAPES_ID_OF_TRAIN_ID: tuple[int, ...] = (
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
)  # fmt: skip

# SYNTHIA-RAND-CITYSCAPES class ids of the 19 classes, in train-id order. SYNTHIA has no terrain,
# truck or train pixels in practice; that is why its protocol reports 16 (and 13) classes.
SYNTHIA_ID_OF_TRAIN_ID: tuple[int, ...] = (
    3, 4, 2, 21, 5, 7, 15, 9, 6, 16, 1, 10, 17, 8, 18, 19, 20, 12, 11,
)  # fmt: skip

# Cityscapes label ids that exist but are not evaluated (all map to IGNORE_INDEX), with their names,
# so the synthetic target can hold them as the real gtFine files do.
CITYSCAPES_IGNORED_IDS: dict[str, int] = {
    "unlabeled": 0,
    "ego vehicle": 1,
    "rectification border": 2,
    "out of roi": 3,
    "static": 4,
    "dynamic": 5,
    "ground": 6,
    "parking": 9,
    "rail track": 10,
    "guard rail": 14,
    "bridge": 15,
    "tunnel": 16,
    "polegroup": 18,
    "caravan": 29,
    "trailer": 30,
}

# SYNTHIA ids outside the 19 classes (mapped to IGNORE_INDEX).
SYNTHIA_IGNORED_IDS: dict[str, int] = {
    "void": 0,
    "parking-slot": 13,
    "road-work": 14,
    "lanemarking": 22,
}

# Evaluation protocols (train ids averaged). SYNTHIA→Cityscapes papers report 16 classes (no terrain,
# truck, train) and 13 classes (mIoU*: also no wall, fence, pole).
PROTOCOL_19: tuple[int, ...] = tuple(range(NUM_CLASSES))
PROTOCOL_16: tuple[int, ...] = tuple(c for c in PROTOCOL_19 if c not in (9, 14, 16))
PROTOCOL_13: tuple[int, ...] = tuple(c for c in PROTOCOL_16 if c not in (3, 4, 5))


def id_to_train_id_lut(ids_of_train_ids: tuple[int, ...], size: int = 65536) -> np.ndarray:
    """Lookup table mapping a dataset's label id to its train id; every other id maps to 255.

    `size` covers the id range of the label files (65536 for 16-bit SYNTHIA labels).
    """
    lut = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for train_id, label_id in enumerate(ids_of_train_ids):
        lut[label_id] = train_id
    return lut


CITYSCAPES_LUT = id_to_train_id_lut(CITYSCAPES_ID_OF_TRAIN_ID, size=256)
SYNTHIA_LUT = id_to_train_id_lut(SYNTHIA_ID_OF_TRAIN_ID, size=65536)


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """Colour a train-id map [H, W] with the Cityscapes palette → uint8 [H, W, 3]; 255 is black."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:NUM_CLASSES] = np.asarray(TRAIN_ID_PALETTE, dtype=np.uint8)
    return palette[np.asarray(train_ids, dtype=np.uint8)]
