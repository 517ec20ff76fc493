"""Street-scene geometry of the synthetic benchmark: a ground-plane camera, a street layout, objects.

A scene is drawn into a `Canvas` of per-pixel fields, not colours: the class (a Cityscapes label id, or
`LANE_MARKING`), the instance, the surface material (`Part`), a per-object colour variant, the face
orientation, the depth and the cast shadow. `pipeline.data.styles` turns those fields into a domain's
pixels, so every domain shares the same geometric models and only their rendering differs.

Geometry (pinhole camera at height `camera_height` over a flat ground, looking along +z, no roll):
a point (x right, y up, z forward) in metres projects to column cx + f·x/z and row horizon + f·(h − y)/z.
Hence a ground contact at depth z lies on row horizon + f·h/z and an object's size in pixels is f·size/z.
Flat objects (persons, bicycles, signs) are billboards at one depth; vehicles are boxes whose near face,
inner side and (seen from above) roof are drawn; facades, walls and fences are vertical planes x = const
rendered column by column. Everything is drawn far to near (painter's algorithm).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.constants import CITYSCAPES_ID_OF_TRAIN_ID, CITYSCAPES_IGNORED_IDS, CLASS_NAMES

# ---- classes: the scene writes Cityscapes label ids (the GTA5 files use the same table) -------------
_ID = dict(zip(CLASS_NAMES, CITYSCAPES_ID_OF_TRAIN_ID, strict=True)) | CITYSCAPES_IGNORED_IDS
ROAD, SIDEWALK, BUILDING, WALL, FENCE = (_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN = _ID["pole"], _ID["traffic light"], _ID["traffic sign"]
VEGETATION, TERRAIN, SKY = _ID["vegetation"], _ID["terrain"], _ID["sky"]
PERSON, RIDER, CAR, TRUCK, BUS = (_ID[n] for n in ("person", "rider", "car", "truck", "bus"))
TRAIN, MOTORCYCLE, BICYCLE = _ID["train"], _ID["motorcycle"], _ID["bicycle"]
UNLABELED, EGO_VEHICLE, RECT_BORDER = _ID["unlabeled"], _ID["ego vehicle"], _ID["rectification border"]
STATIC, DYNAMIC, GROUND, PARKING = _ID["static"], _ID["dynamic"], _ID["ground"], _ID["parking"]
RAIL_TRACK, GUARD_RAIL, BRIDGE = _ID["rail track"], _ID["guard rail"], _ID["bridge"]
CARAVAN, TRAILER = _ID["caravan"], _ID["trailer"]
# Painted lane markings: part of `road` in Cityscapes and GTA5 labels, their own class (22) in SYNTHIA.
# Not a Cityscapes id (those end at 33); each domain's lookup table maps it.
LANE_MARKING = 34
NUM_CODES = 35
# Classes whose objects get instance ids (Cityscapes `hasInstances`).
INSTANCE_CODES = (PERSON, RIDER, CAR, TRUCK, BUS, CARAVAN, TRAILER, TRAIN, MOTORCYCLE, BICYCLE)


class Part(enum.IntEnum):
    """Surface materials; a domain's style gives each a palette and a texture."""

    SKY = 0
    ASPHALT = enum.auto()
    MARKING = enum.auto()
    CURB = enum.auto()
    PAVING = enum.auto()
    PAVING_JOINT = enum.auto()
    PARKING_PAVE = enum.auto()
    GRASS = enum.auto()
    SOIL = enum.auto()
    GRAVEL = enum.auto()
    RAIL_METAL = enum.auto()
    FACADE = enum.auto()
    WINDOW = enum.auto()
    SHOPFRONT = enum.auto()
    LEDGE = enum.auto()
    CONCRETE = enum.auto()
    FENCE_MESH = enum.auto()
    FENCE_POST = enum.auto()
    GUARDRAIL = enum.auto()
    FOLIAGE = enum.auto()
    BARK = enum.auto()
    POLE_METAL = enum.auto()
    SIGN_FACE = enum.auto()
    SIGN_INNER = enum.auto()
    SIGN_BACK = enum.auto()
    LIGHT_HOUSING = enum.auto()
    LAMP_ON = enum.auto()
    LAMP_OFF = enum.auto()
    STREETLAMP = enum.auto()
    CAR_PAINT = enum.auto()
    GLASS = enum.auto()
    TYRE = enum.auto()
    TAILLIGHT = enum.auto()
    HEADLIGHT = enum.auto()
    PLATE = enum.auto()
    BUMPER = enum.auto()
    TRUCK_PAINT = enum.auto()
    CARGO_BOX = enum.auto()
    BUS_PAINT = enum.auto()
    TRAIN_PAINT = enum.auto()
    BIKE_FRAME = enum.auto()
    SPOKES = enum.auto()
    SKIN = enum.auto()
    HAIR = enum.auto()
    CLOTH_TOP = enum.auto()
    CLOTH_BOTTOM = enum.auto()
    HELMET = enum.auto()
    CLUTTER = enum.auto()
    HOOD = enum.auto()
    BORDER = enum.auto()


class Facing(enum.IntEnum):
    """Orientation of a surface, for the style's lighting."""

    UP = 0  # ground, roofs
    FRONT = 1  # faces the camera (normal −z)
    POS_X = 2  # faces right (+x): facades on the left of the street, inner sides of left vehicles
    NEG_X = 3  # faces left (−x)
    EMISSIVE = 4  # sky, lamps: no lighting, no shadow


# Packed per-pixel fields. `ids` = code | instance << 8; `look` = part | variant << 8 | facing << 16 |
# shadow << 20 (shadow quantised to 0…SHADOW_LEVELS). One cv2.fillPoly per field keeps drawing cheap.
SHADOW_LEVELS = 15
_FIXED_SHIFT = 4  # cv2.fillPoly fixed-point bits: vertices at 1/16 pixel
_FIXED = float(1 << _FIXED_SHIFT)
_COORD_LIMIT = 1.0e6  # pixels; keeps far-off-screen vertices inside int32 after the fixed-point shift


def _fixed(polygon: np.ndarray) -> np.ndarray:
    """Float pixel coordinates → cv2.fillPoly fixed-point vertices."""
    return np.rint(np.clip(polygon, -_COORD_LIMIT, _COORD_LIMIT) * _FIXED).astype(np.int32)


def pack_look(part: int, variant: int, facing: int, shadow: int = 0) -> int:
    return int(part) | (int(variant) << 8) | (int(facing) << 16) | (int(shadow) << 20)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera over a flat ground (metres, pixels)."""

    height: int  # image rows
    width: int  # image columns
    horizon: float  # row of the horizon (vanishing line), may lie outside the image
    cx: float  # column of the vanishing point of the street
    focal: float  # pixels
    elevation: float  # camera height above the ground, metres

    def col(self, x: np.ndarray | float, z: np.ndarray | float) -> np.ndarray:
        return self.cx + self.focal * np.asarray(x, dtype=np.float64) / z

    def row(self, y: np.ndarray | float, z: np.ndarray | float) -> np.ndarray:
        return self.horizon + self.focal * (self.elevation - np.asarray(y, dtype=np.float64)) / z

    def scale(self, z: float) -> float:
        """Pixels per metre at depth z."""
        return self.focal / z


class Canvas:
    """Per-pixel scene fields, written far to near."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.ids = np.zeros((height, width), dtype=np.int32)
        self.look = np.zeros((height, width), dtype=np.int32)
        self.depth = np.full((height, width), np.inf, dtype=np.float32)
        self._next_instance = 1

    def new_instance(self) -> int:
        instance = self._next_instance
        self._next_instance += 1
        return instance

    def fill(
        self,
        polygons: list[np.ndarray] | np.ndarray,
        code: int,
        look: int,
        depth: float | None,
        instance: int = 0,
    ) -> None:
        """Fill polygons given as float arrays [N, 2] (or one array [P, N, 2]) of (column, row) pixel
        coordinates; depth None keeps the depth already there (ground markings)."""
        points = list(_fixed(polygons)) if isinstance(polygons, np.ndarray) else [_fixed(p) for p in polygons]
        self.fill_fixed(points, code, look, depth, instance)

    def fill_fixed(
        self, points: list[np.ndarray], code: int, look: int, depth: float | None, instance: int = 0
    ) -> None:
        """`fill` for vertices already in cv2.fillPoly fixed point (see `_fixed`)."""
        cv2.fillPoly(self.ids, points, code | (instance << 8), cv2.LINE_8, _FIXED_SHIFT)
        cv2.fillPoly(self.look, points, look, cv2.LINE_8, _FIXED_SHIFT)
        if depth is not None:
            cv2.fillPoly(self.depth, points, float(depth), cv2.LINE_8, _FIXED_SHIFT)

    def shade(self, polygons: list[np.ndarray], shadow: int) -> None:
        """Set the cast-shadow level inside polygons (ground shadows of buildings, vehicles, trees)."""
        allpoints = np.concatenate(polygons)
        c0, r0 = np.maximum(np.floor(allpoints.min(axis=0)), 0).astype(int)
        c1 = min(int(np.ceil(allpoints[:, 0].max())) + 1, self.width)
        r1 = min(int(np.ceil(allpoints[:, 1].max())) + 1, self.height)
        if c1 <= c0 or r1 <= r0:
            return
        mask = np.zeros((r1 - r0, c1 - c0), dtype=np.uint8)
        cv2.fillPoly(mask, [_fixed(p - (c0, r0)) for p in polygons], 1, cv2.LINE_8, _FIXED_SHIFT)
        region = self.look[r0:r1, c0:c1]
        inside = mask.view(bool)
        region[inside] = (region[inside] & ~(0xF << 20)) | (shadow << 20)

    def shadow_at(self, col: float, row: float) -> int:
        """Cast-shadow level of the ground under a contact point (objects standing in shadow)."""
        r, c = int(np.clip(row, 0, self.height - 1)), int(np.clip(col, 0, self.width - 1))
        return int((self.look[r, c] >> 20) & 0xF)

    def write_region(
        self,
        rows: slice,
        cols: slice,
        mask: np.ndarray,
        ids: np.ndarray | int,
        look: np.ndarray | int,
        depth: np.ndarray | float,
    ) -> None:
        """Vectorised fill of a rectangular region under a boolean mask (broadcastable arrays)."""
        np.copyto(self.ids[rows, cols], ids, where=mask, casting="unsafe")
        np.copyto(self.look[rows, cols], look, where=mask, casting="unsafe")
        np.copyto(self.depth[rows, cols], depth, where=mask, casting="unsafe")

    @property
    def code(self) -> np.ndarray:
        return (self.ids & 0xFF).astype(np.uint8)

    @property
    def instance(self) -> np.ndarray:
        return (self.ids >> 8).astype(np.uint16)


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


