"""Colours of the synthetic domains: each material's anchor colours per domain (`PALETTES`), how far a
material's colour drifts from image to image (`MATERIAL_DRIFT`, the camera domain only), and the colour
table of one image that the renderer looks pixels up in."""

from __future__ import annotations

import functools

import numpy as np

from pipeline.synthetic.appearance import Drift, material_gains
from pipeline.synthetic.codes import Part

# ---- palettes: anchor colours (sRGB 0–255) per material ----------------------------------------------
# A variant v (0–255, one per object) picks anchor v mod len(anchors), so parts drawn with one variant
# get matching colours (a sign's face and symbol), and repeated anchors weight common colours.
Palette = dict[Part, list[tuple[int, int, int]]]

COMMON: Palette = {
    Part.SKY: [(140, 180, 225)],
    Part.ASPHALT: [(92, 92, 96)],
    Part.MARKING: [(232, 232, 226), (232, 232, 226), (232, 232, 226), (228, 192, 64)],
    Part.CURB: [(168, 165, 158)],
    Part.PAVING: [(150, 145, 140), (170, 160, 150), (140, 122, 112), (122, 122, 126)],
    Part.PAVING_JOINT: [(112, 108, 104)],
    Part.PARKING_PAVE: [(112, 110, 106), (128, 118, 106)],
    Part.GRASS: [(96, 132, 56), (112, 136, 62), (122, 128, 72)],
    Part.SOIL: [(128, 112, 92), (142, 126, 102)],
    Part.GRAVEL: [(122, 116, 106)],
    Part.RAIL_METAL: [(160, 158, 160)],
    Part.FACADE: [(190, 175, 150), (170, 165, 160), (200, 190, 170), (150, 110, 90), (185, 150, 120)],
    Part.WINDOW: [(55, 65, 80), (70, 85, 100), (45, 50, 56)],
    Part.SHOPFRONT: [(60, 70, 76), (92, 82, 72)],
    Part.LEDGE: [(200, 196, 190), (122, 116, 110)],
    Part.CONCRETE: [(160, 156, 150), (140, 136, 130), (176, 166, 150)],
    Part.FENCE_MESH: [(140, 140, 134), (112, 122, 110), (150, 130, 110)],
    Part.FENCE_POST: [(92, 92, 92), (72, 82, 72)],
    Part.GUARDRAIL: [(172, 172, 172)],
    Part.FOLIAGE: [(60, 95, 40), (76, 106, 46), (50, 80, 36), (86, 110, 50)],
    Part.BARK: [(82, 66, 50)],
    Part.POLE_METAL: [(112, 112, 112), (82, 88, 82), (142, 142, 142)],
    Part.SIGN_FACE: [(200, 32, 32), (32, 72, 172), (232, 192, 32), (222, 222, 222), (32, 122, 62)],
    Part.SIGN_INNER: [(240, 240, 240), (240, 240, 240), (32, 32, 32), (200, 32, 32), (240, 240, 240)],
    Part.SIGN_BACK: [(150, 150, 152)],
    Part.LIGHT_HOUSING: [(32, 32, 32), (40, 46, 40), (200, 170, 42)],
    Part.LAMP_ON: [(255, 46, 32), (255, 182, 24), (44, 255, 124)],
    Part.LAMP_OFF: [(44, 44, 44)],
    Part.STREETLAMP: [(182, 182, 172)],
    Part.CAR_PAINT: [
        (200, 200, 202),
        (30, 30, 32),
        (236, 236, 236),
        (110, 110, 116),
        (40, 56, 100),
        (132, 26, 26),
        (62, 72, 62),
        (150, 150, 156),
    ],
    Part.GLASS: [(40, 50, 60)],
    Part.TYRE: [(26, 26, 26)],
    Part.TAILLIGHT: [(192, 22, 22)],
    Part.HEADLIGHT: [(232, 232, 222)],
    Part.PLATE: [(232, 232, 232)],
    Part.BUMPER: [(36, 36, 38)],
    Part.TRUCK_PAINT: [(230, 230, 230), (200, 42, 32), (42, 82, 150), (82, 82, 82)],
    Part.CARGO_BOX: [(222, 222, 216), (182, 182, 176), (122, 42, 32)],
    Part.BUS_PAINT: [(232, 200, 42), (200, 42, 42), (236, 236, 236), (42, 122, 182)],
    Part.TRAIN_PAINT: [(232, 232, 232), (200, 42, 42), (232, 192, 42)],
    Part.BIKE_FRAME: [(30, 30, 30), (182, 32, 32), (32, 62, 152), (202, 202, 202)],
    Part.SPOKES: [(112, 112, 112)],
    Part.SKIN: [(226, 182, 152), (192, 142, 112), (142, 96, 72), (92, 62, 46)],
    Part.HAIR: [(42, 32, 22), (92, 62, 32), (22, 22, 22), (182, 152, 92)],
    Part.CLOTH_TOP: [
        (42, 42, 46),
        (182, 32, 42),
        (42, 72, 142),
        (202, 202, 202),
        (82, 112, 62),
        (152, 122, 92),
        (232, 202, 62),
    ],
    Part.CLOTH_BOTTOM: [(36, 42, 62), (30, 30, 30), (102, 92, 82), (62, 72, 102)],
    Part.HELMET: [(30, 30, 30), (222, 222, 222), (200, 32, 32)],
    Part.CLUTTER: [(72, 92, 72), (112, 82, 62), (62, 62, 66), (162, 142, 102)],
    Part.HOOD: [(26, 28, 30)],
    Part.BORDER: [(0, 0, 0)],
}

