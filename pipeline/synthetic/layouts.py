"""Street layouts of the synthetic benchmark: each domain's viewpoint and content statistics
(`LayoutStats`, the geometric part of the domain shift), the rates of the rare objects, and the sampled
street (`Street`, two `Side`s) that the scene builder draws.

x positions are signed metres (left of the camera negative), z is the depth along the street.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.synthetic.codes import GROUND, PARKING, SIDEWALK, TERRAIN, VEGETATION, Part

# ---- per-domain scene statistics ---------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutStats:
    """Viewpoint and content statistics of one domain (the geometric part of the domain shift)."""

    camera_height: tuple[float, float]  # metres
    horizon: tuple[float, float]  # horizon row as a fraction of the image height
    focal: tuple[float, float]  # focal length as a fraction of the image width
    yaw: float  # largest shift of the vanishing point, fraction of the width
    building_height: tuple[float, float]  # metres
    traffic: float  # expected vehicles per lane and 50 m
    pedestrians: float  # expected persons per sidewalk and 50 m
    trees: float  # probability that a side has a tree row
    terrain: bool  # grass verges (SYNTHIA has no terrain class)
    trucks: bool  # SYNTHIA has no truck class
    trains: bool  # SYNTHIA has no train class
    clutter: bool  # static/dynamic/ground/parking/guard rail/bridge objects (unevaluated Cityscapes ids)
    ego_hood: bool  # the recording car's bonnet at the bottom (Cityscapes)
    rectification_border: float  # probability of a border on the image edges (Cityscapes)
    parking: float  # probability of a parking strip on a side
    two_way: float  # probability that the street has oncoming lanes


LAYOUTS: dict[str, LayoutStats] = {
    # Game camera: low, long focal length (large objects), horizon near the middle.
    "gta5": LayoutStats(
        camera_height=(1.0, 1.45),
        horizon=(0.44, 0.56),
        focal=(1.15, 1.4),
        yaw=0.10,
        building_height=(6.0, 30.0),
        traffic=0.9,
        pedestrians=2.2,
        trees=0.55,
        terrain=True,
        trucks=True,
        trains=True,
        clutter=True,
        ego_hood=False,
        rectification_border=0.0,
        parking=0.12,
        two_way=0.8,
    ),
    # SYNTHIA-RAND: random viewpoints, often high above the street looking down, many pedestrians.
    "synthia": LayoutStats(
        camera_height=(2.2, 10.0),
        horizon=(0.05, 0.48),
        focal=(0.7, 1.05),
        yaw=0.18,
        building_height=(6.0, 24.0),
        traffic=1.1,
        pedestrians=5.0,
        trees=0.5,
        terrain=False,
        trucks=False,
        trains=False,
        clutter=False,
        ego_hood=False,
        rectification_border=0.0,
        parking=0.2,
        two_way=0.7,
    ),
    # Car-mounted camera: wide angle, horizon above the middle, ego hood and rectification border.
    "cityscapes": LayoutStats(
        camera_height=(1.3, 1.7),
        horizon=(0.34, 0.45),
        focal=(0.95, 1.15),
        yaw=0.06,
        building_height=(7.0, 20.0),
        traffic=0.8,
        pedestrians=2.5,
        trees=0.6,
        terrain=True,
        trucks=True,
        trains=True,
        clutter=True,
        ego_hood=True,
        rectification_border=0.35,
        parking=0.3,
        two_way=0.75,
    ),
}

# Rates of the rare classes, per image (so each is present in a few percent of the images).
P_TRAM = 0.1
P_MOTORCYCLE_RIDER = 0.12
P_PARKED_MOTORCYCLE = 0.1
P_BICYCLE_RIDER = 0.22
P_PARKED_BICYCLES = 0.18
P_TRUCK_IN_TRAFFIC = 0.05  # per vehicle in a lane
P_BUS_IN_TRAFFIC = 0.035
P_BUS_AT_STOP = 0.05  # per image
P_TRUCK_LOADING = 0.05  # per image
P_INTERSECTION = 0.35
P_STREET_END = 0.15
P_BRIDGE = 0.03
NEAR_PLANE = 1.0  # metres; nothing nearer is drawn
FAR_LIMIT = 400.0  # metres; depth of the skyline and of the ground at the horizon


@dataclass
class Side:
    """One side of the street (sign = −1 left, +1 right); x positions are signed metres."""

    sign: int
    kerb: float  # road edge
    bands: list[tuple[float, int, int]]  # outward from the kerb: (width m, class code, part)
    walk: tuple[float, float]  # sidewalk |x| range
    facade: float  # |x| of the building line
    beyond: tuple[int, int]  # ground class and part behind the building line
    kind: str  # "buildings" | "park" | "open"
    parking: bool = False
    verge: tuple[float, float] | None = None  # |x| range of a grass verge between kerb and sidewalk


@dataclass
class Street:
    """The road (lanes of `lane_width` metres from x = `left`) and what lies along and across it."""

    lane_width: float
    lanes: int
    left: float  # x of the left road edge
    oncoming: int  # lanes (from the left) whose traffic comes towards the camera
    sides: tuple[Side, Side]
    intersection: tuple[float, float] | None  # z range of a cross street
    end: float | None  # z of a frontal facade closing the street
    tram_lane: int | None
    far: float  # z where side structures stop

    def lane_center(self, lane: int) -> float:
        return self.left + (lane + 0.5) * self.lane_width

    @property
    def right(self) -> float:
        return self.left + self.lanes * self.lane_width


# ---- sampling a street ------------------------------------------------------------------------------


def sample_street(rng: np.random.Generator, stats: LayoutStats) -> Street:
    """Lanes, directions, the two sides, a cross street, a closing facade and a tram lane."""
    lane_width = rng.uniform(3.0, 3.6)
    lanes = int(rng.choice([1, 2, 2, 2, 3, 4]))
    ego_lane = int(rng.integers(lanes)) if lanes > 1 else 0
    if lanes >= 2 and rng.random() < 0.6:
        ego_lane = lanes - 1 if rng.random() < 0.6 else lanes // 2  # drive on the right
    left = -(ego_lane + rng.uniform(0.3, 0.7)) * lane_width
    oncoming = lanes // 2 if (lanes >= 2 and rng.random() < stats.two_way) else 0
    tram_lane = None
    if stats.trains and rng.random() < P_TRAM:
        tram_lane = int(rng.integers(lanes))
    sides = tuple(
        sample_side(rng, stats, sign, left if sign < 0 else left + lanes * lane_width) for sign in (-1, 1)
    )
    intersection = None
    if rng.random() < P_INTERSECTION:
        z0 = rng.uniform(10.0, 45.0)
        intersection = (z0, z0 + rng.uniform(8.0, 16.0))
    end = rng.uniform(45.0, 160.0) if rng.random() < P_STREET_END else None
    far = end if end is not None else rng.uniform(90.0, 260.0)
    return Street(lane_width, lanes, left, oncoming, sides, intersection, end, tram_lane, far)  # type: ignore[arg-type]


def sample_side(rng: np.random.Generator, stats: LayoutStats, sign: int, kerb: float) -> Side:
    """One side outward from the kerb: parking, verge, sidewalk, what lies behind the building line."""
    bands: list[tuple[float, int, int]] = []
    parking = rng.random() < stats.parking
    if parking:
        bands.append((rng.uniform(2.0, 2.5), PARKING, Part.PARKING_PAVE))
    verge = None
    if stats.terrain and rng.random() < 0.22:
        start = sum(b[0] for b in bands)
        width = rng.uniform(0.8, 3.0)
        bands.append((width, TERRAIN, Part.GRASS))
        verge = (abs(kerb) + start, abs(kerb) + start + width)
    bands.append((0.25, SIDEWALK, Part.CURB))
    walk_start = abs(kerb) + sum(b[0] for b in bands)
    walk_width = rng.uniform(1.8, 5.5)
    bands.append((walk_width, SIDEWALK, Part.PAVING))
    walk = (walk_start, walk_start + walk_width)
    if stats.terrain and rng.random() < 0.3:
        bands.append((rng.uniform(1.0, 5.0), TERRAIN, Part.GRASS))
    elif stats.clutter and rng.random() < 0.08:
        bands.append((rng.uniform(1.0, 3.0), GROUND, Part.SOIL))
    facade = abs(kerb) + sum(b[0] for b in bands)
    kind = str(rng.choice(["buildings", "park", "open"], p=[0.62, 0.2, 0.18]))
    if stats.terrain:
        beyond = (TERRAIN, Part.GRASS) if kind != "buildings" else (GROUND, Part.SOIL)
    else:
        beyond = (SIDEWALK, Part.PAVING) if kind == "buildings" else (VEGETATION, Part.FOLIAGE)
    if not stats.clutter and beyond[0] == GROUND:
        beyond = (SIDEWALK, Part.PAVING)
    return Side(sign, kerb, bands, walk, facade, beyond, kind, parking, verge)
