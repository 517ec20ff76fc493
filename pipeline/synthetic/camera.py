"""The ground-plane pinhole camera of a synthetic scene and the projections every drawn object uses.

Geometry (pinhole camera at height `elevation` over a flat ground, looking along +z, no roll): a point
(x right, y up, z forward) in metres projects to column cx + f·x/z and row horizon + f·(h − y)/z. Hence a
ground contact at depth z lies on row horizon + f·h/z and an object's size in pixels is f·size/z.
Flat objects (persons, bicycles, signs) are billboards at one depth; vehicles are boxes whose near face,
inner side and (seen from above) roof are drawn; facades, walls and fences are vertical planes x = const.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Maps model or ground coordinates (metres, [N, 2]) to image (column, row) pixels [N, 2].
Projection = Callable[[np.ndarray], np.ndarray]


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


def billboard(cam: Camera, x: float, z: float, mirror: bool = False) -> Projection:
    """Sprite (u right, v up, metres) standing at (x, 0, z) → image (col, row)."""
    # A billboard is an affine map: (u, v) → (cx + f·(x ± u)/z, horizon + f·(h − v)/z).
    scale = np.array([(-1.0 if mirror else 1.0) * cam.focal / z, -cam.focal / z])
    offset = np.array([cam.cx + cam.focal * x / z, cam.horizon + cam.focal * cam.elevation / z])

    def project(points: np.ndarray) -> np.ndarray:
        return points * scale + offset

    return project


def side_face(cam: Camera, x: float, z: float) -> Projection:
    """Profile (s along +z from z, v up) on the vertical plane x = const → image."""

    def project(points: np.ndarray) -> np.ndarray:
        depth = z + points[:, 0]
        return np.stack([cam.col(x, depth), cam.row(points[:, 1], depth)], axis=1)

    return project


def ground_plane(cam: Camera) -> Projection:
    """Ground points (x, z) → image."""

    def project(points: np.ndarray) -> np.ndarray:
        return np.stack([cam.col(points[:, 0], points[:, 1]), cam.row(0.0, points[:, 1])], axis=1)

    return project


def roof_plane(cam: Camera, x: float, z: float, y: float) -> Projection:
    """Horizontal plane at height y: (u lateral offset, s along +z) → image."""

    def project(points: np.ndarray) -> np.ndarray:
        depth = z + points[:, 1]
        return np.stack([cam.col(x + points[:, 0], depth), cam.row(y, depth)], axis=1)

    return project
