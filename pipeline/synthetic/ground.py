"""The ground of a synthetic street: road, parking strips, verges, sidewalks with their paving joints,
the ground beyond the building line, lane markings, a zebra crossing and tram tracks.

Every band of constant x is a quad on the ground plane converging to the vanishing point; they are
filled back to front over a ground of asphalt whose depth is set row by row.
"""

from __future__ import annotations

import numpy as np

from pipeline.synthetic.builder import SceneBuilder
from pipeline.synthetic.codes import LANE_MARKING, PARKING, RAIL_TRACK, ROAD, Facing, Part, pack_look
from pipeline.synthetic.layouts import FAR_LIMIT


def draw_ground(builder: SceneBuilder) -> None:
    """Road, sidewalks, verges and markings: quads on the ground plane (bands of constant x are
    polygons converging to the vanishing point), drawn back to front."""
    cam, st, rng, canvas = builder.cam, builder.street, builder.rng, builder.canvas
    r0 = max(int(np.floor(cam.horizon + 0.5)) + 1, 0)
    if r0 >= cam.height:
        return
    rows = np.arange(r0, cam.height, dtype=np.float32)[:, None] + 0.5
    canvas.depth[r0:] = np.minimum(cam.focal * cam.elevation / (rows - np.float32(cam.horizon)), FAR_LIMIT)
    canvas.ids[r0:] = ROAD
    canvas.look[r0:] = pack_look(Part.ASPHALT, builder.ground_variant, Facing.UP)
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
        canvas.fill(polys, code, pack_look(part, variant or builder.ground_variant, Facing.UP), None)

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
                quads(min(a, b), max(a, b), z, z + 0.15, code, Part.MARKING, builder.marking_variant)
            inner += width
    blocked: list[tuple[float, float]] = []  # z ranges without lane markings
    if st.intersection is not None:
        zi0, zi1 = st.intersection
        quads(-span * 2, span * 2, zi0, zi1, ROAD, Part.ASPHALT)
        blocked.append((zi0 - 4.5, zi1))
        x = np.arange(st.left + 0.3, st.right - 0.5, 1.1)  # zebra crossing
        quads(x, x + 0.55, zi0 - 4.0, zi0 - 0.8, LANE_MARKING, Part.MARKING, builder.marking_variant)

    def line(x0: float, x1: float, z0, z1) -> None:
        """Marking strips [x0, x1] over the z ranges [z0, z1], cut where markings are blocked."""
        z0, z1 = np.atleast_1d(z0).astype(np.float64), np.atleast_1d(z1).astype(np.float64)
        for b0, b1 in blocked:  # split every range around the blocked one
            z0, z1 = np.concatenate([z0, np.maximum(z0, b1)]), np.concatenate([np.minimum(z1, b0), z1])
        quads(x0, x1, z0, z1, LANE_MARKING, Part.MARKING, builder.marking_variant)

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
    if builder.edge_lines:
        line(st.left + 0.25, st.left + 0.37, near, far)
        line(st.right - 0.37, st.right - 0.25, near, far)
    if tram_x is not None:
        quads(tram_x - 1.25, tram_x + 1.25, near, far, RAIL_TRACK, builder.track_part)
        for rail in (-0.72, 0.72):
            quads(tram_x + rail - 0.04, tram_x + rail + 0.04, near, far, RAIL_TRACK, Part.RAIL_METAL)
