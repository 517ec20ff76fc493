"""Where the objects of a synthetic street stand: tree rows, lamps and signs along each side, pedestrians
in small groups, parked cars, bicycles and motorcycles, traffic in the lanes, riders, what happens at a
cross street, and the rare bridge; each at depths and lateral positions that respect the layout.

The per-image rates of the rare objects (`P_*`) are in `pipeline.synthetic.layouts`.
"""

from __future__ import annotations

import numpy as np

from pipeline.synthetic.builder import SceneBuilder
from pipeline.synthetic.codes import (
    BICYCLE,
    BUS,
    CAR,
    CARAVAN,
    DYNAMIC,
    MOTORCYCLE,
    STATIC,
    TRAILER,
    TRAIN,
    TRUCK,
)
from pipeline.synthetic.furniture import place_bridge, place_clutter, place_pole
from pipeline.synthetic.layouts import (
    P_BICYCLE_RIDER,
    P_BRIDGE,
    P_BUS_AT_STOP,
    P_BUS_IN_TRAFFIC,
    P_MOTORCYCLE_RIDER,
    P_PARKED_BICYCLES,
    P_PARKED_MOTORCYCLE,
    P_TRAM,
    P_TRUCK_IN_TRAFFIC,
    P_TRUCK_LOADING,
    Side,
)
from pipeline.synthetic.road_users import place_person, place_two_wheeler, place_vehicle
from pipeline.synthetic.vegetation import place_tree


def populate(builder: SceneBuilder) -> None:
    """Objects of every class, at depths and lateral positions that respect the layout."""
    rng, st, stats = builder.rng, builder.street, builder.stats
    z_max = min(st.far, 90.0)
    for side in st.sides:
        _populate_side(builder, side, z_max)
    if rng.random() < P_PARKED_MOTORCYCLE:
        side = st.sides[int(rng.integers(2))]
        place_two_wheeler(
            builder, side.sign * (side.walk[0] + 0.8), rng.uniform(3.0, 25.0), MOTORCYCLE, False, "side"
        )
    _place_traffic(builder, z_max)
    _place_riders(builder)
    if st.intersection is not None:
        _populate_intersection(builder, st.intersection)
    elif rng.random() < 0.2:
        side = st.sides[int(rng.integers(2))]
        place_pole(builder, side.sign * (side.walk[0] + 0.4), rng.uniform(10.0, 40.0), "light")
    if stats.clutter and rng.random() < P_BRIDGE:
        place_bridge(builder, rng.uniform(20.0, 70.0))


def _populate_side(builder: SceneBuilder, side: Side, z_max: float) -> None:
    """Trees, lamps and signs along one side; pedestrians, parked cars and bicycles, clutter on it."""
    rng, stats = builder.rng, builder.stats
    s = side.sign
    walk_in, walk_out = side.walk
    # Tree rows on the sidewalk or verge.
    if rng.random() < stats.trees:
        x_tree = s * (
            np.mean(side.verge) if side.verge else (walk_out - 0.7 if rng.random() < 0.5 else walk_in + 0.8)
        )
        z = rng.uniform(2.0, 10.0)
        spacing = rng.uniform(7.0, 16.0)
        while z < z_max:
            if rng.random() < 0.85:
                place_tree(builder, x_tree + rng.uniform(-0.3, 0.3), z)
            z += spacing * rng.uniform(0.8, 1.2)
    # Street lamps along the kerb.
    if rng.random() < 0.7:
        z = rng.uniform(3.0, 25.0)
        spacing = rng.uniform(18.0, 40.0)
        while z < z_max:
            place_pole(builder, s * (walk_in + 0.35), z, "lamp")
            z += spacing
    for _ in range(int(rng.poisson(1.6))):
        place_pole(builder, s * (walk_in + rng.uniform(0.3, 0.6)), rng.uniform(4.0, 60.0), "sign")
    if rng.random() < 0.3:  # plain poles (bollard posts, masts)
        place_pole(
            builder, s * (walk_in + 0.35), rng.uniform(4.0, 60.0), "sign" if rng.random() < 0.5 else "lamp"
        )
    # Pedestrians, in small groups.
    count = rng.poisson(stats.pedestrians * z_max / 50.0)
    z_group = rng.uniform(3.0, z_max)
    for k in range(count):
        if k == 0 or rng.random() < 0.5:
            z_group = rng.uniform(2.5, z_max)
        x = s * rng.uniform(walk_in + 0.4, max(walk_out - 0.4, walk_in + 0.5))
        place_person(builder, x, z_group + rng.uniform(-1.5, 1.5))
    # Parked cars on the parking strip (or along the kerb).
    if side.parking or rng.random() < 0.15:
        x_park = side.kerb + s * (1.15 if side.parking else -1.1)
        z = rng.uniform(3.0, 12.0)
        while z < z_max * 0.8:
            if rng.random() < 0.6:
                place_vehicle(builder, CAR, x_park + rng.uniform(-0.15, 0.15), z, front=rng.random() < 0.5)
            z += rng.uniform(5.2, 9.0)
    if rng.random() < P_PARKED_BICYCLES:
        z = rng.uniform(3.0, 30.0)
        for k in range(int(rng.integers(1, 5))):
            place_two_wheeler(builder, s * (walk_out - 0.6), z + 0.7 * k, BICYCLE, False, "side")
    if stats.clutter:
        for _ in range(int(rng.poisson(1.2))):
            code = STATIC if rng.random() < 0.8 else DYNAMIC
            place_clutter(
                builder, s * rng.uniform(walk_in + 0.3, walk_out - 0.2), rng.uniform(3.0, 50.0), code
            )


