"""Road users of a synthetic street: pedestrians, two-wheelers with or without their riders, and vehicles
(cars, trucks, buses, caravans, trailers, trams) seen end-on as boxes or from the side crossing the street.

Each `place_*` samples the object now (the generator's order) and queues its drawing at its depth; a
drawn object gets a fresh instance id. The sprite models are in `pipeline.synthetic.sprites`.
"""

from __future__ import annotations

import numpy as np

from pipeline.synthetic.builder import SceneBuilder
from pipeline.synthetic.camera import billboard, roof_plane, side_face
from pipeline.synthetic.codes import CAR, PERSON, RIDER, Facing, pack_look
from pipeline.synthetic.layouts import NEAR_PLANE
from pipeline.synthetic.polygons import rect
from pipeline.synthetic.sprites import (
    person_sprite,
    rider_sprite,
    two_wheeler_sprite,
    vehicle_end_sprite,
    vehicle_model,
    vehicle_side_sprite,
)


def place_person(builder: SceneBuilder, x: float, z: float, view: str | None = None) -> None:
    """A pedestrian at (x, z), side or front view (random unless `view` is given), a child now and then."""
    rng, cam = builder.rng, builder.cam
    height = rng.uniform(1.5, 1.95) if rng.random() > 0.08 else rng.uniform(1.0, 1.4)
    view = view or ("side" if rng.random() < 0.5 else "front")
    shape = person_sprite(rng, height, view)
    mirror = rng.random() < 0.5
    variant = int(rng.integers(256))

    def draw() -> None:
        if z < NEAR_PLANE:
            return
        builder.contact_shadow(x - 0.25, x + 0.25, z - 0.15, z + 0.15, height)
        instance = builder.canvas.new_instance()
        builder.draw_shape(
            shape, billboard(cam, x, z, mirror), PERSON, z, variant, builder.shadow_under(x, z), instance
        )

    builder.add(z, draw)


def place_two_wheeler(builder: SceneBuilder, x: float, z: float, kind: int, ridden: bool, view: str) -> None:
    """A bicycle or motorcycle (`kind`) at (x, z) in side or rear view, with its rider when `ridden`."""
    rng, cam = builder.rng, builder.cam
    bike = two_wheeler_sprite(kind, view)
    rider = rider_sprite(kind, view) if ridden else []
    mirror = rng.random() < 0.5
    variant, rider_variant = int(rng.integers(256)), int(rng.integers(256))

    def draw() -> None:
        if z < NEAR_PLANE:
            return
        builder.contact_shadow(x - 0.4, x + 0.4, z - 0.2, z + 0.2, 1.2)
        shadow = builder.shadow_under(x, z)
        project = billboard(cam, x, z, mirror)
        builder.draw_shape(bike, project, kind, z, variant, shadow, builder.canvas.new_instance())
        if rider:
            builder.draw_shape(
                rider, project, RIDER, z - 0.1, rider_variant, shadow, builder.canvas.new_instance()
            )

    builder.add(z, draw)


def place_vehicle(
    builder: SceneBuilder, code: int, x: float, z: float, front: bool, side_view: bool = False
) -> None:
    """A vehicle whose near end is at depth z (box view), or a side view crossing the street."""
    rng, cam = builder.rng, builder.cam
    model = vehicle_model(rng, code)
    variant = int(rng.integers(256))
    mirror = rng.random() < 0.5

    def draw() -> None:
        if z < NEAR_PLANE + 0.5:
            return
        instance = builder.canvas.new_instance()
        half = model.width / 2
        if side_view:
            builder.contact_shadow(
                x - model.length / 2, x + model.length / 2, z, z + model.width, model.height
            )
            shadow = builder.shadow_under(x, z)
            profile = [
                (poly - [model.length / 2, 0.0], part, f)
                for poly, part, f in vehicle_side_sprite(code, model, Facing.FRONT)
            ]
            builder.draw_shape(profile, billboard(cam, x, z, mirror), code, z, variant, shadow, instance)
            return
        builder.contact_shadow(x - half, x + half, z, z + model.length, model.height)
        shadow = builder.shadow_under(x, z)
        if cam.elevation > model.height + 0.2:  # roof seen from above
            roof = rect(
                -half * 0.9,
                0.25 * model.length if code == CAR else 0.0,
                half * 0.9,
                0.65 * model.length if code == CAR else model.length,
            )
            builder.canvas.fill(
                [roof_plane(cam, x, z, model.height)(roof)],
                code,
                pack_look(model.paint, variant, Facing.UP, shadow),
                z + model.length / 2,
                instance,
            )
        if abs(x) > half:  # the inner side faces the camera
            x_side = x - np.sign(x) * half
            facing = Facing.NEG_X if x > 0 else Facing.POS_X
            profile = vehicle_side_sprite(code, model, facing)
            if front:  # near end is the front: mirror the profile along its length
                profile = [
                    (np.column_stack([model.length - p[:, 0], p[:, 1]]), part, f) for p, part, f in profile
                ]
            builder.draw_shape(
                profile, side_face(cam, x_side, z), code, z + model.length / 2, variant, shadow, instance
            )
        builder.draw_shape(
            vehicle_end_sprite(code, model, front),
            billboard(cam, x, z),
            code,
            z,
            variant,
            shadow,
            instance,
        )

    builder.add(z, draw)
