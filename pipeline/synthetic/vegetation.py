"""Vegetation of a synthetic street: single trees (billboards with a cast crown shadow) and the tree
line along a park. Hedges are drawn with the other boundaries (`pipeline.synthetic.buildings`), grass
verges with the ground (`pipeline.synthetic.ground`)."""

from __future__ import annotations

import numpy as np

from pipeline.synthetic.builder import SceneBuilder
from pipeline.synthetic.camera import billboard
from pipeline.synthetic.codes import VEGETATION, Facing, Part, pack_look
from pipeline.synthetic.layouts import FAR_LIMIT, NEAR_PLANE, Side
from pipeline.synthetic.polygons import blob, circle


def draw_park_tree_line(builder: SceneBuilder, side: Side, facing: int) -> None:
    """A park's tree line: a vertical plane of foliage behind the building line with a wavy top."""
    rng, st = builder.rng, builder.street
    x = side.sign * (side.facade + rng.uniform(5.0, 25.0))
    base = rng.uniform(4.0, 11.0)
    knots = base + rng.uniform(-3.0, 3.0, size=64)

    def canopy(z: np.ndarray) -> np.ndarray:
        return np.interp(z, np.linspace(0.0, FAR_LIMIT, 64), knots) + 0.6 * np.sin(z * 1.7)

    builder.plane_x(
        x, NEAR_PLANE, st.far, canopy, 0.0, VEGETATION, Part.FOLIAGE, int(rng.integers(256)), facing
    )


def place_tree(builder: SceneBuilder, x: float, z: float, now: bool = False) -> None:
    """A street tree (trunk and irregular crown, with its shadow) at (x, z): queued, or drawn `now` (in
    the gaps between buildings, which are drawn far to near as they are placed)."""
    rng, cam = builder.rng, builder.cam
    trunk_h, radius = rng.uniform(2.0, 3.8), rng.uniform(1.2, 3.0)
    canopy = blob(rng, 0.0, trunk_h + radius * 0.75, radius, radius * rng.uniform(0.85, 1.3))
    trunk = np.array(
        [[-0.16, 0.0], [0.16, 0.0], [0.1, trunk_h + radius * 0.5], [-0.1, trunk_h + radius * 0.5]]
    )
    variant, bark = int(rng.integers(256)), int(rng.integers(256))

    def draw() -> None:
        if z < NEAR_PLANE or cam.scale(z) * radius < 0.5:
            return
        sx, sz, length = builder.sun
        if length > 0:
            reach = length * (trunk_h + radius * 0.75)
            crown_shadow = circle(x - sx * reach, z - sz * reach, radius * 0.9, radius * 0.9)
            crown_shadow[:, 1] = np.maximum(crown_shadow[:, 1], NEAR_PLANE)
            builder.shade_ground(crown_shadow)
        shadow = builder.shadow_under(x, z)
        project = billboard(cam, x, z)
        builder.canvas.fill([project(trunk)], VEGETATION, pack_look(Part.BARK, bark, Facing.FRONT, shadow), z)
        builder.canvas.fill(
            [project(canopy)], VEGETATION, pack_look(Part.FOLIAGE, variant, Facing.FRONT, shadow), z
        )

    if now:
        draw()
    else:
        builder.add(z, draw)
