"""One street scene of the synthetic benchmark, drawn as per-pixel fields: `draw_scene` samples a
street layout with `domain`'s viewpoint and content statistics and draws it, far to near.

The order is fixed, and with it the order of the random draws: sky and skyline, ground, the buildings
(or park) along each side, the facades closing the street or beyond a cross street, the walls and
fences along each side; then every object is placed (sampled and queued) and the queue drawn far to
near (painter's algorithm); last, the camera's own regions. `pipeline.synthetic.render` turns the
fields into a domain's pixels, so every domain shares the same geometric models.
"""

from __future__ import annotations

import numpy as np

from pipeline.synthetic.builder import SceneBuilder
from pipeline.synthetic.buildings import (
    draw_boundaries,
    draw_cross_street_facades,
    draw_side_structures,
    draw_sky_and_skyline,
    draw_street_end,
)
from pipeline.synthetic.camera_regions import draw_ego_hood, draw_rectification_border
from pipeline.synthetic.canvas import Scene
from pipeline.synthetic.ground import draw_ground
from pipeline.synthetic.placement import populate


def draw_scene(
    rng: np.random.Generator, domain: str, height: int, width: int, sun: tuple[float, float, float]
) -> Scene:
    """Sample and draw one street scene of `domain`'s viewpoint and content statistics; `sun` = (unit
    horizontal direction (x, z) towards the sun, shadow length per metre of height) comes from the look."""
    builder = SceneBuilder(rng, domain, height, width, sun)
    street = builder.street
    draw_sky_and_skyline(builder)
    draw_ground(builder)
    for side in street.sides:
        draw_side_structures(builder, side)
    if street.end is not None:
        draw_street_end(builder, street.end)
    if street.intersection is not None:
        draw_cross_street_facades(builder)
    for side in street.sides:
        draw_boundaries(builder, side)
    populate(builder)
    builder.draw_queued()
    if builder.stats.ego_hood:
        draw_ego_hood(builder)
    if rng.random() < builder.stats.rectification_border:
        draw_rectification_border(builder)
    return Scene(builder.canvas, builder.cam)