def _place_traffic(builder: SceneBuilder, z_max: float) -> None:
    """Vehicles in every lane (a tram in the tram lane), a bus at a stop, a truck loading."""
    rng, st, stats = builder.rng, builder.street, builder.stats
    for lane in range(st.lanes):
        x = st.lane_center(lane)
        front = lane < st.oncoming
        if lane == st.tram_lane:
            place_vehicle(builder, TRAIN, x, rng.uniform(8.0, 45.0), front=front)
            continue
        z = rng.uniform(7.0, 18.0)
        while z < z_max:
            if rng.random() < stats.traffic * 0.35:
                code = CAR
                draw = rng.random()
                if stats.trucks and draw < P_TRUCK_IN_TRAFFIC:
                    code = TRUCK
                elif draw < P_TRUCK_IN_TRAFFIC + P_BUS_IN_TRAFFIC:
                    code = BUS
                elif stats.clutter and draw > 0.985:
                    code = CARAVAN if rng.random() < 0.5 else TRAILER
                place_vehicle(builder, code, x + rng.uniform(-0.3, 0.3), z, front=front)
                z += 12.0 if code != CAR else 5.0
            z += rng.uniform(4.0, 22.0)
    if rng.random() < P_BUS_AT_STOP:  # a bus at a stop on the kerb lane
        lane = st.lanes - 1
        place_vehicle(builder, BUS, st.lane_center(lane) + 0.3, rng.uniform(8.0, 40.0), front=False)
    if stats.trucks and rng.random() < P_TRUCK_LOADING:
        lane = int(rng.integers(st.lanes))
        place_vehicle(builder, TRUCK, st.lane_center(lane), rng.uniform(8.0, 50.0), front=lane < st.oncoming)


def _place_riders(builder: SceneBuilder) -> None:
    """Cyclists and motorcyclists: crossing at the intersection, or ahead in a lane."""
    rng, st = builder.rng, builder.street
    for kind, p in ((BICYCLE, P_BICYCLE_RIDER), (MOTORCYCLE, P_MOTORCYCLE_RIDER)):
        if rng.random() < p:
            if st.intersection is not None and rng.random() < 0.5:
                z = rng.uniform(*st.intersection)
                place_two_wheeler(builder, rng.uniform(st.left - 4, st.right + 4), z, kind, True, "side")
            else:
                lane_x = st.right - 0.9 if kind == BICYCLE else st.lane_center(int(rng.integers(st.lanes)))
                place_two_wheeler(builder, lane_x, rng.uniform(4.0, 35.0), kind, True, "rear")


def _populate_intersection(builder: SceneBuilder, intersection: tuple[float, float]) -> None:
    """Crossing vehicles, pedestrians on the zebra, traffic lights at the corners."""
    rng, st, stats = builder.rng, builder.street, builder.stats
    zi0, zi1 = intersection
    for _ in range(int(rng.integers(0, 3))):
        code = BUS if rng.random() < 0.1 else CAR
        place_vehicle(
            builder, code, rng.uniform(-25.0, 25.0), rng.uniform(zi0 + 1, zi1 - 2.5), False, side_view=True
        )
    if stats.trains and rng.random() < P_TRAM * 0.5:
        place_vehicle(
            builder, TRAIN, rng.uniform(-20.0, 20.0), rng.uniform(zi0 + 1, zi1 - 3), False, side_view=True
        )
    for _ in range(int(rng.poisson(1.5))):
        place_person(builder, rng.uniform(st.left, st.right), rng.uniform(zi0 - 3.5, zi0 - 1.2), view="side")
    for side in st.sides:
        if rng.random() < 0.8:
            place_pole(builder, side.sign * (side.walk[0] + 0.4), zi0 - rng.uniform(0.5, 3.0), "light")
        if rng.random() < 0.4:
            place_pole(builder, side.sign * (side.walk[0] + 0.4), zi1 + rng.uniform(0.5, 3.0), "light")
