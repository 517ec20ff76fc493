"""Regions of a car-mounted camera's frames that are not the street: the recording car's bonnet at the
bottom (Cityscapes id 1, ego vehicle) and the ragged rectification border on the image edges (id 2)."""

from __future__ import annotations

import numpy as np

from pipeline.synthetic.builder import SceneBuilder
from pipeline.synthetic.codes import EGO_VEHICLE, RECT_BORDER, Facing, Part, pack_look


def draw_ego_hood(builder: SceneBuilder) -> None:
    """The recording car's bonnet: a flat arc over the bottom rows (Cityscapes id 1)."""
    cam, rng = builder.cam, builder.rng
    depth = rng.uniform(0.06, 0.1) * cam.height
    cols = np.arange(cam.width) + 0.5
    t = (cols - cam.width / 2) / (cam.width * 0.62)
    top = cam.height - depth * np.clip(1.0 - t**2, 0.0, 1.0) ** 0.5
    r0 = int(np.floor(top.min()))
    rows = np.arange(r0, cam.height)[:, None] + 0.5
    mask = rows >= top
    look = pack_look(Part.HOOD, 0, Facing.UP)
    builder.canvas.write_region(
        slice(r0, cam.height), slice(0, cam.width), mask, EGO_VEHICLE, look, np.float32(1.0)
    )


def draw_rectification_border(builder: SceneBuilder) -> None:
    """Thin ragged strips on image edges, left by the stereo rectification (Cityscapes id 2)."""
    cam, rng = builder.cam, builder.rng
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
        builder.canvas.write_region(
            slice(0, cam.height), slice(0, cam.width), mask, RECT_BORDER, look, np.float32(1.0)
        )