PALETTES: dict[str, Palette] = {
    "gta5": COMMON
    | {
        Part.ASPHALT: [(72, 74, 86)],
        Part.PAVING: [(188, 176, 160), (204, 192, 172), (176, 170, 168)],
        Part.PAVING_JOINT: [(176, 166, 152)],
        Part.CURB: [(210, 204, 194)],
        Part.GRASS: [(102, 172, 48), (128, 184, 58)],
        Part.FOLIAGE: [(52, 142, 34), (80, 162, 40), (40, 122, 30), (96, 150, 34)],
        Part.FACADE: [
            (218, 182, 128),
            (204, 110, 70),
            (232, 216, 170),
            (112, 142, 192),
            (172, 70, 50),
            (232, 170, 160),
            (242, 232, 212),
            (196, 160, 96),
        ],
        Part.WINDOW: [(52, 102, 164), (72, 132, 196), (40, 80, 130)],
        Part.CAR_PAINT: [
            (212, 26, 26),
            (242, 200, 12),
            (26, 72, 212),
            (20, 162, 72),
            (242, 242, 242),
            (26, 26, 30),
            (246, 132, 22),
            (132, 52, 172),
        ],
        Part.CLOTH_TOP: [
            (222, 42, 52),
            (42, 92, 222),
            (242, 212, 42),
            (242, 242, 242),
            (42, 182, 82),
            (30, 30, 34),
            (242, 122, 32),
        ],
        Part.CLOTH_BOTTOM: [(32, 52, 122), (30, 30, 30), (152, 122, 82), (72, 72, 82)],
    },
    "synthia": COMMON
    | {
        Part.ASPHALT: [(128, 122, 120)],
        Part.PAVING: [(178, 122, 102), (192, 176, 150), (160, 160, 170)],
        Part.PAVING_JOINT: [(170, 120, 100)],
        Part.CURB: [(202, 202, 202)],
        Part.FOLIAGE: [(96, 132, 62), (112, 142, 72), (84, 122, 70)],
        Part.FACADE: [
            (226, 206, 166),
            (186, 206, 226),
            (236, 192, 186),
            (206, 226, 186),
            (242, 236, 222),
            (202, 172, 142),
        ],
        Part.WINDOW: [(72, 82, 96), (102, 112, 122)],
        Part.CAR_PAINT: [
            (182, 62, 62),
            (62, 92, 172),
            (202, 202, 202),
            (62, 62, 62),
            (212, 182, 82),
            (92, 152, 112),
        ],
        Part.CLOTH_TOP: [(112, 62, 142), (62, 142, 142), (202, 142, 82), (142, 142, 142), (182, 82, 82)],
        Part.CLOTH_BOTTOM: [(62, 62, 92), (92, 82, 62), (42, 42, 52)],
        Part.SKIN: [(232, 196, 172), (202, 162, 132), (152, 112, 92)],
    },
    "cityscapes": COMMON
    | {
        Part.ASPHALT: [(96, 96, 96), (102, 100, 96)],
        # Grey concrete slabs and red-brown pavers.
        Part.PAVING: [(136, 130, 124), (150, 140, 130), (122, 116, 110), (140, 136, 132), (146, 116, 104)],
        Part.PAVING_JOINT: [(96, 92, 88)],
        Part.FACADE: [
            (152, 146, 136),
            (126, 120, 114),
            (172, 162, 146),
            (136, 110, 96),
            (156, 150, 150),
            (112, 106, 100),
            (182, 172, 156),
        ],
        # Window panes show dark rooms or mirror the pale overcast sky (the game's are tinted blue glass).
        Part.WINDOW: [(44, 50, 56), (150, 156, 160), (60, 64, 70), (118, 124, 130)],
        # Car and bus windows mirror the overcast sky as often as they show the dark inside.
        Part.GLASS: [(40, 50, 60), (128, 134, 140), (92, 98, 104)],
        # Crowns of street trees are mostly self-shadowed: dark, bluish green (the game's are lit lime).
        Part.FOLIAGE: [(46, 64, 46), (56, 74, 52), (40, 56, 42), (64, 78, 54)],
        # Verges are mown, trodden and dry: yellow-green, straw and bare patches, not a lawn green.
        Part.GRASS: [(100, 112, 64), (116, 116, 76), (128, 120, 82), (104, 100, 70)],
        Part.CLOTH_TOP: [
            (42, 42, 46),
            (60, 62, 72),
            (120, 40, 46),
            (72, 82, 110),
            (182, 182, 176),
            (96, 90, 80),
            (40, 40, 40),
        ],
    },
}