@dataclass(frozen=True)
class Scene:
    """The outcome of `draw_scene`: the filled canvas and the camera that saw it."""

    canvas: Canvas
    camera: Camera


# ---- small geometry helpers --------------------------------------------------------------------------


_UNIT_CIRCLES = {
    n: np.stack([np.cos(t), np.sin(t)], axis=1)
    for n in (10, 14, 16)
    for t in [np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)]
}


def _circle(cu: float, cv: float, ru: float, rv: float | None = None, n: int = 14) -> np.ndarray:
    return _UNIT_CIRCLES[n] * (ru, ru if rv is None else rv) + (cu, cv)


def _rect(u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    return np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], dtype=np.float64)


def _bar(a: tuple[float, float], b: tuple[float, float], width: float) -> np.ndarray:
    """Quad of `width` metres around the segment a → b (limbs, bicycle tubes)."""
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = b_ - a_
    n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-9) * width / 2
    return np.array([a_ + n, b_ + n, b_ - n, a_ - n])


def _blob(rng: np.random.Generator, cu: float, cv: float, ru: float, rv: float, n: int = 20) -> np.ndarray:
    """Irregular closed outline (tree canopies, bushes)."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    r = 1.0 + 0.18 * rng.standard_normal(n).clip(-2, 2)
    return np.stack([cu + ru * r * np.cos(t), cv + rv * r * np.sin(t)], axis=1)


def _billboard(cam: Camera, x: float, z: float, mirror: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """Sprite (u right, v up, metres) standing at (x, 0, z) → image (col, row)."""
    # A billboard is an affine map: (u, v) → (cx + f·(x ± u)/z, horizon + f·(h − v)/z).
    scale = np.array([(-1.0 if mirror else 1.0) * cam.focal / z, -cam.focal / z])
    offset = np.array([cam.cx + cam.focal * x / z, cam.horizon + cam.focal * cam.elevation / z])

    def project(points: np.ndarray) -> np.ndarray:
        return points * scale + offset

    return project


def _side_face(cam: Camera, x: float, z: float) -> Callable[[np.ndarray], np.ndarray]:
    """Profile (s along +z from z, v up) on the vertical plane x = const → image."""

    def project(points: np.ndarray) -> np.ndarray:
        depth = z + points[:, 0]
        return np.stack([cam.col(x, depth), cam.row(points[:, 1], depth)], axis=1)

    return project


def _ground(cam: Camera) -> Callable[[np.ndarray], np.ndarray]:
    """Ground points (x, z) → image."""

    def project(points: np.ndarray) -> np.ndarray:
        return np.stack([cam.col(points[:, 0], points[:, 1]), cam.row(0.0, points[:, 1])], axis=1)

    return project


def _roof(cam: Camera, x: float, z: float, y: float) -> Callable[[np.ndarray], np.ndarray]:
    """Horizontal plane at height y: (u lateral offset, s along +z) → image."""

    def project(points: np.ndarray) -> np.ndarray:
        depth = z + points[:, 1]
        return np.stack([cam.col(x + points[:, 0], depth), cam.row(y, depth)], axis=1)

    return project


def _frac(x: np.ndarray) -> np.ndarray:
    """Fractional part (cheaper than np.mod on floats)."""
    return x - np.floor(x)


# ---- the sprite models (shared by every domain) -------------------------------------------------------
# A model is a list of (polygon in model coordinates, part, facing); the caller projects and fills them
# in order, so later parts (windows, wheels) sit on earlier ones (the body).
Shape = list[tuple[np.ndarray, int, int]]


def person_sprite(rng: np.random.Generator, height: float, view: str) -> Shape:
    """Pedestrian of `height` m; view "front" (or back) or "side" (walking, facing +u)."""
    h = height
    shape: Shape = []
    if view == "side":
        stride = rng.uniform(0.0, 0.32) * h
        hip = (0.0, 0.5 * h)
        for sgn in (-1.0, 1.0):
            knee = (sgn * stride * 0.35, 0.27 * h)
            foot = (sgn * stride * 0.5, 0.0)
            shape += [
                (_bar(hip, knee, 0.085 * h), Part.CLOTH_BOTTOM, Facing.FRONT),
                (_bar(knee, foot, 0.07 * h), Part.CLOTH_BOTTOM, Facing.FRONT),
            ]
        shape.append(
            (
                np.array([[-0.07, 0.48], [0.07, 0.48], [0.08, 0.82], [-0.08, 0.82]]) * h,
                Part.CLOTH_TOP,
                Facing.FRONT,
            )
        )
        swing = rng.uniform(-0.18, 0.18) * h
        shape.append((_bar((0.0, 0.8 * h), (swing, 0.47 * h), 0.055 * h), Part.CLOTH_TOP, Facing.FRONT))
    else:
        for sgn in (-1.0, 1.0):
            shape.append(
                (
                    np.array([[0.01, 0.49], [0.1, 0.49], [0.1, 0.0], [0.02, 0.0]]) * [sgn * h, h],
                    Part.CLOTH_BOTTOM,
                    Facing.FRONT,
                )
            )
            shape.append(
                (
                    np.array([[0.15, 0.81], [0.21, 0.79], [0.2, 0.47], [0.15, 0.47]]) * [sgn * h, h],
                    Part.CLOTH_TOP,
                    Facing.FRONT,
                )
            )
        shape.append(
            (
                np.array([[-0.15, 0.47], [0.15, 0.47], [0.17, 0.82], [-0.17, 0.82]]) * h,
                Part.CLOTH_TOP,
                Facing.FRONT,
            )
        )
    shape.append((_bar((0.0, 0.8 * h), (0.0, 0.86 * h), 0.06 * h), Part.SKIN, Facing.FRONT))
    shape.append((_circle(0.0, 0.91 * h, 0.058 * h, 0.068 * h), Part.SKIN, Facing.FRONT))
    shape.append((_circle(0.0, 0.945 * h, 0.06 * h, 0.04 * h, n=10), Part.HAIR, Facing.FRONT))
    return shape


def _wheel(cu: float, radius: float, spokes: bool) -> Shape:
    inner = Part.SPOKES if spokes else Part.BUMPER
    return [
        (_circle(cu, radius, radius), Part.TYRE, Facing.FRONT),
        (_circle(cu, radius, radius * (0.8 if spokes else 0.55)), inner, Facing.FRONT),
    ]


def two_wheeler_sprite(kind: int, view: str) -> Shape:
    """Bicycle or motorcycle facing +u in side view, or seen from behind ("rear")."""
    if view == "rear":
        if kind == BICYCLE:
            return [
                (_rect(-0.025, 0.0, 0.025, 0.68), Part.TYRE, Facing.FRONT),
                (_rect(-0.3, 0.95, 0.3, 1.0), Part.BIKE_FRAME, Facing.FRONT),
                (_rect(-0.08, 0.82, 0.08, 0.9), Part.BIKE_FRAME, Facing.FRONT),
            ]
        return [
            (_rect(-0.08, 0.0, 0.08, 0.6), Part.TYRE, Facing.FRONT),
            (
                np.array([[-0.28, 0.4], [0.28, 0.4], [0.24, 0.95], [-0.24, 0.95]]),
                Part.CAR_PAINT,
                Facing.FRONT,
            ),
            (_rect(-0.38, 1.0, 0.38, 1.06), Part.BIKE_FRAME, Facing.FRONT),
            (_rect(-0.1, 0.62, 0.1, 0.7), Part.TAILLIGHT, Facing.FRONT),
        ]
    if kind == BICYCLE:
        r, seat, head, bb = 0.34, (-0.18, 0.88), (0.36, 0.9), (0.0, 0.3)
        shape: Shape = _wheel(-0.52, r, True) + _wheel(0.52, r, True)
        for a, b in (((-0.52, r), seat), (seat, bb), (bb, (-0.52, r)), (seat, head), (bb, head)):
            shape.append((_bar(a, b, 0.045), Part.BIKE_FRAME, Facing.FRONT))
        shape += [
            (_bar(head, (0.52, r), 0.045), Part.BIKE_FRAME, Facing.FRONT),
            (_bar(head, (0.42, 1.02), 0.04), Part.BIKE_FRAME, Facing.FRONT),
            (_rect(-0.28, 0.88, -0.08, 0.93), Part.BUMPER, Facing.FRONT),
        ]
        return shape
    r = 0.31
    body = np.array(
        [
            [-0.85, 0.55],
            [-0.55, 0.78],
            [0.05, 0.82],
            [0.35, 0.95],
            [0.6, 0.78],
            [0.72, 0.45],
            [0.25, 0.25],
            [-0.35, 0.3],
        ]
    )
    return [
        *_wheel(-0.72, r, False),
        *_wheel(0.72, r, False),
        (body, Part.CAR_PAINT, Facing.FRONT),
        (_rect(-0.25, 0.25, 0.25, 0.5), Part.BUMPER, Facing.FRONT),
        (_bar((0.55, 0.85), (0.72, r), 0.06), Part.BIKE_FRAME, Facing.FRONT),
        (_bar((0.5, 1.05), (0.6, 0.8), 0.05), Part.BIKE_FRAME, Facing.FRONT),
        (_rect(-0.9, 0.6, -0.82, 0.68), Part.TAILLIGHT, Facing.FRONT),
    ]


def rider_sprite(kind: int, view: str) -> Shape:
    """The person on a two-wheeler (class rider), in the two-wheeler's coordinates."""
    helmet = Part.HELMET if kind == MOTORCYCLE else Part.HAIR
    if view == "rear":
        return [
            (_rect(-0.2, 0.55, -0.08, 1.0), Part.CLOTH_BOTTOM, Facing.FRONT),
            (_rect(0.08, 0.55, 0.2, 1.0), Part.CLOTH_BOTTOM, Facing.FRONT),
            (np.array([[-0.2, 0.95], [0.2, 0.95], [0.22, 1.5], [-0.22, 1.5]]), Part.CLOTH_TOP, Facing.FRONT),
            (_circle(0.0, 1.62, 0.11, 0.13), Part.SKIN, Facing.FRONT),
            (_circle(0.0, 1.67, 0.12, 0.1, n=10), helmet, Facing.FRONT),
        ]
    if kind == BICYCLE:
        hip, shoulder, head, knee, foot, hand = (
            (-0.15, 0.95),
            (0.18, 1.48),
            (0.26, 1.64),
            (0.2, 0.72),
            (0.02, 0.3),
            (0.42, 1.02),
        )
    else:
        hip, shoulder, head, knee, foot, hand = (
            (-0.25, 0.88),
            (0.08, 1.42),
            (0.15, 1.6),
            (0.22, 0.75),
            (0.05, 0.38),
            (0.5, 1.05),
        )
    return [
        (_bar(hip, knee, 0.15), Part.CLOTH_BOTTOM, Facing.FRONT),
        (_bar(knee, foot, 0.12), Part.CLOTH_BOTTOM, Facing.FRONT),
        (_bar(hip, shoulder, 0.3), Part.CLOTH_TOP, Facing.FRONT),
        (_bar(shoulder, hand, 0.09), Part.CLOTH_TOP, Facing.FRONT),
        (_circle(*head, 0.11, 0.13), Part.SKIN, Facing.FRONT),
        (_circle(head[0], head[1] + 0.05, 0.12, 0.1, n=10), helmet, Facing.FRONT),
    ]


