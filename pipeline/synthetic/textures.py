"""Textures of the synthetic domains: value-noise amplitudes per material group (fine grain, medium,
coarse) and the crisp stains of the camera domain, from smooth game surfaces to grainy photographs."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.synthetic.codes import Part


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
