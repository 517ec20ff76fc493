"""Buildings and what lines the building line of a synthetic street: the sky and the distant skyline,
facades along each side (with their window grid, shop windows and cast shadows), the facades closing
the street or beyond a cross street, and walls, fences, hedges and guard rails.

Facades, walls and fences are vertical planes drawn column by column (`SceneBuilder.plane_x`,
`plane_z`); their material comes from plane coordinates (u along the wall, v up, metres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.synthetic.builder import SceneBuilder
from pipeline.synthetic.codes import (
    BUILDING,
    FENCE,
    GUARD_RAIL,
    SKY,
    VEGETATION,
    WALL,
    Facing,
    Part,
    pack_look,
)
from pipeline.synthetic.layouts import FAR_LIMIT, NEAR_PLANE, Side
from pipeline.synthetic.vegetation import draw_park_tree_line, place_tree


@dataclass(frozen=True)
class Building:
    """One building's height and facade pattern."""

    height: float  # metres
    pitch: float  # window spacing along the wall, metres
    floor: float  # storey height, metres
    window_w: float  # window width, fraction of the pitch
    window_h: float  # window height, fraction of the storey
    offset: float  # where the window grid starts along the wall, metres
    shop: bool  # shop windows on the ground floor
    variant: int  # colour variant (0–255)


def _frac(x: np.ndarray) -> np.ndarray:
    """Fractional part (cheaper than np.mod on floats)."""
    return x - np.floor(x)


def draw_sky_and_skyline(builder: SceneBuilder) -> None:
    """Sky everywhere, then a distant skyline: blocks of buildings and tree clumps just above the horizon."""
    cam, rng, canvas = builder.cam, builder.rng, builder.canvas
    canvas.look[:] = pack_look(Part.SKY, 0, Facing.EMISSIVE)
    canvas.ids[:] = SKY
    z = rng.uniform(180.0, FAR_LIMIT)
    cols = np.arange(cam.width)
    x = (cols + 0.5 - cam.cx) * z / cam.focal
    edges = np.cumsum(rng.uniform(8.0, 40.0, size=64)) + x.min() - 20.0
    block = np.searchsorted(edges, x)
    is_tree = rng.random(65) < 0.35
    heights = np.where(is_tree, rng.uniform(6.0, 15.0, 65), rng.uniform(4.0, 30.0, 65))
    h = heights[block] * (1.0 + 0.25 * is_tree[block] * np.sin(x * 0.7 + rng.uniform(0, 6)))
    top = cam.row(h, z)
    bottom = cam.row(0.0, z)
    r0, r1 = int(max(np.floor(top.min()), 0)), int(min(np.ceil(bottom) + 1, cam.height))
    if r1 <= r0:
        return
    rows = np.arange(r0, r1)[:, None] + 0.5
    mask = (rows >= top[None, :]) & (rows < bottom)
    codes = np.where(is_tree[block], VEGETATION, BUILDING)[None, :]
    variant = rng.integers(0, 256, size=65)[block][None, :]
    parts = np.where(is_tree[block], Part.FOLIAGE, Part.FACADE)[None, :]
    look = parts | (variant << 8) | (Facing.FRONT << 16)
    canvas.write_region(slice(r0, r1), slice(0, cam.width), mask, codes, look, np.float32(z))


def _facade_shadow(builder: SceneBuilder, side: Side, x: float, z0: float, z1: float, height: float) -> None:
    """Cast shadow of a facade on the ground, when the sun is on its side of the street."""
    sx, sz, length = builder.sun
    if length <= 0 or sx * side.sign <= 0.05:
        return
    reach = min(length * height, 80.0)
    poly = np.array([[x, z0], [x, z1], [x - sx * reach, z1 - sz * reach], [x - sx * reach, z0 - sz * reach]])
    poly[:, 1] = np.maximum(poly[:, 1], NEAR_PLANE)
    builder.shade_ground(poly)


def _facade_parts(u: np.ndarray, v: np.ndarray, building: Building, height: np.ndarray | float) -> np.ndarray:
    """Facade material from facade coordinates (u along the wall, v up, metres; broadcastable
    arrays): window grid above the ground floor, shop windows, a ledge under the roof."""
    pitch, floor = building.pitch, building.floor
    wu = _frac((u - building.offset) / pitch) < building.window_w
    wv = (_frac(v / floor) < building.window_h) & (v > 3.6) & (v < height - 1.0)
    parts = np.where(wu & wv, Part.WINDOW, Part.FACADE)
    if building.shop:
        shop = (v > 0.4) & (v < 3.0) & (_frac(u / 6.0) < 0.75)
        parts = np.where(shop, Part.SHOPFRONT, parts)
    return np.where((v > height - 0.6) & (v < height), Part.LEDGE, parts)


def _sample_building(builder: SceneBuilder) -> Building:
    """Height (within the domain's range) and window grid of one building."""
    rng = builder.rng
    lo, hi = builder.stats.building_height
    return Building(
        height=lo + (hi - lo) * rng.random() ** 1.5,  # mostly low, a few tall
        pitch=rng.uniform(2.4, 4.2),
        floor=rng.uniform(2.8, 3.6),
        window_w=rng.uniform(0.35, 0.65),
        window_h=rng.uniform(0.4, 0.65),
        offset=rng.uniform(0.0, 4.0),
        shop=rng.random() < 0.4,
        variant=int(rng.integers(256)),
    )


