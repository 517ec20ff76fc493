"""Street furniture of a synthetic street: poles carrying lamps, traffic signs or traffic lights; bins,
benches, bollards and carts (the unevaluated static and dynamic classes); a bridge across the street.

Each `place_*` samples the object now (the generator's order) and queues its drawing at its depth.
"""

from __future__ import annotations

import numpy as np

from pipeline.synthetic.builder import SceneBuilder
from pipeline.synthetic.camera import billboard
from pipeline.synthetic.codes import BRIDGE, LIGHT, POLE, SIGN, STATIC, Facing, Part
from pipeline.synthetic.layouts import NEAR_PLANE
from pipeline.synthetic.polygons import Shape, bar, circle, rect


def place_pole(builder: SceneBuilder, x: float, z: float, kind: str) -> None:
    """A pole with a street lamp, traffic signs or a traffic light; `x` is on the sidewalk."""
    rng, cam = builder.rng, builder.cam
    toward_road = -np.sign(x) if x != 0 else 1.0
    radius = rng.uniform(0.06, 0.11)
    height = {
        "lamp": rng.uniform(6.0, 9.0),
        "sign": rng.uniform(2.3, 3.4),
        "light": rng.uniform(3.2, 5.5),
    }[kind]
    pole: Shape = [(rect(-radius, 0.0, radius, height), Part.POLE_METAL, Facing.FRONT)]
    attachments: list[tuple[Shape, int]] = []
    if kind == "lamp":
        arm = rng.uniform(1.0, 3.0) * toward_road
        pole.append((bar((0.0, height - 0.2), (arm, height + 0.2), 0.1), Part.POLE_METAL, Facing.FRONT))
        pole.append(
            (
                rect(
                    min(arm, arm - 0.6 * toward_road),
                    height,
                    max(arm, arm - 0.6 * toward_road),
                    height + 0.25,
                ),
                Part.STREETLAMP,
                1,
            )
        )
        if rng.random() < 0.35:  # a sign on the lamp post
            attachments.append((_sign_shape(rng, rng.uniform(2.2, 3.0)), SIGN))
    elif kind == "sign":
        top = height
        for _ in range(int(rng.integers(1, 3))):
            attachments.append((_sign_shape(rng, top), SIGN))
            top -= rng.uniform(0.65, 0.9)
    else:
        overhead = rng.random() < 0.35
        box_w, box_h = rng.uniform(0.3, 0.42), rng.uniform(0.85, 1.1)
        if overhead:
            arm = rng.uniform(2.5, 6.0) * toward_road
            pole.append((bar((0.0, height - 0.1), (arm, height - 0.1), 0.14), Part.POLE_METAL, Facing.FRONT))
            u, v = arm * 0.85, height - 0.2 - box_h
        else:
            u, v = 0.0, height
        attachments.append((_light_shape(rng, u, v, box_w, box_h), LIGHT))
        if rng.random() < 0.5:  # a second light lower down
            attachments.append((_light_shape(rng, 0.0, rng.uniform(2.2, 2.6), box_w, box_h), LIGHT))

    variants = rng.integers(0, 256, size=len(attachments) + 1).tolist()

    def draw() -> None:
        if z < NEAR_PLANE:
            return
        shadow = builder.shadow_under(x, z)
        project = billboard(cam, x, z)
        builder.draw_shape(pole, project, POLE, z, variants[0], shadow)
        for (shape, code), variant in zip(attachments, variants[1:], strict=True):
            builder.draw_shape(shape, project, code, z - 0.05, variant, shadow)

    builder.add(z, draw)


