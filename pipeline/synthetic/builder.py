"""The state a scene is built in and the drawing primitives every part of it shares.

`SceneBuilder` samples the camera and the street layout, holds the canvas and the queue of objects
(drawn far to near once all are placed), and offers what the modules that build one kind of thing
(`ground`, `buildings`, `vegetation`, `furniture`, `road_users`, `placement`, `camera_regions`) draw
with: sprite models, vertical planes, cast shadows. `pipeline.synthetic.scene` runs them in order.
Every random draw comes from the builder's one generator, in a fixed order, so a scene is a pure
function of its seed.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from pipeline.synthetic.camera import Camera, Projection, ground_plane
from pipeline.synthetic.canvas import Canvas, to_fixed_point
from pipeline.synthetic.codes import SHADOW_LEVELS, Facing, Part, pack_look
from pipeline.synthetic.layouts import LAYOUTS, NEAR_PLANE, sample_street
from pipeline.synthetic.polygons import Shape

# Material of a vertical plane: one part, or the part at plane coordinates (along, up), in metres.
PlaneParts = Callable[[np.ndarray, np.ndarray], np.ndarray] | int


class SceneBuilder:
    """Samples a street layout and holds what drawing it needs; `sun` = (unit horizontal direction
    (x, z), shadow length per metre of height) comes from the style (hard long shadows in the game,
    none when overcast)."""

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
        self.street = sample_street(rng, stats)
        self.ground_variant = int(rng.integers(256))
        self.marking_variant = int(rng.integers(256))
        self.edge_lines = bool(rng.random() < 0.5)
        self.track_part = Part.GRAVEL if rng.random() < 0.5 else Part.ASPHALT

    # -- the queue of objects ----------------------------------------------------------------------

    def add(self, z: float, draw: Callable[[], None]) -> None:
        """Queue an object at depth z; `draw_queued` draws the queue far to near (ties: placement order)."""
        self.items.append((z, len(self.items), draw))

    def draw_queued(self) -> None:
        for _, _, draw in sorted(self.items, key=lambda item: (-item[0], item[1])):
            draw()

    # -- sprites and shadows -------------------------------------------------------------------------

    def draw_shape(
        self,
        shape: Shape,
        project: Projection,
        code: int,
        depth: float,
        variant: int,
        shadow: int,
        instance: int = 0,
        facing: int | None = None,
    ) -> None:
        """Project every part of a model at once, then fill the parts in order."""
        sizes = [len(poly) for poly, _, _ in shape]
        pixels = to_fixed_point(project(np.concatenate([poly for poly, _, _ in shape])))
        for points, (_, part, face) in zip(np.split(pixels, np.cumsum(sizes)[:-1]), shape, strict=True):
            look = pack_look(part, variant, face if facing is None else facing, shadow)
            self.canvas.fill_fixed([points], code, look, depth, instance)

    def shade_ground(self, outline: np.ndarray) -> None:
        """Cast a full shadow on the ground inside `outline`, ground points (x, z) [N, 2]."""
        self.canvas.shade([ground_plane(self.cam)(outline)], SHADOW_LEVELS)

    def contact_shadow(self, x0: float, x1: float, z0: float, z1: float, height: float) -> None:
        """Shadow of an object's footprint, stretched away from the sun."""
        sx, sz, length = self.sun
        reach = max(length * height, 0.0)
        corners = np.array([[x0, z0], [x1, z0], [x1, z1], [x0, z1]], dtype=np.float64)
        pts = np.concatenate([corners, corners - [sx * reach, sz * reach]])
        pts[:, 1] = np.maximum(pts[:, 1], NEAR_PLANE)
        hull = cv2.convexHull(pts.astype(np.float32))[:, 0, :].astype(np.float64)
        self.shade_ground(hull)

    def shadow_under(self, x: float, z: float) -> int:
        """Cast-shadow level of the ground at (x, z), for an object standing there."""
        return self.canvas.shadow_at(float(self.cam.col(x, z)), float(self.cam.row(0.0, z)))

    # -- vertical planes (facades, walls, fences, hedges, tree lines) ----------------------------------

    def plane_x(
        self,
        x: float,
        z0: float,
        z1: float,
        top: Callable[[np.ndarray], np.ndarray],
        bottom: float,
        code: int,
        parts: PlaneParts,
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

    def plane_z(
        self,
        z: float,
        x0: float,
        x1: float,
        height: float,
        code: int,
        parts: PlaneParts,
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
