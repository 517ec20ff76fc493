"""The canvas a scene is drawn into: per-pixel fields (ids, look, depth), not colours, written far to
near (painter's algorithm) with cv2.fillPoly in fixed point; and `Scene`, a filled canvas with its camera.

`pipeline.synthetic.render` turns the fields into a domain's pixels, so every domain shares the same
geometry and only the rendering differs. The packing of `ids` and `look` is in `pipeline.synthetic.codes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.synthetic.camera import Camera

FIXED_SHIFT = 4  # cv2.fillPoly fixed-point bits: vertices at 1/16 pixel
_FIXED = float(1 << FIXED_SHIFT)
_COORD_LIMIT = 1.0e6  # pixels; keeps far-off-screen vertices inside int32 after the fixed-point shift


def to_fixed_point(polygon: np.ndarray) -> np.ndarray:
    """Float pixel coordinates → cv2.fillPoly fixed-point vertices."""
    return np.rint(np.clip(polygon, -_COORD_LIMIT, _COORD_LIMIT) * _FIXED).astype(np.int32)


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
        points = (
            list(to_fixed_point(polygons))
            if isinstance(polygons, np.ndarray)
            else [to_fixed_point(p) for p in polygons]
        )
        self.fill_fixed(points, code, look, depth, instance)

    def fill_fixed(
        self, points: list[np.ndarray], code: int, look: int, depth: float | None, instance: int = 0
    ) -> None:
        """`fill` for vertices already in cv2.fillPoly fixed point (see `to_fixed_point`)."""
        cv2.fillPoly(self.ids, points, code | (instance << 8), cv2.LINE_8, FIXED_SHIFT)
        cv2.fillPoly(self.look, points, look, cv2.LINE_8, FIXED_SHIFT)
        if depth is not None:
            cv2.fillPoly(self.depth, points, float(depth), cv2.LINE_8, FIXED_SHIFT)

    def shade(self, polygons: list[np.ndarray], shadow: int) -> None:
        """Set the cast-shadow level inside polygons (ground shadows of buildings, vehicles, trees)."""
        allpoints = np.concatenate(polygons)
        c0, r0 = np.maximum(np.floor(allpoints.min(axis=0)), 0).astype(int)
        c1 = min(int(np.ceil(allpoints[:, 0].max())) + 1, self.width)
        r1 = min(int(np.ceil(allpoints[:, 1].max())) + 1, self.height)
        if c1 <= c0 or r1 <= r0:
            return
        mask = np.zeros((r1 - r0, c1 - c0), dtype=np.uint8)
        cv2.fillPoly(mask, [to_fixed_point(p - (c0, r0)) for p in polygons], 1, cv2.LINE_8, FIXED_SHIFT)
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


@dataclass(frozen=True)
class Scene:
    """The outcome of `pipeline.synthetic.scene.draw_scene`: the filled canvas and the camera that saw it."""

    canvas: Canvas
    camera: Camera