def _sign_shape(rng: np.random.Generator, top: float) -> Shape:
    """A traffic sign hanging from `top` metres: round, "give way" triangle, diamond or board; or its back."""
    size = rng.uniform(0.55, 0.8)
    cv = top - size / 2
    kind = rng.choice(["circle", "triangle", "square", "rect"], p=[0.4, 0.2, 0.2, 0.2])
    if kind == "circle":
        outer, inner = circle(0.0, cv, size / 2, n=16), circle(0.0, cv, size * 0.33, n=16)
    elif kind == "triangle":
        tri = np.array([[-0.5, 0.43], [0.5, 0.43], [0.0, -0.43]]) * size  # "give way", apex down
        outer, inner = tri + np.array([0.0, cv]), tri * 0.6 + np.array([0.0, cv + 0.03 * size])
    elif kind == "square":
        diamond = np.array([[0.0, 0.5], [0.5, 0.0], [0.0, -0.5], [-0.5, 0.0]]) * size
        outer, inner = diamond + np.array([0.0, cv]), diamond * 0.7 + np.array([0.0, cv])
    else:
        outer = rect(-size * 0.7, cv - size * 0.4, size * 0.7, cv + size * 0.4)
        inner = rect(-size * 0.6, cv - size * 0.3, size * 0.6, cv + size * 0.3)
    back = rng.random() < 0.2  # seen from behind: plain metal
    if back:
        return [(outer, Part.SIGN_BACK, Facing.FRONT)]
    return [(outer, Part.SIGN_FACE, Facing.FRONT), (inner, Part.SIGN_INNER, Facing.FRONT)]


def _light_shape(rng: np.random.Generator, u: float, v: float, w: float, h: float) -> Shape:
    """A traffic light housing w × h at (u, v) with three lamps, one of them lit."""
    lit = int(rng.integers(3))
    shape: Shape = [(rect(u - w / 2, v, u + w / 2, v + h), Part.LIGHT_HOUSING, Facing.FRONT)]
    for k in range(3):
        cy = v + h * (0.8 - 0.3 * k)
        part = Part.LAMP_ON if k == lit else Part.LAMP_OFF
        shape.append((circle(u, cy, w * 0.3, n=10), part, Facing.EMISSIVE if k == lit else Facing.FRONT))
    return shape


def place_bridge(builder: SceneBuilder, z: float) -> None:
    """A bridge deck across the whole view at depth z, on a pillar beside each sidewalk."""
    cam = builder.cam
    deck = (rng_h := builder.rng.uniform(4.8, 6.5), rng_h + builder.rng.uniform(1.0, 2.0))
    variant = int(builder.rng.integers(256))
    pillars = [s.sign * (s.walk[0] + 0.6) for s in builder.street.sides]

    def draw() -> None:
        project = billboard(cam, 0.0, z)
        shape: Shape = [(rect(-300.0, deck[0], 300.0, deck[1]), Part.CONCRETE, Facing.FRONT)]
        shape += [(rect(p - 0.5, 0.0, p + 0.5, deck[0]), Part.CONCRETE, Facing.FRONT) for p in pillars]
        builder.draw_shape(shape, project, BRIDGE, z, variant, 0)

    builder.add(z + 0.5, draw)


def place_clutter(builder: SceneBuilder, x: float, z: float, code: int) -> None:
    """Bins, benches, bollards, advertising columns (static); carts, strollers (dynamic)."""
    rng, cam = builder.rng, builder.cam
    if code == STATIC:
        kind = rng.choice(["bin", "bench", "bollard", "column"], p=[0.35, 0.2, 0.3, 0.15])
        w, h = {"bin": (0.6, 1.1), "bench": (1.8, 0.9), "bollard": (0.2, 0.9), "column": (1.2, 3.2)}[kind]
    else:
        w, h = rng.uniform(0.6, 1.2), rng.uniform(0.8, 1.2)
    shape: Shape = [
        (
            np.array([[-w / 2, 0.0], [w / 2, 0.0], [w * 0.45, h], [-w * 0.45, h]]),
            Part.CLUTTER,
            Facing.FRONT,
        )
    ]
    variant = int(rng.integers(256))

    def draw() -> None:
        builder.draw_shape(shape, billboard(cam, x, z), code, z, variant, builder.shadow_under(x, z))

    builder.add(z, draw)
