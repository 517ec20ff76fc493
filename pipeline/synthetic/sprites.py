"""The sprite models of the synthetic scenes, shared by every domain: pedestrians, two-wheelers and their
riders, and the faces of vehicles (rear or front end, side profile), as `Shape` part lists in model
coordinates (u right or s along the vehicle, v up, metres) for the scene builder to project."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.synthetic.codes import (
    BICYCLE,
    BUS,
    CAR,
    CARAVAN,
    MOTORCYCLE,
    TRAILER,
    TRAIN,
    TRUCK,
    Facing,
    Part,
)
from pipeline.synthetic.polygons import Shape, bar, circle, rect


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
                (bar(hip, knee, 0.085 * h), Part.CLOTH_BOTTOM, Facing.FRONT),
                (bar(knee, foot, 0.07 * h), Part.CLOTH_BOTTOM, Facing.FRONT),
            ]
        shape.append(
            (
                np.array([[-0.07, 0.48], [0.07, 0.48], [0.08, 0.82], [-0.08, 0.82]]) * h,
                Part.CLOTH_TOP,
                Facing.FRONT,
            )
        )
        swing = rng.uniform(-0.18, 0.18) * h
        shape.append((bar((0.0, 0.8 * h), (swing, 0.47 * h), 0.055 * h), Part.CLOTH_TOP, Facing.FRONT))
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
    shape.append((bar((0.0, 0.8 * h), (0.0, 0.86 * h), 0.06 * h), Part.SKIN, Facing.FRONT))
    shape.append((circle(0.0, 0.91 * h, 0.058 * h, 0.068 * h), Part.SKIN, Facing.FRONT))
    shape.append((circle(0.0, 0.945 * h, 0.06 * h, 0.04 * h, n=10), Part.HAIR, Facing.FRONT))
    return shape


def _wheel(cu: float, radius: float, spokes: bool) -> Shape:
    inner = Part.SPOKES if spokes else Part.BUMPER
    return [
        (circle(cu, radius, radius), Part.TYRE, Facing.FRONT),
        (circle(cu, radius, radius * (0.8 if spokes else 0.55)), inner, Facing.FRONT),
    ]


def two_wheeler_sprite(kind: int, view: str) -> Shape:
    """Bicycle or motorcycle facing +u in side view, or seen from behind ("rear")."""
    if view == "rear":
        if kind == BICYCLE:
            return [
                (rect(-0.025, 0.0, 0.025, 0.68), Part.TYRE, Facing.FRONT),
                (rect(-0.3, 0.95, 0.3, 1.0), Part.BIKE_FRAME, Facing.FRONT),
                (rect(-0.08, 0.82, 0.08, 0.9), Part.BIKE_FRAME, Facing.FRONT),
            ]
        return [
            (rect(-0.08, 0.0, 0.08, 0.6), Part.TYRE, Facing.FRONT),
            (
                np.array([[-0.28, 0.4], [0.28, 0.4], [0.24, 0.95], [-0.24, 0.95]]),
                Part.CAR_PAINT,
                Facing.FRONT,
            ),
            (rect(-0.38, 1.0, 0.38, 1.06), Part.BIKE_FRAME, Facing.FRONT),
            (rect(-0.1, 0.62, 0.1, 0.7), Part.TAILLIGHT, Facing.FRONT),
        ]
    if kind == BICYCLE:
        r, seat, head, bb = 0.34, (-0.18, 0.88), (0.36, 0.9), (0.0, 0.3)
        shape: Shape = _wheel(-0.52, r, True) + _wheel(0.52, r, True)
        for a, b in (((-0.52, r), seat), (seat, bb), (bb, (-0.52, r)), (seat, head), (bb, head)):
            shape.append((bar(a, b, 0.045), Part.BIKE_FRAME, Facing.FRONT))
        shape += [
            (bar(head, (0.52, r), 0.045), Part.BIKE_FRAME, Facing.FRONT),
            (bar(head, (0.42, 1.02), 0.04), Part.BIKE_FRAME, Facing.FRONT),
            (rect(-0.28, 0.88, -0.08, 0.93), Part.BUMPER, Facing.FRONT),
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
        (rect(-0.25, 0.25, 0.25, 0.5), Part.BUMPER, Facing.FRONT),
        (bar((0.55, 0.85), (0.72, r), 0.06), Part.BIKE_FRAME, Facing.FRONT),
        (bar((0.5, 1.05), (0.6, 0.8), 0.05), Part.BIKE_FRAME, Facing.FRONT),
        (rect(-0.9, 0.6, -0.82, 0.68), Part.TAILLIGHT, Facing.FRONT),
    ]


def rider_sprite(kind: int, view: str) -> Shape:
    """The person on a two-wheeler (class rider), in the two-wheeler's coordinates."""
    helmet = Part.HELMET if kind == MOTORCYCLE else Part.HAIR
    if view == "rear":
        return [
            (rect(-0.2, 0.55, -0.08, 1.0), Part.CLOTH_BOTTOM, Facing.FRONT),
            (rect(0.08, 0.55, 0.2, 1.0), Part.CLOTH_BOTTOM, Facing.FRONT),
            (np.array([[-0.2, 0.95], [0.2, 0.95], [0.22, 1.5], [-0.22, 1.5]]), Part.CLOTH_TOP, Facing.FRONT),
            (circle(0.0, 1.62, 0.11, 0.13), Part.SKIN, Facing.FRONT),
            (circle(0.0, 1.67, 0.12, 0.1, n=10), helmet, Facing.FRONT),
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
        (bar(hip, knee, 0.15), Part.CLOTH_BOTTOM, Facing.FRONT),
        (bar(knee, foot, 0.12), Part.CLOTH_BOTTOM, Facing.FRONT),
        (bar(hip, shoulder, 0.3), Part.CLOTH_TOP, Facing.FRONT),
        (bar(shoulder, hand, 0.09), Part.CLOTH_TOP, Facing.FRONT),
        (circle(*head, 0.11, 0.13), Part.SKIN, Facing.FRONT),
        (circle(head[0], head[1] + 0.05, 0.12, 0.1, n=10), helmet, Facing.FRONT),
    ]