def draw_side_structures(builder: SceneBuilder, side: Side) -> None:
    """Buildings (or a park's tree line) along one side, far to near, with trees in the gaps."""
    rng, st = builder.rng, builder.street
    x_face = side.sign * side.facade
    facing = Facing.NEG_X if side.sign > 0 else Facing.POS_X
    if side.kind == "park":
        draw_park_tree_line(builder, side, facing)
        return
    if side.kind == "open":
        return
    segments = []
    z = rng.uniform(-10.0, 4.0)
    while z < st.far:
        if st.intersection is not None and st.intersection[0] - 2.0 < z < st.intersection[1] + 3.0:
            z = st.intersection[1] + 3.0
            continue
        if rng.random() < 0.3:
            gap = rng.uniform(4.0, 20.0)
            segments.append(("gap", z, z + gap, None))
            z += gap
            continue
        length = rng.uniform(8.0, 45.0)
        z1 = min(z + length, st.far)
        if st.intersection is not None and z < st.intersection[0] - 2.0 < z1:
            z1 = st.intersection[0] - 2.0
        segments.append(("building", z, z1, _sample_building(builder)))
        z = z1
    for kind, z0, z1, building in reversed(segments):  # far to near
        if kind == "gap":
            if rng.random() < 0.6:
                zt = rng.uniform(z0, z1)
                place_tree(builder, side.sign * (side.facade + rng.uniform(1.0, 4.0)), zt, now=True)
            continue
        setback = rng.uniform(0.0, 2.0) if rng.random() < 0.3 else 0.0
        xb = x_face + side.sign * setback
        height = building.height

        def parts(u, v, b=building, h=height, start=z0):
            return _facade_parts(u - start, v, b, h)

        _facade_shadow(builder, side, xb, max(z0, NEAR_PLANE), z1, height)
        if z0 > NEAR_PLANE:  # the near end wall faces the camera
            builder.plane_z(
                z0, *sorted((xb, xb + side.sign * 12.0)), height, BUILDING, parts, building.variant
            )
        builder.plane_x(
            xb,
            z0,
            z1,
            lambda z, h=height: np.full_like(z, h),
            0.0,
            BUILDING,
            parts,
            building.variant,
            facing,
        )


def draw_street_end(builder: SceneBuilder, z: float) -> None:
    """A row of frontal facades at depth z closing the street."""
    x = -200.0
    while x < 200.0:
        width = builder.rng.uniform(10.0, 40.0)
        building = _sample_building(builder)

        def parts(u, v, b=building, h=building.height):
            return _facade_parts(u, v, b, h)

        builder.plane_z(z, x, x + width, building.height, BUILDING, parts, building.variant)
        x += width


def draw_cross_street_facades(builder: SceneBuilder) -> None:
    """The facades facing the camera beyond the cross street, on the sides lined with buildings."""
    st = builder.street
    z = st.intersection[1] + builder.rng.uniform(2.0, 5.0)
    for side in st.sides:
        if side.kind != "buildings":
            continue
        building = _sample_building(builder)

        def parts(u, v, b=building, h=building.height):
            return _facade_parts(u, v, b, h)

        inner = side.sign * (side.facade + builder.rng.uniform(0.0, 2.0))
        x0, x1 = sorted((inner, inner + side.sign * 150.0))
        builder.plane_z(z, x0, x1, building.height, BUILDING, parts, building.variant)


def draw_boundaries(builder: SceneBuilder, side: Side) -> None:
    """Walls, fences, hedges along the building line; guard rails along the kerb."""
    rng, st = builder.rng, builder.street
    facing = Facing.NEG_X if side.sign > 0 else Facing.POS_X
    x = side.sign * (side.facade - 0.15)
    z = rng.uniform(-5.0, 15.0)
    while z < min(st.far, 120.0):
        length = rng.uniform(5.0, 30.0)
        choice = rng.random()
        crossing = (
            st.intersection is not None and st.intersection[0] - 4 < z + length and z < st.intersection[1] + 4
        )
        if not crossing:
            variant = int(rng.integers(256))
            if choice < 0.13:
                h = rng.uniform(0.6, 2.5)
                builder.plane_x(
                    x,
                    z,
                    z + length,
                    lambda zz, h=h: np.full_like(zz, h),
                    0.0,
                    WALL,
                    Part.CONCRETE,
                    variant,
                    facing,
                )
            elif choice < 0.26:
                h = rng.uniform(0.9, 2.2)

                def fence(u, v, h=h):
                    post = _frac(u / 2.5) < 0.036
                    rail = (v > h - 0.1) | ((v > 0.1) & (v < 0.2))
                    return np.where(post | rail, Part.FENCE_POST, Part.FENCE_MESH)

                builder.plane_x(
                    x,
                    z,
                    z + length,
                    lambda zz, h=h: np.full_like(zz, h),
                    0.0,
                    FENCE,
                    fence,
                    variant,
                    facing,
                )
            elif choice < 0.36:
                h = rng.uniform(0.8, 2.0)
                phase = rng.uniform(0, 6)
                builder.plane_x(
                    x,
                    z,
                    z + length,
                    lambda zz, h=h, p=phase: h + 0.15 * np.sin(zz * 2.3 + p),
                    0.0,
                    VEGETATION,
                    Part.FOLIAGE,
                    variant,
                    facing,
                )
        z += length + rng.uniform(0.0, 15.0)
    if builder.stats.clutter and rng.random() < 0.07:
        xg = side.kerb - side.sign * 0.2
        builder.plane_x(
            xg,
            NEAR_PLANE,
            80.0,
            lambda zz: np.full_like(zz, 0.8),
            0.3,
            GUARD_RAIL,
            Part.GUARDRAIL,
            0,
            facing,
        )