@dataclass(frozen=True)
class VehicleModel:
    width: float
    length: float
    height: float
    paint: int  # body part


def vehicle_model(rng: np.random.Generator, code: int) -> VehicleModel:
    if code == CAR:
        tall = rng.random() < 0.25  # SUVs and vans
        return VehicleModel(
            rng.uniform(1.7, 1.95),
            rng.uniform(3.9, 4.9),
            rng.uniform(1.6, 1.95) if tall else rng.uniform(1.38, 1.55),
            Part.CAR_PAINT,
        )
    if code in (TRUCK, CARAVAN, TRAILER):
        return VehicleModel(
            rng.uniform(2.3, 2.55), rng.uniform(6.5, 11.0), rng.uniform(2.9, 3.9), Part.TRUCK_PAINT
        )
    if code == BUS:
        return VehicleModel(2.55, rng.uniform(11.0, 13.5), rng.uniform(3.0, 3.3), Part.BUS_PAINT)
    return VehicleModel(
        rng.uniform(2.4, 2.65), rng.uniform(25.0, 40.0), rng.uniform(3.3, 3.7), Part.TRAIN_PAINT
    )


def vehicle_end_sprite(code: int, m: VehicleModel, front: bool) -> Shape:
    """Rear (or front) face of a vehicle, width m.width, centred on u = 0."""
    w, h, p = m.width, m.height, m.paint
    half = w / 2
    lamp = Part.HEADLIGHT if front else Part.TAILLIGHT
    wheels = [
        (_rect(-half, 0.0, -half + 0.22 * w, 0.3), Part.TYRE, Facing.FRONT),
        (_rect(half - 0.22 * w, 0.0, half, 0.3), Part.TYRE, Facing.FRONT),
    ]
    if code == CAR:
        glass = (
            np.array([[-0.4, 0.62], [0.4, 0.62], [0.33, 0.94], [-0.33, 0.94]]) * [w, h]
            if front
            else np.array([[-0.36, 0.64], [0.36, 0.64], [0.31, 0.92], [-0.31, 0.92]]) * [w, h]
        )
        return [
            *wheels,
            (_rect(-half, 0.12 * h, half, 0.58 * h), p, Facing.FRONT),
            (np.array([[-0.45, 0.58], [0.45, 0.58], [0.37, 1.0], [-0.37, 1.0]]) * [w, h], p, Facing.FRONT),
            (glass, Part.GLASS, Facing.FRONT),
            (_rect(-half, 0.12 * h, half, 0.24 * h), Part.BUMPER, Facing.FRONT),
            (_rect(-0.47 * w, 0.42 * h, -0.33 * w, 0.52 * h), lamp, Facing.FRONT),
            (_rect(0.33 * w, 0.42 * h, 0.47 * w, 0.52 * h), lamp, Facing.FRONT),
            (_rect(-0.12 * w, 0.27 * h, 0.12 * w, 0.36 * h), Part.PLATE, Facing.FRONT),
        ]
    if code in (TRUCK, CARAVAN, TRAILER) and not front:
        return [
            *wheels,
            (_rect(-half, 0.3, half, h), Part.CARGO_BOX if code == TRUCK else p, Facing.FRONT),
            (_rect(-0.003 * w, 0.35, 0.003 * w + 0.03, h - 0.1), Part.LEDGE, Facing.FRONT),
            (_rect(-half, 0.25, half, 0.42), Part.BUMPER, Facing.FRONT),
            (_rect(-0.48 * w, 0.45, -0.38 * w, 0.6), lamp, Facing.FRONT),
            (_rect(0.38 * w, 0.45, 0.48 * w, 0.6), lamp, Facing.FRONT),
        ]
    if code == TRUCK:  # cab seen from the front
        return [
            *wheels,
            (_rect(-half, 0.3, half, 0.92 * h), p, Facing.FRONT),
            (_rect(-0.45 * w, 0.55 * h, 0.45 * w, 0.85 * h), Part.GLASS, Facing.FRONT),
            (_rect(-half, 0.3, half, 0.5), Part.BUMPER, Facing.FRONT),
            (_rect(-0.46 * w, 0.55, -0.32 * w, 0.7), lamp, Facing.FRONT),
            (_rect(0.32 * w, 0.55, 0.46 * w, 0.7), lamp, Facing.FRONT),
        ]
    # bus and train ends: tall box, big window, lamps low
    top = np.array(
        [[-half, 0.25], [half, 0.25], [half, h - 0.25], [half - 0.2, h], [-half + 0.2, h], [-half, h - 0.25]]
    )
    shape: Shape = (
        [*wheels] if code == BUS else [(_rect(-0.42 * w, 0.0, 0.42 * w, 0.4), Part.BUMPER, Facing.FRONT)]
    )
    shape += [
        (top, p, Facing.FRONT),
        (
            _rect(-0.42 * w, 0.5 * h, 0.42 * w, 0.88 * h)
            if front
            else _rect(-0.38 * w, 0.62 * h, 0.38 * w, 0.88 * h),
            Part.GLASS,
            Facing.FRONT,
        ),
        (_rect(-half, 0.25, half, 0.55), Part.BUMPER, Facing.FRONT),
        (_rect(-0.46 * w, 0.6, -0.34 * w, 0.8), lamp, Facing.FRONT),
        (_rect(0.34 * w, 0.6, 0.46 * w, 0.8), lamp, Facing.FRONT),
    ]
    return shape


