"""Per-domain rendering of a drawn scene: palette, lighting, texture, sky, haze and camera effects.

The three looks model the shifts that separate the real datasets:
- gta5: a game renderer — saturated palette, warm sun with hard cast shadows, smooth textures, crisp
  aliased edges, no sensor noise, per-image time of day.
- synthia: a low-poly renderer — flat pastel colours, almost no texture, clear pale sky.
- cityscapes: a car-mounted camera — dark, desaturated greenish-grey white balance, overcast diffuse
  light, fine natural textures, vignetting, a slight blur, sensor noise and JPEG softness, a tint per city;
  and the class-conditional part of a photograph's look (`pipeline.data.appearance`): materials that drift
  from image to image each their own way, stains and repairs, light that varies over the image, sky
  through tree crowns, thin structures that blend into their background.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.data.appearance import (
    Drift,
    canopy_gaps,
    illumination_field,
    material_gains,
    patches,
    soften_thin_structures,
    value_noise,
)
from pipeline.data.scenes import SHADOW_LEVELS, Facing, Part, Scene

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


@dataclass(frozen=True)
class TextureSpec:
    """Value-noise texture: amplitudes (fine per-pixel grain, medium, coarse) per material group, and
    the noise cell sizes in pixels at a 512-pixel image width; `blotch`: brightness offset per group of
    crisp patches (`appearance.patches`, `blotch_cell` pixels across, over `blotch_coverage` of the image)."""

    amplitude: dict[str, tuple[float, float, float]]
    medium_cell: float
    coarse_cell: float
    blotch: dict[str, float] = field(default_factory=dict)
    blotch_cell: float = 40.0
    blotch_coverage: float = 0.2


# Material groups share a texture.
GROUP_OF_PART: dict[Part, str] = {
    Part.ASPHALT: "asphalt",
    Part.PARKING_PAVE: "asphalt",
    Part.GRAVEL: "gravel",
    Part.SOIL: "gravel",
    Part.PAVING: "paving",
    Part.CURB: "paving",
    Part.CONCRETE: "paving",
    Part.PAVING_JOINT: "paving",
    Part.GRASS: "grass",
    Part.FOLIAGE: "foliage",
    Part.BARK: "paving",
    Part.FACADE: "facade",
    Part.LEDGE: "facade",
    Part.SHOPFRONT: "glass",
    Part.WINDOW: "glass",
    Part.GLASS: "glass",
    Part.CAR_PAINT: "paint",
    Part.TRUCK_PAINT: "paint",
    Part.CARGO_BOX: "paint",
    Part.BUS_PAINT: "paint",
    Part.TRAIN_PAINT: "paint",
    Part.BIKE_FRAME: "paint",
    Part.HELMET: "paint",
    Part.SKIN: "cloth",
    Part.HAIR: "cloth",
    Part.CLOTH_TOP: "cloth",
    Part.CLOTH_BOTTOM: "cloth",
    Part.FENCE_MESH: "paving",
    Part.CLUTTER: "paving",
    Part.HOOD: "glass",
}

TEXTURES: dict[str, TextureSpec] = {
    # Game textures: smooth, large-scale variation only.
    "gta5": TextureSpec(
        amplitude={
            "asphalt": (0.02, 0.05, 0.06),
            "gravel": (0.04, 0.08, 0.05),
            "paving": (0.01, 0.04, 0.04),
            "grass": (0.03, 0.10, 0.08),
            "foliage": (0.05, 0.20, 0.08),
            "facade": (0.01, 0.03, 0.05),
            "glass": (0.0, 0.10, 0.12),
            "paint": (0.0, 0.02, 0.02),
            "cloth": (0.0, 0.03, 0.0),
        },
        medium_cell=7.0,
        coarse_cell=56.0,
    ),
    # Low-poly renderer: flat colours.
    "synthia": TextureSpec(
        amplitude={
            "asphalt": (0.0, 0.02, 0.03),
            "gravel": (0.0, 0.03, 0.03),
            "paving": (0.0, 0.01, 0.02),
            "grass": (0.0, 0.04, 0.03),
            "foliage": (0.0, 0.08, 0.05),
            "facade": (0.0, 0.0, 0.02),
            "glass": (0.0, 0.03, 0.04),
        },
        medium_cell=10.0,
        coarse_cell=80.0,
    ),
    # Photographs: fine grain everywhere, leafy high-contrast foliage, stained facades and asphalt.
    "cityscapes": TextureSpec(
        amplitude={
            "asphalt": (0.09, 0.07, 0.08),
            "gravel": (0.16, 0.1, 0.06),
            "paving": (0.07, 0.06, 0.07),
            "grass": (0.16, 0.16, 0.08),
            "foliage": (0.2, 0.24, 0.12),
            "facade": (0.05, 0.06, 0.1),
            "glass": (0.03, 0.1, 0.12),
            "paint": (0.02, 0.03, 0.03),
            "cloth": (0.04, 0.06, 0.03),
        },
        medium_cell=2.5,
        coarse_cell=24.0,
        # Darker tar repairs and damp patches on roads, stains on plaster, dirty slabs on sidewalks.
        blotch={"asphalt": -0.12, "gravel": -0.06, "paving": -0.06, "facade": -0.1},
        blotch_cell=40.0,
        blotch_coverage=0.2,
    ),
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
# Parts drawn a few pixels wide (poles, fences, light housings, bicycle frames): what
# `appearance.soften_thin_structures` blends with the background in the camera domain.
THIN_PARTS = (
    Part.POLE_METAL,
    Part.STREETLAMP,
    Part.FENCE_MESH,
    Part.FENCE_POST,
    Part.GUARDRAIL,
    Part.SIGN_BACK,
    Part.LIGHT_HOUSING,
    Part.LAMP_OFF,
    Part.BIKE_FRAME,
    Part.SPOKES,
)
REFERENCE_WIDTH = 512.0
# Sizes of the camera effects' patterns, in pixels at a 512-pixel image width.
LIGHT_CELL = 160.0  # light and dark regions of the illumination field
SHADE_CELL = 90.0  # shadows of trees and buildings outside the frame
CANOPY_GAP_CELL = 3.0  # clumps of sky seen through a crown
THIN_SIGMA = 1.5  # the neighbourhood a thin structure blends with
PENUMBRA, CRISP_EDGE = 0.1, 0.02  # border widths of `appearance.patches` (noise units)
_THIN_LUT = np.isin(np.arange(256), THIN_PARTS)


@dataclass(frozen=True)
class Look:
    """Lighting and camera settings of one image (sampled per image; cityscapes also per city)."""

    sun: tuple[float, float, float]  # unit horizontal direction (x, z) towards the sun, shadow m per m
    sun_elevation: float  # radians
    ambient: float  # light reaching shadowed surfaces
    diffuse: float  # direct sunlight
    shadow_blur: float  # sigma in pixels at 512 width (0: hard shadows)
    sky_top: tuple[float, float, float]  # RGB 0–1
    sky_horizon: tuple[float, float, float]
    cloud: tuple[float, float, float]
    cloud_cover: float  # 0 clear … 1 overcast
    haze_distance: float  # metres
    haze_strength: float  # 0…1 at infinity
    tint: tuple[float, float, float]  # white-balance gains
    exposure: float
    saturation: float
    contrast: float
    vignetting: float  # brightness loss at the corners
    blur: float  # Gaussian sigma, pixels at 512 width
    noise: float  # sensor noise sigma (0–1 intensity units)
    jpeg_quality: int  # 0: no JPEG round trip
    # Class-conditional camera effects (pipeline.data.appearance); 0 switches one off (the game looks).
    light_variation: float = 0.0  # amplitude of the log light gain over the image (illumination_field)
    shade_coverage: float = 0.0  # share of the image in shadow of things outside the frame (sunny days)
    canopy_gaps: float = 0.0  # share of foliage pixels showing the sky
    thin_softening: float = 0.0  # how far thin structures blend into their background (0–1)
    # Ambient light on vertical faces relative to the ground. 1: a game engine's flat ambient term. Under
    # a real sky dome a vertical face sees half the sky plus light bounced off the ground (albedo a):
    # (1 + a) / 2 ≈ 0.55–0.65, less in a street canyon, so walls, crowns, cars and people are darker
    # relative to the road than in a game frame.
    vertical_ambient: float = 1.0
    # Sky radiance relative to the scene. A camera exposes for the street, so a bright overcast sky
    # often clips to white; a game tone-maps its sky into range (1).
    sky_gain: float = 1.0


@dataclass(frozen=True)
class CityLook:
    """What is common to every image of one city (Cityscapes-like target)."""

    tint: tuple[float, float, float]
    exposure: float
    saturation: float
    sunny: float  # probability of a sunny (not overcast) day


def city_look(rng: np.random.Generator) -> CityLook:
    gains = 1.0 + rng.uniform(-0.04, 0.04, size=3)
    return CityLook(
        tuple(gains.tolist()), rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1), rng.uniform(0.05, 0.35)
    )  # type: ignore[arg-type]


@dataclass(frozen=True)
class Weather:
    """A game time of day / weather preset."""

    probability: float
    sun_elevation: tuple[float, float]  # degrees
    ambient: float
    diffuse: float
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    cloud_cover: tuple[float, float]
    tint: tuple[float, float, float]
    exposure: float


# GTA5 is recorded over the game's day cycle and weather; most frames are sunny.
GAME_WEATHER: dict[str, Weather] = {
    "noon": Weather(
        0.4, (45, 70), 0.42, 0.85, (0.16, 0.42, 0.9), (0.62, 0.78, 0.95), (0.0, 0.45), (1.02, 1.0, 0.96), 1.05
    ),
    "afternoon": Weather(
        0.25, (25, 45), 0.42, 0.85, (0.2, 0.45, 0.88), (0.8, 0.82, 0.85), (0.0, 0.45), (1.06, 1.0, 0.9), 1.0
    ),
    "evening": Weather(
        0.12, (10, 22), 0.45, 0.8, (0.24, 0.3, 0.6), (0.96, 0.64, 0.4), (0.0, 0.45), (1.1, 0.95, 0.8), 0.88
    ),
    "overcast": Weather(
        0.23, (60, 80), 0.8, 0.22, (0.6, 0.64, 0.7), (0.82, 0.84, 0.86), (0.8, 1.0), (1.0, 1.0, 1.0), 0.95
    ),
}


def _sun(rng: np.random.Generator, elevation: float) -> tuple[float, float, float]:
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    return (float(np.cos(azimuth)), float(np.sin(azimuth)), float(1.0 / np.tan(elevation)))


def sample_look(rng: np.random.Generator, domain: str, city: CityLook | None = None) -> Look:
    """Draw one image's lighting and camera settings for `domain`."""
    if domain == "gta5":
        weather = str(rng.choice(list(GAME_WEATHER), p=[w.probability for w in GAME_WEATHER.values()]))
        w = GAME_WEATHER[weather]
        elevation = np.radians(rng.uniform(*w.sun_elevation))
        return Look(
            sun=_sun(rng, elevation),
            sun_elevation=float(elevation),
            ambient=w.ambient,
            diffuse=w.diffuse,
            shadow_blur=0.0,
            sky_top=w.sky_top,
            sky_horizon=w.sky_horizon,
            cloud=(1.0, 0.97, 0.94),
            cloud_cover=rng.uniform(*w.cloud_cover),
            haze_distance=rng.uniform(250, 500),
            haze_strength=0.5,
            tint=w.tint,
            exposure=w.exposure * rng.uniform(0.95, 1.05),
            saturation=rng.uniform(1.05, 1.25),
            contrast=rng.uniform(1.05, 1.15),
            vignetting=0.0,
            blur=0.0,
            noise=0.0,
            jpeg_quality=0,
        )
    if domain == "synthia":
        elevation = np.radians(rng.uniform(40, 75))
        return Look(
            sun=_sun(rng, elevation),
            sun_elevation=float(elevation),
            ambient=0.62,
            diffuse=0.5,
            shadow_blur=0.0,
            sky_top=(0.5, 0.68, 0.9),
            sky_horizon=(0.78, 0.86, 0.95),
            cloud=(1.0, 1.0, 1.0),
            cloud_cover=0.0,
            haze_distance=800.0,
            haze_strength=0.3,
            tint=(0.97, 1.0, 1.04),
            exposure=rng.uniform(1.0, 1.12),
            saturation=rng.uniform(1.0, 1.15),
            contrast=rng.uniform(0.9, 1.0),
            vignetting=0.0,
            blur=0.0,
            noise=0.0,
            jpeg_quality=0,
        )
    if domain != "cityscapes":
        raise ValueError(f"unknown domain {domain!r}: expected gta5, synthia or cityscapes")
    city = city or CityLook((1.0, 1.0, 1.0), 1.0, 1.0, 0.2)
    sunny = rng.random() < city.sunny
    elevation = np.radians(rng.uniform(30, 55) if sunny else rng.uniform(70, 85))
    base_tint = np.array([0.965, 1.0, 0.955]) * np.array(city.tint)  # greenish-grey white balance
    return Look(
        sun=_sun(rng, elevation),
        sun_elevation=float(elevation),
        ambient=0.55 if sunny else 0.86,
        diffuse=0.5 if sunny else 0.14,
        shadow_blur=1.5 if sunny else 3.0,
        sky_top=(0.62, 0.7, 0.8) if sunny else (0.8, 0.83, 0.85),
        sky_horizon=(0.86, 0.88, 0.9) if sunny else (0.9, 0.91, 0.91),
        cloud=(0.94, 0.95, 0.95),
        cloud_cover=rng.uniform(0.2, 0.5) if sunny else 1.0,
        haze_distance=rng.uniform(150, 280),
        haze_strength=0.55,
        tint=tuple(base_tint.tolist()),
        exposure=rng.uniform(0.84, 0.96) * city.exposure,
        saturation=rng.uniform(0.82, 0.98) * city.saturation,
        contrast=rng.uniform(0.94, 1.04),
        vignetting=rng.uniform(0.2, 0.35),
        blur=rng.uniform(0.6, 0.95),
        noise=rng.uniform(0.01, 0.02),
        jpeg_quality=int(rng.integers(55, 85)),
        light_variation=rng.uniform(0.1, 0.2),
        shade_coverage=rng.uniform(0.1, 0.35) if sunny else 0.0,
        canopy_gaps=rng.uniform(0.01, 0.03),
        thin_softening=rng.uniform(0.35, 0.6),
        vertical_ambient=rng.uniform(0.5, 0.65),
        sky_gain=rng.uniform(1.1, 1.35),
    )  # type: ignore[arg-type]