# Per-image colour drift of materials (`appearance.material_gains`), as tuples of parts that weather
# together. A game reuses a few texture assets, so a material looks alike in every frame (only the
# per-object jitter of `palette_table`); a real material differs from street to street, each its own way.
MATERIAL_DRIFT: dict[str, dict[tuple[Part, ...], Drift]] = {
    "gta5": {},
    "synthia": {},
    "cityscapes": {
        (Part.ASPHALT, Part.PARKING_PAVE): Drift(0.16, 0.04),  # fresh black … worn grey, dry or damp
        (Part.PAVING, Part.CURB, Part.PAVING_JOINT): Drift(0.14, 0.04),  # grey slabs … brown pavers
        (Part.GRASS, Part.SOIL): Drift(0.16, 0.12),  # spring green … straw and bare soil
        (Part.FOLIAGE,): Drift(0.22, 0.1),  # sunlit yellow-green … dark blue-green crowns
        (Part.FACADE, Part.LEDGE): Drift(0.16, 0.06),  # clean … grimy plaster, stone, brick
        (Part.CONCRETE,): Drift(0.14, 0.04),  # walls
        (Part.WINDOW, Part.SHOPFRONT, Part.GLASS): Drift(0.3, 0.06),  # reflecting the sky or the street
    },
}


# ---- the colour table of one image ---------------------------------------------------------------


@functools.cache
def _anchor_table(domain: str) -> np.ndarray:
    """[parts, 256, 3] anchor colour of every (part, variant) of a domain's palette."""
    variants = np.arange(256)
    table = np.zeros((len(Part), 256, 3), dtype=np.float32)
    for part in Part:
        anchors = np.asarray(PALETTES[domain][part], dtype=np.float32) / 255.0
        table[part] = anchors[variants % len(anchors)]
    table.flags.writeable = False
    return table


def palette_table(rng: np.random.Generator, domain: str) -> np.ndarray:
    """[parts · 256, 4] float32 colours (0–1, 4th channel unused) indexed by part · 256 + variant:
    each variant's anchor with a small per-variant jitter, times the image's material drift."""
    table = np.zeros((len(Part), 256, 4), dtype=np.float32)
    jitter = 1.0 + 0.07 * rng.standard_normal((len(Part), 256, 1), dtype=np.float32)
    jitter = jitter * (1.0 + 0.025 * rng.standard_normal((len(Part), 256, 3), dtype=np.float32))
    if MATERIAL_DRIFT[domain]:
        jitter *= material_gains(rng, MATERIAL_DRIFT[domain])[:, None, :]
    np.multiply(_anchor_table(domain), jitter, out=table[..., :3])
    return np.clip(table, 0.0, 1.0, out=table).reshape(-1, 4)