def vehicle_side_sprite(code: int, m: VehicleModel, facing: int) -> Shape:
    """Side profile, s from 0 (rear) to m.length (front), v up."""
    L, h, p = m.length, m.height, m.paint
    if code == CAR:
        body = np.array(
            [
                [0.0, 0.16],
                [0.0, 0.56],
                [0.2, 0.62],
                [0.3, 1.0],
                [0.64, 1.0],
                [0.78, 0.62],
                [1.0, 0.54],
                [1.0, 0.16],
            ]
        ) * [L, h]
        glass = np.array([[0.24, 0.65], [0.32, 0.94], [0.62, 0.94], [0.74, 0.65]]) * [L, h]
        r = 0.32
        return [
            (body, p, facing),
            (glass, Part.GLASS, facing),
            (_rect(0.48 * L, 0.64 * h, 0.5 * L, 0.97 * h), p, facing),
            *[
                (poly, part, facing)
                for poly, part, _ in _wheel(0.19 * L, r, False) + _wheel(0.81 * L, r, False)
            ],
        ]
    r = 0.5 if code != TRAIN else 0.42
    wheels = [
        (poly, part, facing)
        for s in ((0.18, 0.82) if code != TRAIN else (0.08, 0.15, 0.85, 0.92))
        for poly, part, _ in _wheel(s * L, r, False)
    ]
    if code in (TRUCK, CARAVAN, TRAILER):
        cab = 2.3
        shape: Shape = [
            (_rect(0.0, 0.35, L - cab - 0.2, h), Part.CARGO_BOX if code == TRUCK else p, facing),
            (
                np.array(
                    [[L - cab, 0.35], [L, 0.35], [L, 0.55 * h], [L - 0.5, 0.92 * h], [L - cab, 0.92 * h]]
                ),
                p,
                facing,
            ),
            (
                np.array([[L - 1.4, 0.6 * h], [L - 0.2, 0.6 * h], [L - 0.55, 0.86 * h], [L - 1.4, 0.86 * h]]),
                Part.GLASS,
                facing,
            ),
        ]
        return shape + wheels
    # bus and train: long box with a band of windows
    shape = [(_rect(0.0, 0.3 if code == BUS else 0.5, L, h), p, facing)]
    pitch = 1.6 if code == BUS else 2.2
    for k in range(int((L - 1.0) / pitch)):
        s0 = 0.5 + k * pitch
        shape.append((_rect(s0, 0.5 * h, s0 + pitch - 0.25, 0.85 * h), Part.GLASS, facing))
    if code == TRAIN:
        shape.append((_rect(0.0, h - 0.15, L, h), Part.LEDGE, facing))
    return shape + wheels


# ---- the scene ----------------------------------------------------------------------------------------