# ---- rendering --------------------------------------------------------------------------------------


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


def _lighting(look: Look) -> tuple[np.ndarray, np.ndarray]:
    """Light factor of each Facing when lit and when in shadow (ambient only), lit ground = 1; vertical
    faces get `look.vertical_ambient` of the ambient light."""
    (sx, sz, _), elevation = look.sun, look.sun_elevation
    sun = np.array([sx * np.cos(elevation), np.sin(elevation), sz * np.cos(elevation)])
    normals = {
        Facing.UP: (0, 1, 0),
        Facing.FRONT: (0, 0, -1),
        Facing.POS_X: (1, 0, 0),
        Facing.NEG_X: (-1, 0, 0),
    }
    norm = look.ambient + look.diffuse * np.sin(elevation)
    lit = np.ones(16, dtype=np.float32)
    shaded = np.ones(16, dtype=np.float32)
    for face, normal in normals.items():
        ambient = look.ambient * (1.0 if face == Facing.UP else look.vertical_ambient)
        lit[face] = (ambient + look.diffuse * max(float(np.dot(normal, sun)), 0.0)) / norm
        shaded[face] = ambient / norm
    return lit, shaded


def _sky(
    rng: np.random.Generator, look: Look, rows: int, width: int, horizon: float, scale: float
) -> np.ndarray:
    """Sky colours [rows, width, 3] for the top `rows` rows: gradient to the horizon plus clouds."""
    t = np.clip(np.arange(rows, dtype=np.float32) / max(horizon, 1.0), 0.0, 1.0)[:, None, None] ** 0.7
    top, bottom = np.asarray(look.sky_top, np.float32), np.asarray(look.sky_horizon, np.float32)
    gradient = (top * (1.0 - t) + bottom * t) * np.float32(look.sky_gain)  # [rows, 1, 3]
    if look.cloud_cover <= 0:
        return np.broadcast_to(gradient, (rows, width, 3))
    clouds = (
        value_noise(rng, rows, width, 90.0 * scale) * 0.6 + value_noise(rng, rows, width, 30.0 * scale) * 0.4
    )
    cover = np.clip((clouds + 1.0) / 2.0 - (1.0 - look.cloud_cover) + 0.15, 0.0, 1.0) * min(
        look.cloud_cover * 2, 1.0
    )
    cloud = (
        np.asarray(look.cloud, np.float32) * (np.float32(look.sky_gain) * (0.92 + 0.08 * clouds))[..., None]
    )
    return gradient + (cloud - gradient) * cover[..., None]


