"""Outline helpers of the synthetic scenes (circles, rectangles, bars, irregular blobs) and `Shape`, the
part list a sprite model is made of."""

from __future__ import annotations

import numpy as np

# A model is a list of (polygon in model coordinates, part, facing); the caller projects and fills them
# in order, so later parts (windows, wheels) sit on earlier ones (the body).
Shape = list[tuple[np.ndarray, int, int]]

_UNIT_CIRCLES = {
    n: np.stack([np.cos(t), np.sin(t)], axis=1)
    for n in (10, 14, 16)
    for t in [np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)]
}


def circle(cu: float, cv: float, ru: float, rv: float | None = None, n: int = 14) -> np.ndarray:
    """Ellipse of radii (ru, rv) around (cu, cv) as an n-gon (n in 10, 14, 16)."""
    return _UNIT_CIRCLES[n] * (ru, ru if rv is None else rv) + (cu, cv)


def rect(u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    return np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], dtype=np.float64)


def bar(a: tuple[float, float], b: tuple[float, float], width: float) -> np.ndarray:
    """Quad of `width` metres around the segment a → b (limbs, bicycle tubes)."""
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = b_ - a_
    n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-9) * width / 2
    return np.array([a_ + n, b_ + n, b_ - n, a_ - n])


def blob(rng: np.random.Generator, cu: float, cv: float, ru: float, rv: float, n: int = 20) -> np.ndarray:
    """Irregular closed outline (tree canopies, bushes)."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    r = 1.0 + 0.18 * rng.standard_normal(n).clip(-2, 2)
    return np.stack([cu + ru * r * np.cos(t), cv + rv * r * np.sin(t)], axis=1)