class SceneBuilder:
    """Samples a street layout and draws it; `sun` = (unit horizontal direction (x, z), shadow length
    per metre of height) comes from the style (hard long shadows in the game, none when overcast)."""

    def __init__(
        self,
        rng: np.random.Generator,
        domain: str,
        height: int,
        width: int,
        sun: tuple[float, float, float],
    ) -> None:
        self.rng = rng
        self.stats = LAYOUTS[domain]
        self.domain = domain
        self.sun = sun
        stats = self.stats
        focal = rng.uniform(*stats.focal) * width
        self.cam = Camera(
            height=height,
            width=width,
            horizon=rng.uniform(*stats.horizon) * height,
            cx=width / 2 + rng.uniform(-stats.yaw, stats.yaw) * width,
            focal=focal,
            elevation=rng.uniform(*stats.camera_height),
        )
        self.canvas = Canvas(height, width)
        self.items: list[tuple[float, int, Callable[[], None]]] = []
        self.street = self._street()
        self.ground_variant = int(rng.integers(256))
        self.marking_variant = int(rng.integers(256))
        self.edge_lines = bool(rng.random() < 0.5)
        self.track_part = Part.GRAVEL if rng.random() < 0.5 else Part.ASPHALT

    # -- layout ------------------------------------------------------------------------------------

    def _street(self) -> Street:
        rng, stats = self.rng, self.stats
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
        sides = tuple(self._side(sign, left if sign < 0 else left + lanes * lane_width) for sign in (-1, 1))
        intersection = None
        if rng.random() < P_INTERSECTION:
            z0 = rng.uniform(10.0, 45.0)
            intersection = (z0, z0 + rng.uniform(8.0, 16.0))
        end = rng.uniform(45.0, 160.0) if rng.random() < P_STREET_END else None
        far = end if end is not None else rng.uniform(90.0, 260.0)
        return Street(lane_width, lanes, left, oncoming, sides, intersection, end, tram_lane, far)  # type: ignore[arg-type]

    def _side(self, sign: int, kerb: float) -> Side:
        rng, stats = self.rng, self.stats
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

    # -- drawing: background ------------------------------------------------------------------------

    def draw(self) -> Scene:
        self._sky_and_skyline()
        self._ground()
        for side in self.street.sides:
            self._side_structures(side)
        if self.street.end is not None:
            self._street_end(self.street.end)
        if self.street.intersection is not None:
            self._cross_street_facades()
        for side in self.street.sides:
            self._boundaries(side)
        self._populate()
        for _, _, draw in sorted(self.items, key=lambda item: (-item[0], item[1])):
            draw()
        if self.stats.ego_hood:
            self._ego_hood()
        if self.rng.random() < self.stats.rectification_border:
            self._rectification_border()
        return Scene(self.canvas, self.cam)

    def _add(self, z: float, draw: Callable[[], None]) -> None:
        self.items.append((z, len(self.items), draw))

    def _sky_and_skyline(self) -> None:
        cam, rng, canvas = self.cam, self.rng, self.canvas
        canvas.look[:] = pack_look(Part.SKY, 0, Facing.EMISSIVE)
        canvas.ids[:] = SKY
        # Distant skyline: blocks of buildings and tree clumps just above the horizon.
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

    def _ground(self) -> None:
        """Road, sidewalks, verges and markings: quads on the ground plane (bands of constant x are
        polygons converging to the vanishing point), drawn back to front."""
        cam, st, rng, canvas = self.cam, self.street, self.rng, self.canvas
        r0 = max(int(np.floor(cam.horizon + 0.5)) + 1, 0)
        if r0 >= cam.height:
            return
        rows = np.arange(r0, cam.height, dtype=np.float32)[:, None] + 0.5
        canvas.depth[r0:] = np.minimum(
            cam.focal * cam.elevation / (rows - np.float32(cam.horizon)), FAR_LIMIT
        )
        canvas.ids[r0:] = ROAD
        canvas.look[r0:] = pack_look(Part.ASPHALT, self.ground_variant, Facing.UP)
        near = 0.8 * cam.focal * cam.elevation / (cam.height + 1.0 - cam.horizon)  # below the last row
        far = FAR_LIMIT

        def quads(x0, x1, z0, z1, code: int, part: int, variant: int = 0) -> None:
            """Ground rectangles [x0, x1] × [z0, z1] (arrays broadcast together), one fill call."""
            x0, x1, z0, z1 = np.broadcast_arrays(
                *(np.atleast_1d(np.asarray(a, np.float64)) for a in (x0, x1, z0, z1))
            )
            z0, z1 = np.maximum(z0, near), np.minimum(z1, far)
            keep = z1 > z0
            if not keep.any():
                return
            x0, x1, z0, z1 = x0[keep], x1[keep], z0[keep], z1[keep]
            xs = np.stack([x0, x1, x1, x0], axis=1)
            zs = np.stack([z0, z0, z1, z1], axis=1)
            polys = np.stack([cam.col(xs, zs), cam.row(0.0, zs)], axis=2)
            canvas.fill(polys, code, pack_look(part, variant or self.ground_variant, Facing.UP), None)

        span = 300.0  # metres of ground drawn beyond the building line
        for side in st.sides:
            inner = 0.0
            for width, code, part in [*side.bands, (span, *side.beyond)]:
                a, b = side.kerb + side.sign * inner, side.kerb + side.sign * (inner + width)
                quads(min(a, b), max(a, b), near, far, code, part)
                if part == Part.PAVING:  # paving joints near the camera (the style sets their contrast)
                    z = np.arange(np.ceil(near / 0.6) * 0.6, 25.0, 0.6)
                    quads(min(a, b), max(a, b), z, z + 0.05, code, Part.PAVING_JOINT)
                    x = np.arange(min(a, b) + 0.6, max(a, b), 0.6)
                    quads(x, x + 0.05, near, 25.0, code, Part.PAVING_JOINT)
                if code == PARKING:  # bay lines
                    z = np.arange(rng.uniform(0.0, 5.5), 90.0, 5.5)
                    quads(min(a, b), max(a, b), z, z + 0.15, code, Part.MARKING, self.marking_variant)
                inner += width
        blocked: list[tuple[float, float]] = []  # z ranges without lane markings
        if st.intersection is not None:
            zi0, zi1 = st.intersection
            quads(-span * 2, span * 2, zi0, zi1, ROAD, Part.ASPHALT)
            blocked.append((zi0 - 4.5, zi1))
            x = np.arange(st.left + 0.3, st.right - 0.5, 1.1)  # zebra crossing
            quads(x, x + 0.55, zi0 - 4.0, zi0 - 0.8, LANE_MARKING, Part.MARKING, self.marking_variant)

        def line(x0: float, x1: float, z0, z1) -> None:
            """Marking strips [x0, x1] over the z ranges [z0, z1], cut where markings are blocked."""
            z0, z1 = np.atleast_1d(z0).astype(np.float64), np.atleast_1d(z1).astype(np.float64)
            for b0, b1 in blocked:  # split every range around the blocked one
                z0, z1 = np.concatenate([z0, np.maximum(z0, b1)]), np.concatenate([np.minimum(z1, b0), z1])
            quads(x0, x1, z0, z1, LANE_MARKING, Part.MARKING, self.marking_variant)

        tram_x = st.lane_center(st.tram_lane) if st.tram_lane is not None else None
        for lane in range(1, st.lanes):
            xb = st.left + lane * st.lane_width
            if tram_x is not None and abs(xb - tram_x) < st.lane_width:
                continue
            if st.oncoming and lane == st.oncoming:  # solid centre line
                line(xb - 0.09, xb + 0.09, near, far)
            else:
                z = np.arange(-3.0 * lane, 150.0, 9.0)
                line(xb - 0.07, xb + 0.07, z, z + 3.0)
        if self.edge_lines:
            line(st.left + 0.25, st.left + 0.37, near, far)
            line(st.right - 0.37, st.right - 0.25, near, far)
        if tram_x is not None:
            quads(tram_x - 1.25, tram_x + 1.25, near, far, RAIL_TRACK, self.track_part)
            for rail in (-0.72, 0.72):
                quads(tram_x + rail - 0.04, tram_x + rail + 0.04, near, far, RAIL_TRACK, Part.RAIL_METAL)

    def _facade_shadow(self, side: Side, x: float, z0: float, z1: float, height: float) -> None:
        """Cast shadow of a facade on the ground, when the sun is on its side of the street."""
        sx, sz, length = self.sun
        if length <= 0 or sx * side.sign <= 0.05:
            return
        reach = min(length * height, 80.0)
        poly = np.array(
            [[x, z0], [x, z1], [x - sx * reach, z1 - sz * reach], [x - sx * reach, z0 - sz * reach]]
        )
        poly[:, 1] = np.maximum(poly[:, 1], NEAR_PLANE)
        self.canvas.shade([_ground(self.cam)(poly)], SHADOW_LEVELS)

    def _facade_parts(
        self, u: np.ndarray, v: np.ndarray, building: dict, height: np.ndarray | float
    ) -> np.ndarray:
        """Facade material from facade coordinates (u along the wall, v up, metres; broadcastable
        arrays): window grid above the ground floor, shop windows, a ledge under the roof."""
        pitch, floor = building["pitch"], building["floor"]
        wu = _frac((u - building["offset"]) / pitch) < building["window_w"]
        wv = (_frac(v / floor) < building["window_h"]) & (v > 3.6) & (v < height - 1.0)
        parts = np.where(wu & wv, Part.WINDOW, Part.FACADE)
        if building["shop"]:
            shop = (v > 0.4) & (v < 3.0) & (_frac(u / 6.0) < 0.75)
            parts = np.where(shop, Part.SHOPFRONT, parts)
        return np.where((v > height - 0.6) & (v < height), Part.LEDGE, parts)

    def _building(self) -> dict:
        rng = self.rng
        lo, hi = self.stats.building_height
        return {
            "height": lo + (hi - lo) * rng.random() ** 1.5,  # mostly low, a few tall
            "pitch": rng.uniform(2.4, 4.2),
            "floor": rng.uniform(2.8, 3.6),
            "window_w": rng.uniform(0.35, 0.65),
            "window_h": rng.uniform(0.4, 0.65),
            "offset": rng.uniform(0.0, 4.0),
            "shop": rng.random() < 0.4,
            "variant": int(rng.integers(256)),
        }

    def _plane_x(
        self,
        x: float,
        z0: float,
        z1: float,
        top: Callable[[np.ndarray], np.ndarray],
        bottom: float,
        code: int,
        parts: Callable[[np.ndarray, np.ndarray], np.ndarray] | int,
        variant: int,
        facing: int,
    ) -> None:
        """Vertical plane x = const between depths z0 and z1, from height `bottom` to top(z)."""
        cam = self.cam
        z0 = max(z0, NEAR_PLANE)
        if z1 <= z0:
            return
        c_near, c_far = float(cam.col(x, z0)), float(cam.col(x, z1))
        c0, c1 = sorted((c_near, c_far))
        c0, c1 = max(int(np.floor(c0)), 0), min(int(np.ceil(c1)) + 1, cam.width)
        if c1 <= c0:
            return
        cols = np.arange(c0, c1) + 0.5
        with np.errstate(divide="ignore"):
            z = cam.focal * x / (cols - cam.cx)
        valid = (z >= z0) & (z <= z1)
        if not valid.any():
            return
        z = np.where(valid, z, z1)
        height = top(z)
        row_top, row_bottom = cam.row(height, z), cam.row(bottom, z)
        r0 = max(int(np.floor(row_top[valid].min())), 0)
        r1 = min(int(np.ceil(row_bottom[valid].max())) + 1, cam.height)
        if r1 <= r0:
            return
        rows = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
        mask = (rows >= row_top) & (rows < row_bottom) & valid
        if not mask.any():
            return
        z = z.astype(np.float32)
        v = np.float32(cam.elevation) - (rows - np.float32(cam.horizon)) * (z / np.float32(cam.focal))
        part = parts(z[None, :], v) if callable(parts) else parts
        look = part | (variant << 8) | (facing << 16)
        self.canvas.write_region(slice(r0, r1), slice(c0, c1), mask, code, look, z.astype(np.float32))

    def _plane_z(
        self,
        z: float,
        x0: float,
        x1: float,
        height: float,
        code: int,
        parts: Callable[[np.ndarray, np.ndarray], np.ndarray] | int,
        variant: int,
    ) -> None:
        """Frontal rectangle at depth z, x0 < x1, from the ground to `height` metres."""
        cam = self.cam
        if z < NEAR_PLANE:
            return
        c0, c1 = max(int(np.floor(cam.col(x0, z))), 0), min(int(np.ceil(cam.col(x1, z))) + 1, cam.width)
        r0 = max(int(np.floor(cam.row(height, z))), 0)
        r1 = min(int(np.ceil(cam.row(0.0, z))) + 1, cam.height)
        if c1 <= c0 or r1 <= r0:
            return
        cols = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5
        rows = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
        u = (cols - np.float32(cam.cx)) * np.float32(z / cam.focal)
        v = np.float32(cam.elevation) - (rows - np.float32(cam.horizon)) * np.float32(z / cam.focal)
        mask = (u >= x0) & (u < x1) & (v >= 0.0) & (v < height)
        part = parts(u, v) if callable(parts) else parts
        look = part | (variant << 8) | (Facing.FRONT << 16)
        self.canvas.write_region(slice(r0, r1), slice(c0, c1), mask, code, look, np.float32(z))

    def _side_structures(self, side: Side) -> None:
        """Buildings (or a park's tree line) along one side, far to near, with trees in the gaps."""
        rng, st = self.rng, self.street
        x_face = side.sign * side.facade
        facing = Facing.NEG_X if side.sign > 0 else Facing.POS_X
        if side.kind == "park":
            x = side.sign * (side.facade + rng.uniform(5.0, 25.0))
            base = rng.uniform(4.0, 11.0)
            knots = base + rng.uniform(-3.0, 3.0, size=64)

            def canopy(z: np.ndarray) -> np.ndarray:
                return np.interp(z, np.linspace(0.0, FAR_LIMIT, 64), knots) + 0.6 * np.sin(z * 1.7)

            self._plane_x(
                x, NEAR_PLANE, st.far, canopy, 0.0, VEGETATION, Part.FOLIAGE, int(rng.integers(256)), facing
            )
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
            segments.append(("building", z, z1, self._building()))
            z = z1
        for kind, z0, z1, building in reversed(segments):  # far to near
            if kind == "gap":
                if rng.random() < 0.6:
                    zt = rng.uniform(z0, z1)
                    self._tree(side.sign * (side.facade + rng.uniform(1.0, 4.0)), zt, now=True)
                continue
            setback = rng.uniform(0.0, 2.0) if rng.random() < 0.3 else 0.0
            xb = x_face + side.sign * setback
            height = building["height"]

            def parts(u, v, b=building, h=height, start=z0):
                return self._facade_parts(u - start, v, b, h)

            self._facade_shadow(side, xb, max(z0, NEAR_PLANE), z1, height)
            if z0 > NEAR_PLANE:  # the near end wall faces the camera
                self._plane_z(
                    z0, *sorted((xb, xb + side.sign * 12.0)), height, BUILDING, parts, building["variant"]
                )
            self._plane_x(
                xb,
                z0,
                z1,
                lambda z, h=height: np.full_like(z, h),
                0.0,
                BUILDING,
                parts,
                building["variant"],
                facing,
            )

    def _street_end(self, z: float) -> None:
        x = -200.0
        while x < 200.0:
            width = self.rng.uniform(10.0, 40.0)
            building = self._building()

            def parts(u, v, b=building, h=building["height"]):
                return self._facade_parts(u, v, b, h)

            self._plane_z(z, x, x + width, building["height"], BUILDING, parts, building["variant"])
            x += width

    def _cross_street_facades(self) -> None:
        st = self.street
        z = st.intersection[1] + self.rng.uniform(2.0, 5.0)
        for side in st.sides:
            if side.kind != "buildings":
                continue
            building = self._building()

            def parts(u, v, b=building, h=building["height"]):
                return self._facade_parts(u, v, b, h)

            inner = side.sign * (side.facade + self.rng.uniform(0.0, 2.0))
            x0, x1 = sorted((inner, inner + side.sign * 150.0))
            self._plane_z(z, x0, x1, building["height"], BUILDING, parts, building["variant"])

    def _boundaries(self, side: Side) -> None:
        """Walls, fences, hedges along the building line; guard rails along the kerb."""
        rng, st = self.rng, self.street
        facing = Facing.NEG_X if side.sign > 0 else Facing.POS_X
        x = side.sign * (side.facade - 0.15)
        z = rng.uniform(-5.0, 15.0)
        while z < min(st.far, 120.0):
            length = rng.uniform(5.0, 30.0)
            choice = rng.random()
            crossing = (
                st.intersection is not None
                and st.intersection[0] - 4 < z + length
                and z < st.intersection[1] + 4
            )
            if not crossing:
                variant = int(rng.integers(256))
                if choice < 0.13:
                    h = rng.uniform(0.6, 2.5)
                    self._plane_x(
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

                    self._plane_x(
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
                    self._plane_x(
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
        if self.stats.clutter and rng.random() < 0.07:
            xg = side.kerb - side.sign * 0.2
            self._plane_x(
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

    # -- objects ---------------------------------------------------------------------------------------

    def _draw_shape(
        self,
        shape: Shape,
        project: Callable[[np.ndarray], np.ndarray],
        code: int,
        depth: float,
        variant: int,
        shadow: int,
        instance: int = 0,
        facing: int | None = None,
    ) -> None:
        """Project every part of a model at once, then fill the parts in order."""
        sizes = [len(poly) for poly, _, _ in shape]
        pixels = _fixed(project(np.concatenate([poly for poly, _, _ in shape])))
        for points, (_, part, face) in zip(np.split(pixels, np.cumsum(sizes)[:-1]), shape, strict=True):
            look = pack_look(part, variant, face if facing is None else facing, shadow)
            self.canvas.fill_fixed([points], code, look, depth, instance)

    def _contact_shadow(self, x0: float, x1: float, z0: float, z1: float, height: float) -> None:
        """Shadow of an object's footprint, stretched away from the sun."""
        sx, sz, length = self.sun
        reach = max(length * height, 0.0)
        corners = np.array([[x0, z0], [x1, z0], [x1, z1], [x0, z1]], dtype=np.float64)
        pts = np.concatenate([corners, corners - [sx * reach, sz * reach]])
        pts[:, 1] = np.maximum(pts[:, 1], NEAR_PLANE)
        hull = cv2.convexHull(pts.astype(np.float32))[:, 0, :].astype(np.float64)
        self.canvas.shade([_ground(self.cam)(hull)], SHADOW_LEVELS)

    def _shadow_under(self, x: float, z: float) -> int:
        return self.canvas.shadow_at(float(self.cam.col(x, z)), float(self.cam.row(0.0, z)))

    def _tree(self, x: float, z: float, now: bool = False) -> None:
        rng, cam = self.rng, self.cam
        trunk_h, radius = rng.uniform(2.0, 3.8), rng.uniform(1.2, 3.0)
        canopy = _blob(rng, 0.0, trunk_h + radius * 0.75, radius, radius * rng.uniform(0.85, 1.3))
        trunk = np.array(
            [[-0.16, 0.0], [0.16, 0.0], [0.1, trunk_h + radius * 0.5], [-0.1, trunk_h + radius * 0.5]]
        )
        variant, bark = int(rng.integers(256)), int(rng.integers(256))

        def draw() -> None:
            if z < NEAR_PLANE or cam.scale(z) * radius < 0.5:
                return
            sx, sz, length = self.sun
            if length > 0:
                reach = length * (trunk_h + radius * 0.75)
                blob = _circle(x - sx * reach, z - sz * reach, radius * 0.9, radius * 0.9)
                blob[:, 1] = np.maximum(blob[:, 1], NEAR_PLANE)
                self.canvas.shade([_ground(cam)(blob)], SHADOW_LEVELS)
            shadow = self._shadow_under(x, z)
            project = _billboard(cam, x, z)
            self.canvas.fill(
                [project(trunk)], VEGETATION, pack_look(Part.BARK, bark, Facing.FRONT, shadow), z
            )
            self.canvas.fill(
                [project(canopy)], VEGETATION, pack_look(Part.FOLIAGE, variant, Facing.FRONT, shadow), z
            )

        if now:
            draw()
        else:
            self._add(z, draw)

    def _pole(self, x: float, z: float, kind: str) -> None:
        """A pole with a street lamp, traffic signs or a traffic light; `x` is on the sidewalk."""
        rng, cam = self.rng, self.cam
        toward_road = -np.sign(x) if x != 0 else 1.0
        radius = rng.uniform(0.06, 0.11)
        height = {
            "lamp": rng.uniform(6.0, 9.0),
            "sign": rng.uniform(2.3, 3.4),
            "light": rng.uniform(3.2, 5.5),
        }[kind]
        pole: Shape = [(_rect(-radius, 0.0, radius, height), Part.POLE_METAL, Facing.FRONT)]
        attachments: list[tuple[Shape, int]] = []
        if kind == "lamp":
            arm = rng.uniform(1.0, 3.0) * toward_road
            pole.append((_bar((0.0, height - 0.2), (arm, height + 0.2), 0.1), Part.POLE_METAL, Facing.FRONT))
            pole.append(
                (
                    _rect(
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
                attachments.append((self._sign_shape(rng.uniform(2.2, 3.0)), SIGN))
        elif kind == "sign":
            top = height
            for _ in range(int(rng.integers(1, 3))):
                attachments.append((self._sign_shape(top), SIGN))
                top -= rng.uniform(0.65, 0.9)
        else:
            overhead = rng.random() < 0.35
            box_w, box_h = rng.uniform(0.3, 0.42), rng.uniform(0.85, 1.1)
            if overhead:
                arm = rng.uniform(2.5, 6.0) * toward_road
                pole.append(
                    (_bar((0.0, height - 0.1), (arm, height - 0.1), 0.14), Part.POLE_METAL, Facing.FRONT)
                )
                u, v = arm * 0.85, height - 0.2 - box_h
            else:
                u, v = 0.0, height
            attachments.append((self._light_shape(u, v, box_w, box_h), LIGHT))
            if rng.random() < 0.5:  # a second light lower down
                attachments.append((self._light_shape(0.0, rng.uniform(2.2, 2.6), box_w, box_h), LIGHT))

        variants = rng.integers(0, 256, size=len(attachments) + 1).tolist()

        def draw() -> None:
            if z < NEAR_PLANE:
                return
            shadow = self._shadow_under(x, z)
            project = _billboard(cam, x, z)
            self._draw_shape(pole, project, POLE, z, variants[0], shadow)
            for (shape, code), variant in zip(attachments, variants[1:], strict=True):
                self._draw_shape(shape, project, code, z - 0.05, variant, shadow)

        self._add(z, draw)

    def _sign_shape(self, top: float) -> Shape:
        rng = self.rng
        size = rng.uniform(0.55, 0.8)
        cv = top - size / 2
        kind = rng.choice(["circle", "triangle", "square", "rect"], p=[0.4, 0.2, 0.2, 0.2])
        if kind == "circle":
            outer, inner = _circle(0.0, cv, size / 2, n=16), _circle(0.0, cv, size * 0.33, n=16)
        elif kind == "triangle":
            tri = np.array([[-0.5, 0.43], [0.5, 0.43], [0.0, -0.43]]) * size  # "give way", apex down
            outer, inner = tri + np.array([0.0, cv]), tri * 0.6 + np.array([0.0, cv + 0.03 * size])
        elif kind == "square":
            diamond = np.array([[0.0, 0.5], [0.5, 0.0], [0.0, -0.5], [-0.5, 0.0]]) * size
            outer, inner = diamond + np.array([0.0, cv]), diamond * 0.7 + np.array([0.0, cv])
        else:
            outer = _rect(-size * 0.7, cv - size * 0.4, size * 0.7, cv + size * 0.4)
            inner = _rect(-size * 0.6, cv - size * 0.3, size * 0.6, cv + size * 0.3)
        back = rng.random() < 0.2  # seen from behind: plain metal
        if back:
            return [(outer, Part.SIGN_BACK, Facing.FRONT)]
        return [(outer, Part.SIGN_FACE, Facing.FRONT), (inner, Part.SIGN_INNER, Facing.FRONT)]

    def _light_shape(self, u: float, v: float, w: float, h: float) -> Shape:
        lit = int(self.rng.integers(3))
        shape: Shape = [(_rect(u - w / 2, v, u + w / 2, v + h), Part.LIGHT_HOUSING, Facing.FRONT)]
        for k in range(3):
            cy = v + h * (0.8 - 0.3 * k)
            part = Part.LAMP_ON if k == lit else Part.LAMP_OFF
            shape.append((_circle(u, cy, w * 0.3, n=10), part, Facing.EMISSIVE if k == lit else Facing.FRONT))
        return shape

    def _person(self, x: float, z: float, view: str | None = None) -> None:
        rng, cam = self.rng, self.cam
        height = rng.uniform(1.5, 1.95) if rng.random() > 0.08 else rng.uniform(1.0, 1.4)
        view = view or ("side" if rng.random() < 0.5 else "front")
        shape = person_sprite(rng, height, view)
        mirror = rng.random() < 0.5
        variant = int(rng.integers(256))

        def draw() -> None:
            if z < NEAR_PLANE:
                return
            self._contact_shadow(x - 0.25, x + 0.25, z - 0.15, z + 0.15, height)
            instance = self.canvas.new_instance()
            self._draw_shape(
                shape, _billboard(cam, x, z, mirror), PERSON, z, variant, self._shadow_under(x, z), instance
            )

        self._add(z, draw)

    def _two_wheeler(self, x: float, z: float, kind: int, ridden: bool, view: str) -> None:
        rng, cam = self.rng, self.cam
        bike = two_wheeler_sprite(kind, view)
        rider = rider_sprite(kind, view) if ridden else []
        mirror = rng.random() < 0.5
        variant, rider_variant = int(rng.integers(256)), int(rng.integers(256))

        def draw() -> None:
            if z < NEAR_PLANE:
                return
            self._contact_shadow(x - 0.4, x + 0.4, z - 0.2, z + 0.2, 1.2)
            shadow = self._shadow_under(x, z)
            project = _billboard(cam, x, z, mirror)
            self._draw_shape(bike, project, kind, z, variant, shadow, self.canvas.new_instance())
            if rider:
                self._draw_shape(
                    rider, project, RIDER, z - 0.1, rider_variant, shadow, self.canvas.new_instance()
                )

        self._add(z, draw)

    def _vehicle(self, code: int, x: float, z: float, front: bool, side_view: bool = False) -> None:
        """A vehicle whose near end is at depth z (box view), or a side view crossing the street."""
        rng, cam = self.rng, self.cam
        model = vehicle_model(rng, code)
        variant = int(rng.integers(256))
        mirror = rng.random() < 0.5

        def draw() -> None:
            if z < NEAR_PLANE + 0.5:
                return
            instance = self.canvas.new_instance()
            half = model.width / 2
            if side_view:
                self._contact_shadow(
                    x - model.length / 2, x + model.length / 2, z, z + model.width, model.height
                )
                shadow = self._shadow_under(x, z)
                profile = [
                    (poly - [model.length / 2, 0.0], part, f)
                    for poly, part, f in vehicle_side_sprite(code, model, Facing.FRONT)
                ]
                self._draw_shape(profile, _billboard(cam, x, z, mirror), code, z, variant, shadow, instance)
                return
            self._contact_shadow(x - half, x + half, z, z + model.length, model.height)
            shadow = self._shadow_under(x, z)
            if cam.elevation > model.height + 0.2:  # roof seen from above
                roof = _rect(
                    -half * 0.9,
                    0.25 * model.length if code == CAR else 0.0,
                    half * 0.9,
                    0.65 * model.length if code == CAR else model.length,
                )
                self.canvas.fill(
                    [_roof(cam, x, z, model.height)(roof)],
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
                        (np.column_stack([model.length - p[:, 0], p[:, 1]]), part, f)
                        for p, part, f in profile
                    ]
                self._draw_shape(
                    profile, _side_face(cam, x_side, z), code, z + model.length / 2, variant, shadow, instance
                )
            self._draw_shape(
                vehicle_end_sprite(code, model, front),
                _billboard(cam, x, z),
                code,
                z,
                variant,
                shadow,
                instance,
            )

        self._add(z, draw)

    def _bridge(self, z: float) -> None:
        cam = self.cam
        deck = (rng_h := self.rng.uniform(4.8, 6.5), rng_h + self.rng.uniform(1.0, 2.0))
        variant = int(self.rng.integers(256))
        pillars = [s.sign * (s.walk[0] + 0.6) for s in self.street.sides]

        def draw() -> None:
            project = _billboard(cam, 0.0, z)
            shape: Shape = [(_rect(-300.0, deck[0], 300.0, deck[1]), Part.CONCRETE, Facing.FRONT)]
            shape += [(_rect(p - 0.5, 0.0, p + 0.5, deck[0]), Part.CONCRETE, Facing.FRONT) for p in pillars]
            self._draw_shape(shape, project, BRIDGE, z, variant, 0)

        self._add(z + 0.5, draw)

    def _clutter(self, x: float, z: float, code: int) -> None:
        """Bins, benches, bollards, advertising columns (static); carts, strollers (dynamic)."""
        rng, cam = self.rng, self.cam
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
            self._draw_shape(shape, _billboard(cam, x, z), code, z, variant, self._shadow_under(x, z))

        self._add(z, draw)

    def _populate(self) -> None:
        """Objects of every class, at depths and lateral positions that respect the layout."""
        rng, st, stats = self.rng, self.street, self.stats
        z_max = min(st.far, 90.0)
        for side in st.sides:
            s = side.sign
            walk_in, walk_out = side.walk
            # Tree rows on the sidewalk or verge.
            if rng.random() < stats.trees:
                x_tree = s * (
                    np.mean(side.verge)
                    if side.verge
                    else (walk_out - 0.7 if rng.random() < 0.5 else walk_in + 0.8)
                )
                z = rng.uniform(2.0, 10.0)
                spacing = rng.uniform(7.0, 16.0)
                while z < z_max:
                    if rng.random() < 0.85:
                        self._tree(x_tree + rng.uniform(-0.3, 0.3), z)
                    z += spacing * rng.uniform(0.8, 1.2)
            # Street lamps along the kerb.
            if rng.random() < 0.7:
                z = rng.uniform(3.0, 25.0)
                spacing = rng.uniform(18.0, 40.0)
                while z < z_max:
                    self._pole(s * (walk_in + 0.35), z, "lamp")
                    z += spacing
            for _ in range(int(rng.poisson(1.6))):
                self._pole(s * (walk_in + rng.uniform(0.3, 0.6)), rng.uniform(4.0, 60.0), "sign")
            if rng.random() < 0.3:  # plain poles (bollard posts, masts)
                self._pole(
                    s * (walk_in + 0.35), rng.uniform(4.0, 60.0), "sign" if rng.random() < 0.5 else "lamp"
                )
            # Pedestrians, in small groups.
            count = rng.poisson(stats.pedestrians * z_max / 50.0)
            z_group = rng.uniform(3.0, z_max)
            for k in range(count):
                if k == 0 or rng.random() < 0.5:
                    z_group = rng.uniform(2.5, z_max)
                x = s * rng.uniform(walk_in + 0.4, max(walk_out - 0.4, walk_in + 0.5))
                self._person(x, z_group + rng.uniform(-1.5, 1.5))
            # Parked cars on the parking strip (or along the kerb).
            if side.parking or rng.random() < 0.15:
                x_park = side.kerb + s * (1.15 if side.parking else -1.1)
                z = rng.uniform(3.0, 12.0)
                while z < z_max * 0.8:
                    if rng.random() < 0.6:
                        self._vehicle(CAR, x_park + rng.uniform(-0.15, 0.15), z, front=rng.random() < 0.5)
                    z += rng.uniform(5.2, 9.0)
            if rng.random() < P_PARKED_BICYCLES:
                z = rng.uniform(3.0, 30.0)
                for k in range(int(rng.integers(1, 5))):
                    self._two_wheeler(s * (walk_out - 0.6), z + 0.7 * k, BICYCLE, False, "side")
            if stats.clutter:
                for _ in range(int(rng.poisson(1.2))):
                    code = STATIC if rng.random() < 0.8 else DYNAMIC
                    self._clutter(
                        s * rng.uniform(walk_in + 0.3, walk_out - 0.2), rng.uniform(3.0, 50.0), code
                    )
        if rng.random() < P_PARKED_MOTORCYCLE:
            side = st.sides[int(rng.integers(2))]
            self._two_wheeler(
                side.sign * (side.walk[0] + 0.8), rng.uniform(3.0, 25.0), MOTORCYCLE, False, "side"
            )
        # Traffic in the lanes.
        for lane in range(st.lanes):
            x = st.lane_center(lane)
            front = lane < st.oncoming
            if lane == st.tram_lane:
                self._vehicle(TRAIN, x, rng.uniform(8.0, 45.0), front=front)
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
                    self._vehicle(code, x + rng.uniform(-0.3, 0.3), z, front=front)
                    z += 12.0 if code != CAR else 5.0
                z += rng.uniform(4.0, 22.0)
        if rng.random() < P_BUS_AT_STOP:  # a bus at a stop on the kerb lane
            lane = st.lanes - 1
            self._vehicle(BUS, st.lane_center(lane) + 0.3, rng.uniform(8.0, 40.0), front=False)
        if stats.trucks and rng.random() < P_TRUCK_LOADING:
            lane = int(rng.integers(st.lanes))
            self._vehicle(TRUCK, st.lane_center(lane), rng.uniform(8.0, 50.0), front=lane < st.oncoming)
        # Riders.
        for kind, p in ((BICYCLE, P_BICYCLE_RIDER), (MOTORCYCLE, P_MOTORCYCLE_RIDER)):
            if rng.random() < p:
                if st.intersection is not None and rng.random() < 0.5:
                    z = rng.uniform(*st.intersection)
                    self._two_wheeler(rng.uniform(st.left - 4, st.right + 4), z, kind, True, "side")
                else:
                    lane_x = (
                        st.right - 0.9 if kind == BICYCLE else st.lane_center(int(rng.integers(st.lanes)))
                    )
                    self._two_wheeler(lane_x, rng.uniform(4.0, 35.0), kind, True, "rear")
        # Intersection: crossing vehicles, pedestrians on the zebra, traffic lights at the corners.
        if st.intersection is not None:
            zi0, zi1 = st.intersection
            for _ in range(int(rng.integers(0, 3))):
                code = BUS if rng.random() < 0.1 else CAR
                self._vehicle(
                    code, rng.uniform(-25.0, 25.0), rng.uniform(zi0 + 1, zi1 - 2.5), False, side_view=True
                )
            if stats.trains and rng.random() < P_TRAM * 0.5:
                self._vehicle(
                    TRAIN, rng.uniform(-20.0, 20.0), rng.uniform(zi0 + 1, zi1 - 3), False, side_view=True
                )
            for _ in range(int(rng.poisson(1.5))):
                self._person(rng.uniform(st.left, st.right), rng.uniform(zi0 - 3.5, zi0 - 1.2), view="side")
            for side in st.sides:
                if rng.random() < 0.8:
                    self._pole(side.sign * (side.walk[0] + 0.4), zi0 - rng.uniform(0.5, 3.0), "light")
                if rng.random() < 0.4:
                    self._pole(side.sign * (side.walk[0] + 0.4), zi1 + rng.uniform(0.5, 3.0), "light")
        elif rng.random() < 0.2:
            side = st.sides[int(rng.integers(2))]
            self._pole(side.sign * (side.walk[0] + 0.4), rng.uniform(10.0, 40.0), "light")
        if stats.clutter and rng.random() < P_BRIDGE:
            self._bridge(rng.uniform(20.0, 70.0))

    # -- camera-specific regions -------------------------------------------------------------------------

    def _ego_hood(self) -> None:
        """The recording car's bonnet: a flat arc over the bottom rows (Cityscapes id 1)."""
        cam, rng = self.cam, self.rng
        depth = rng.uniform(0.06, 0.1) * cam.height
        cols = np.arange(cam.width) + 0.5
        t = (cols - cam.width / 2) / (cam.width * 0.62)
        top = cam.height - depth * np.clip(1.0 - t**2, 0.0, 1.0) ** 0.5
        r0 = int(np.floor(top.min()))
        rows = np.arange(r0, cam.height)[:, None] + 0.5
        mask = rows >= top
        look = pack_look(Part.HOOD, 0, Facing.UP)
        self.canvas.write_region(
            slice(r0, cam.height), slice(0, cam.width), mask, EGO_VEHICLE, look, np.float32(1.0)
        )

    def _rectification_border(self) -> None:
        """Thin ragged strips on image edges, left by the stereo rectification (Cityscapes id 2)."""
        cam, rng = self.cam, self.rng
        look = pack_look(Part.BORDER, 0, Facing.EMISSIVE)
        rows = np.arange(cam.height)[:, None] + 0.5
        for edge in ("left", "right", "bottom"):
            if rng.random() < 0.5:
                continue
            width = rng.uniform(1.0, 0.012 * cam.width + 1.5)
            if edge == "bottom":
                cols = np.arange(cam.width)[None, :] + 0.5
                mask = rows > cam.height - width * (0.6 + 0.4 * np.sin(cols * 0.02))
            else:
                along = width * (0.6 + 0.4 * np.sin(rows * 0.05 + rng.uniform(0, 6)))
                cols = np.arange(cam.width)[None, :] + 0.5
                mask = cols < along if edge == "left" else cols > cam.width - along
            self.canvas.write_region(
                slice(0, cam.height), slice(0, cam.width), mask, RECT_BORDER, look, np.float32(1.0)
            )


def draw_scene(
    rng: np.random.Generator, domain: str, height: int, width: int, sun: tuple[float, float, float]
) -> Scene:
    """Sample and draw one street scene of `domain`'s viewpoint and content statistics."""
    return SceneBuilder(rng, domain, height, width, sun).draw()