def render(scene: Scene, look: Look, rng: np.random.Generator, domain: str) -> np.ndarray:
    """Scene fields → uint8 RGB [H, W, 3] in `domain`'s look.

    Scene radiance = palette colour (with the image's material drift) · light (with its shadows and, for
    the camera, its variation over the image) · (1 + texture), hazed towards the horizon colour; the
    camera then applies exposure and vignetting, white balance, saturation and contrast, the blending of
    thin structures, blur, noise and JPEG. The per-pixel factors are combined as [H, W] maps and applied
    to the colours once.
    """
    canvas, cam = scene.canvas, scene.camera
    height, width = canvas.height, canvas.width
    scale = width / REFERENCE_WIDTH
    part = canvas.look & 0xFF
    facing = (canvas.look >> 16) & 0xF

    # Gather 16-byte RGBA rows as single complex128 elements (much faster than a row gather).
    table = palette_table(rng, domain).view(np.complex128).ravel()
    index = (part << 8) | ((canvas.look >> 8) & 0xFF)
    base = np.take(table, index).view(np.float32).reshape(height, width, 4)

    # Light: ambient + Lambert term per face; a cast shadow removes the direct part. Shadows of things
    # outside the frame (camera, sunny days) join the scene's own; the camera's light also varies slowly
    # over the image (sky view, breaks in the clouds).
    lit, shaded = _lighting(look)
    factor = np.take(lit, facing)
    shadow = None
    if look.ambient < 1.0 and (canvas.look >> 20).any():
        shadow = ((canvas.look >> 20) & 0xF).astype(np.float32) * np.float32(1.0 / SHADOW_LEVELS)
        if look.shadow_blur > 0:
            shadow = cv2.GaussianBlur(shadow, (0, 0), look.shadow_blur * scale)
    if look.shade_coverage > 0:
        outside = patches(rng, height, width, SHADE_CELL * scale, look.shade_coverage, PENUMBRA)
        shadow = outside if shadow is None else np.maximum(shadow, outside)
    if shadow is not None:
        factor -= shadow * (factor - np.take(shaded, facing))
    if look.light_variation > 0:
        factor *= illumination_field(rng, height, width, LIGHT_CELL * scale, look.light_variation)

    # Texture: fine grain, medium and coarse value noise, weighted per material group.
    spec = TEXTURES[domain]
    amplitude = np.zeros((3, 256), dtype=np.float32)
    for p, group in GROUP_OF_PART.items():
        amplitude[:, p] = spec.amplitude.get(group, (0.0, 0.0, 0.0))
    texture = np.take(amplitude[1], part) * value_noise(rng, height, width, spec.medium_cell * scale)
    texture += np.take(amplitude[2], part) * value_noise(rng, height, width, spec.coarse_cell * scale)
    if amplitude[0].any():
        texture += np.take(amplitude[0], part) * (rng.random((height, width), dtype=np.float32) * 2.0 - 1.0)
    if spec.blotch:
        weight = np.zeros(256, dtype=np.float32)
        for p, group in GROUP_OF_PART.items():
            weight[p] = spec.blotch.get(group, 0.0)
        stains = patches(rng, height, width, spec.blotch_cell * scale, spec.blotch_coverage, CRISP_EDGE)
        texture += np.take(weight, part) * stains
    texture += 1.0
    factor *= texture

    # Sky colours (only on the rows that hold sky); sky pixels get no light, texture or haze. The camera
    # also sees the sky through tree crowns above the horizon (labelled vegetation, as annotators do).
    sky = part == Part.SKY
    if look.canopy_gaps > 0:
        crowns = (part == Part.FOLIAGE) & (np.arange(height)[:, None] < cam.horizon)
        sky |= canopy_gaps(rng, crowns, CANOPY_GAP_CELL * scale, look.canopy_gaps)
    sky_rows = np.flatnonzero(sky.any(axis=1))
    if sky_rows.size:
        band = slice(0, int(sky_rows[-1]) + 1)
        colours = _sky(rng, look, band.stop, width, cam.horizon, scale)
        np.copyto(base[band, :, :3], colours, where=sky[band][..., None])
        factor[sky] = 1.0
    # Aerial perspective: transmittance exp(−depth / distance), floored at 1 − strength.
    transmit = np.exp(canvas.depth * np.float32(-1.0 / look.haze_distance))
    transmit *= np.float32(look.haze_strength)
    transmit += np.float32(1.0 - look.haze_strength)
    transmit[sky] = 1.0

    # Camera gain: exposure and vignetting.
    gain = np.full((height, width), look.exposure, dtype=np.float32)
    if look.vignetting > 0:
        yy = (np.arange(height, dtype=np.float32)[:, None] - height / 2) / (height / 2)
        xx = (np.arange(width, dtype=np.float32)[None, :] - width / 2) / (width / 2)
        gain *= 1.0 - look.vignetting * (xx**2 * 0.6 + yy**2 * 0.4)
    # rgb = (base · factor · transmit + horizon · (1 − transmit)) · gain · white balance
    tint = np.asarray(look.tint, np.float32)
    factor *= transmit
    factor *= gain
    airlight = (1.0 - transmit) * gain
    rgb = base[..., :3] * factor[..., None]
    rgb += airlight[..., None] * np.asarray(look.sky_horizon, np.float32)
    rgb *= tint

    # Saturation and contrast about mid-grey.
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]
    c, sat = np.float32(look.contrast), np.float32(look.saturation)
    rgb *= c * sat
    rgb += grey * (c * (1.0 - sat)) + np.float32(0.45 * (1.0 - look.contrast))
    if look.thin_softening > 0:  # before the lens blur: sub-pixel coverage of thin structures
        rgb = soften_thin_structures(rgb, np.take(_THIN_LUT, part), THIN_SIGMA * scale, look.thin_softening)
    if look.blur > 0:
        rgb = cv2.GaussianBlur(rgb, (0, 0), look.blur * scale)
    if look.noise > 0:  # shot noise grows with the signal; luminance grain plus coarser chroma blotches
        sigma = np.float32(look.noise) * (0.5 + np.sqrt(np.clip(grey, 0.0, 1.0)))
        noise = rng.standard_normal((height, width, 1), dtype=np.float32)
        chroma = rng.standard_normal((max(height // 3, 1), max(width // 3, 1), 3), dtype=np.float32)
        noise = noise + np.float32(0.4) * cv2.resize(chroma, (width, height), interpolation=cv2.INTER_LINEAR)
        rgb += sigma * noise
    rgb *= 255.0
    rgb += 0.5
    image = np.clip(rgb, 0.0, 255.0, out=rgb).astype(np.uint8)
    if look.jpeg_quality:
        ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality])
        if ok:
            image = np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
    return image
