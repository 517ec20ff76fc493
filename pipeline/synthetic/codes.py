"""What a scene records per pixel besides depth: the class code, the surface material (`Part`), the
face orientation (`Facing`) and the cast-shadow level, and how they are packed into the canvas fields.

Class codes are Cityscapes label ids (the GTA5 files use the same table) plus `LANE_MARKING`; each
domain's lookup table (`pipeline.synthetic.labels`) maps them to the ids its label files hold.
"""

from __future__ import annotations

import enum

from pipeline.constants import CITYSCAPES_ID_OF_TRAIN_ID, CITYSCAPES_IGNORED_IDS, CLASS_NAMES

# ---- classes: the scene writes Cityscapes label ids (the GTA5 files use the same table) -------------
_ID = dict(zip(CLASS_NAMES, CITYSCAPES_ID_OF_TRAIN_ID, strict=True)) | CITYSCAPES_IGNORED_IDS
ROAD, SIDEWALK, BUILDING, WALL, FENCE = (_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN = _ID["pole"], _ID["traffic light"], _ID["traffic sign"]
VEGETATION, TERRAIN, SKY = _ID["vegetation"], _ID["terrain"], _ID["sky"]
PERSON, RIDER, CAR, TRUCK, BUS = (_ID[n] for n in ("person", "rider", "car", "truck", "bus"))
TRAIN, MOTORCYCLE, BICYCLE = _ID["train"], _ID["motorcycle"], _ID["bicycle"]
UNLABELED, EGO_VEHICLE, RECT_BORDER = _ID["unlabeled"], _ID["ego vehicle"], _ID["rectification border"]
STATIC, DYNAMIC, GROUND, PARKING = _ID["static"], _ID["dynamic"], _ID["ground"], _ID["parking"]
RAIL_TRACK, GUARD_RAIL, BRIDGE = _ID["rail track"], _ID["guard rail"], _ID["bridge"]
CARAVAN, TRAILER = _ID["caravan"], _ID["trailer"]
# Painted lane markings: part of `road` in Cityscapes and GTA5 labels, their own class (22) in SYNTHIA.
# Not a Cityscapes id (those end at 33); each domain's lookup table maps it.
LANE_MARKING = 34
NUM_CODES = 35
# Classes whose objects get instance ids (Cityscapes `hasInstances`).
INSTANCE_CODES = (PERSON, RIDER, CAR, TRUCK, BUS, CARAVAN, TRAILER, TRAIN, MOTORCYCLE, BICYCLE)


class Part(enum.IntEnum):
    """Surface materials; a domain's style gives each a palette and a texture."""

    SKY = 0
    ASPHALT = enum.auto()
    MARKING = enum.auto()
    CURB = enum.auto()
    PAVING = enum.auto()
    PAVING_JOINT = enum.auto()
    PARKING_PAVE = enum.auto()
    GRASS = enum.auto()
    SOIL = enum.auto()
    GRAVEL = enum.auto()
    RAIL_METAL = enum.auto()
    FACADE = enum.auto()
    WINDOW = enum.auto()
    SHOPFRONT = enum.auto()
    LEDGE = enum.auto()
    CONCRETE = enum.auto()
    FENCE_MESH = enum.auto()
    FENCE_POST = enum.auto()
    GUARDRAIL = enum.auto()
    FOLIAGE = enum.auto()
    BARK = enum.auto()
    POLE_METAL = enum.auto()
    SIGN_FACE = enum.auto()
    SIGN_INNER = enum.auto()
    SIGN_BACK = enum.auto()
    LIGHT_HOUSING = enum.auto()
    LAMP_ON = enum.auto()
    LAMP_OFF = enum.auto()
    STREETLAMP = enum.auto()
    CAR_PAINT = enum.auto()
    GLASS = enum.auto()
    TYRE = enum.auto()
    TAILLIGHT = enum.auto()
    HEADLIGHT = enum.auto()
    PLATE = enum.auto()
    BUMPER = enum.auto()
    TRUCK_PAINT = enum.auto()
    CARGO_BOX = enum.auto()
    BUS_PAINT = enum.auto()
    TRAIN_PAINT = enum.auto()
    BIKE_FRAME = enum.auto()
    SPOKES = enum.auto()
    SKIN = enum.auto()
    HAIR = enum.auto()
    CLOTH_TOP = enum.auto()
    CLOTH_BOTTOM = enum.auto()
    HELMET = enum.auto()
    CLUTTER = enum.auto()
    HOOD = enum.auto()
    BORDER = enum.auto()


class Facing(enum.IntEnum):
    """Orientation of a surface, for the style's lighting."""

    UP = 0  # ground, roofs
    FRONT = 1  # faces the camera (normal −z)
    POS_X = 2  # faces right (+x): facades on the left of the street, inner sides of left vehicles
    NEG_X = 3  # faces left (−x)
    EMISSIVE = 4  # sky, lamps: no lighting, no shadow


# Packed per-pixel fields. `ids` = code | instance << 8; `look` = part | variant << 8 | facing << 16 |
# shadow << 20 (shadow quantised to 0…SHADOW_LEVELS). One cv2.fillPoly per field keeps drawing cheap.
SHADOW_LEVELS = 15


def pack_look(part: int, variant: int, facing: int, shadow: int = 0) -> int:
    """The `look` field of one surface: part | variant << 8 | facing << 16 | shadow << 20."""
    return int(part) | (int(variant) << 8) | (int(facing) << 16) | (int(shadow) << 20)