@dataclass(frozen=True)
class VehicleModel:
    """Box of one vehicle (metres) and the part its body is painted with."""

    width: float
    length: float
    height: float
    paint: int  # body part


def vehicle_model(rng: np.random.Generator, code: int) -> VehicleModel:
    """Draw the size of a vehicle of class `code`: a car (a quarter of them SUVs or vans), a truck,
    caravan or trailer, a bus, or a tram (anything else)."""
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
        (rect(-half, 0.0, -half + 0.22 * w, 0.3), Part.TYRE, Facing.FRONT),
        (rect(half - 0.22 * w, 0.0, half, 0.3), Part.TYRE, Facing.FRONT),
    ]
    if code == CAR:
        glass = (
            np.array([[-0.4, 0.62], [0.4, 0.62], [0.33, 0.94], [-0.33, 0.94]]) * [w, h]
            if front
            else np.array([[-0.36, 0.64], [0.36, 0.64], [0.31, 0.92], [-0.31, 0.92]]) * [w, h]
        )
        return [
            *wheels,
            (rect(-half, 0.12 * h, half, 0.58 * h), p, Facing.FRONT),
            (np.array([[-0.45, 0.58], [0.45, 0.58], [0.37, 1.0], [-0.37, 1.0]]) * [w, h], p, Facing.FRONT),
            (glass, Part.GLASS, Facing.FRONT),
            (rect(-half, 0.12 * h, half, 0.24 * h), Part.BUMPER, Facing.FRONT),
            (rect(-0.47 * w, 0.42 * h, -0.33 * w, 0.52 * h), lamp, Facing.FRONT),
            (rect(0.33 * w, 0.42 * h, 0.47 * w, 0.52 * h), lamp, Facing.FRONT),
            (rect(-0.12 * w, 0.27 * h, 0.12 * w, 0.36 * h), Part.PLATE, Facing.FRONT),
        ]
    if code in (TRUCK, CARAVAN, TRAILER) and not front:
        return [
            *wheels,
            (rect(-half, 0.3, half, h), Part.CARGO_BOX if code == TRUCK else p, Facing.FRONT),
            (rect(-0.003 * w, 0.35, 0.003 * w + 0.03, h - 0.1), Part.LEDGE, Facing.FRONT),
            (rect(-half, 0.25, half, 0.42), Part.BUMPER, Facing.FRONT),
            (rect(-0.48 * w, 0.45, -0.38 * w, 0.6), lamp, Facing.FRONT),
            (rect(0.38 * w, 0.45, 0.48 * w, 0.6), lamp, Facing.FRONT),
        ]
    if code == TRUCK:  # cab seen from the front
        return [
            *wheels,
            (rect(-half, 0.3, half, 0.92 * h), p, Facing.FRONT),
            (rect(-0.45 * w, 0.55 * h, 0.45 * w, 0.85 * h), Part.GLASS, Facing.FRONT),
            (rect(-half, 0.3, half, 0.5), Part.BUMPER, Facing.FRONT),
            (rect(-0.46 * w, 0.55, -0.32 * w, 0.7), lamp, Facing.FRONT),
            (rect(0.32 * w, 0.55, 0.46 * w, 0.7), lamp, Facing.FRONT),
        ]
    # bus and train ends: tall box, big window, lamps low
    top = np.array(
        [[-half, 0.25], [half, 0.25], [half, h - 0.25], [half - 0.2, h], [-half + 0.2, h], [-half, h - 0.25]]
    )
    shape: Shape = (
        [*wheels] if code == BUS else [(rect(-0.42 * w, 0.0, 0.42 * w, 0.4), Part.BUMPER, Facing.FRONT)]
    )
    shape += [
        (top, p, Facing.FRONT),
        (
            rect(-0.42 * w, 0.5 * h, 0.42 * w, 0.88 * h)
            if front
            else rect(-0.38 * w, 0.62 * h, 0.38 * w, 0.88 * h),
            Part.GLASS,
            Facing.FRONT,
        ),
        (rect(-half, 0.25, half, 0.55), Part.BUMPER, Facing.FRONT),
        (rect(-0.46 * w, 0.6, -0.34 * w, 0.8), lamp, Facing.FRONT),
        (rect(0.34 * w, 0.6, 0.46 * w, 0.8), lamp, Facing.FRONT),
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
            (rect(0.48 * L, 0.64 * h, 0.5 * L, 0.97 * h), p, facing),
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
            (rect(0.0, 0.35, L - cab - 0.2, h), Part.CARGO_BOX if code == TRUCK else p, facing),
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
    shape = [(rect(0.0, 0.3 if code == BUS else 0.5, L, h), p, facing)]
    pitch = 1.6 if code == BUS else 2.2
    for k in range(int((L - 1.0) / pitch)):
        s0 = 0.5 + k * pitch
        shape.append((rect(s0, 0.5 * h, s0 + pitch - 0.25, 0.85 * h), Part.GLASS, facing))
    if code == TRAIN:
        shape.append((rect(0.0, h - 0.15, L, h), Part.LEDGE, facing))
    return shape + wheels
