"""Class-conditional appearance of the camera-like target: what separates a photograph from a game frame
beyond a global colour transform (issue 13, "benchmark realism").

Re-estimating BatchNorm statistics on target images (AdaBN) undoes what a per-channel affine map of the
features undoes: a global colour cast, exposure, contrast or noise level. It cannot undo shifts that
differ from class to class, from image to image or across one image, and the real GTA5 → Cityscapes pair
is full of them (normalisation-only adaptation recovers only a small part of its gap). These functions
give the camera domain such shifts; `pipeline.synthetic.render.render` applies them where a domain's look
asks for them (the game-like sources ask for none):
- `material_gains`: each material drifts from image to image in its own direction (fresh or worn asphalt,
  spring or dry grass, clean or grimy plaster, glass reflecting sky or the facades opposite);
- `illumination_field`, `patches`: light that varies over the image (sky view, breaks in the clouds,
  soft shadows of trees and buildings outside the frame), not one global gain;
- `patches` again, crisp: tar repairs and damp on asphalt, stains on plaster, replaced slabs;
- `canopy_gaps`: sky seen through tree crowns, which annotators label vegetation;
- `soften_thin_structures`: poles, fences and light housings a few pixels wide mix with their
  background (sub-pixel coverage, lens blur; the annotation polygons are wider than the object), so they
  are thinner and lower in contrast than their labels.
Every function is pure: its randomness comes from the generator it is given, so an image stays a pure
function of (seed, domain, index).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.synthetic.codes import Part


@dataclass(frozen=True)
class Drift:
    """How far one material's colour wanders from image to image."""

    brightness: float  # σ of the log brightness gain
    hue: float  # σ of the shift along each colour-opponent axis (fraction of the channel value)


# Colour-opponent axes of the hue drift; each sums to 0, so a shift moves hue, not brightness.
WARM_COOL = np.array([1.0, 0.0, -1.0], dtype=np.float32)
GREEN_MAGENTA = np.array([-0.5, 1.0, -0.5], dtype=np.float32)
MIN_GAIN = 0.3  # a strong hue draw must not turn a channel negative


def material_gains(rng: np.random.Generator, drift: dict[tuple[Part, ...], Drift]) -> np.ndarray:
    """[len(Part), 3] float32 per-channel colour gains of one image.

    Each entry of `drift` (a tuple of parts that weather together: asphalt and parking paving) draws one
    gain exp(σ_b·n₀) · (1 + σ_h·(n₁·warm–cool + n₂·green–magenta)) with n ~ N(0, 1); parts in no entry
    keep gain 1. Draws follow the dict's order, so the result is a pure function of the generator state.
    """
    gains = np.ones((len(Part), 3), dtype=np.float32)
    for parts, spread in drift.items():
        n = rng.standard_normal(3).astype(np.float32)
        hue = 1.0 + spread.hue * (n[1] * WARM_COOL + n[2] * GREEN_MAGENTA)
        gains[list(parts)] = np.maximum(np.exp(spread.brightness * n[0]) * hue, MIN_GAIN)
    return gains


def value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise in [−1, 1]: a random grid of `cell`-pixel spacing, bicubically upsampled."""
    grid = rng.random((max(int(height / cell), 1) + 2, max(int(width / cell), 1) + 2), dtype=np.float32)
    noise = cv2.resize(grid * 2.0 - 1.0, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(noise, -1.0, 1.0, out=noise)


def illumination_field(
    rng: np.random.Generator, height: int, width: int, cell: float, amplitude: float
) -> np.ndarray:
    """[H, W] float32 light gain exp(amplitude · smooth noise of `cell` pixels): brighter and darker
    regions a few cells wide, as the sky view and breaks in the clouds make them (geometric mean 1)."""
    return np.exp(np.float32(amplitude) * value_noise(rng, height, width, cell))


def patches(
    rng: np.random.Generator, height: int, width: int, cell: float, coverage: float, softness: float
) -> np.ndarray:
    """[H, W] float32 in [0, 1]: blobs about `cell` pixels across over a `coverage` share of the image,
    1 inside, 0 outside, the border fading over `softness` noise units (0.1: a penumbra; 0.02: crisp).

    Shadows of trees and buildings outside the frame (soft), tar repairs and stains (crisp).
    """
    noise = 0.7 * value_noise(rng, height, width, cell) + 0.3 * value_noise(rng, height, width, cell / 3.0)
    threshold = np.quantile(noise[::8, ::8], 1.0 - coverage)  # a coarse sample sets the covered share
    return np.clip((noise - threshold) / np.float32(softness) + 0.5, 0.0, 1.0)


def canopy_gaps(rng: np.random.Generator, foliage: np.ndarray, cell: float, share: float) -> np.ndarray:
    """[H, W] bool: the foliage pixels where the sky shows through the crown, about a `share` of them,
    in clumps about `cell` pixels across."""
    if share <= 0 or not foliage.any():
        return np.zeros_like(foliage)
    noise = value_noise(rng, *foliage.shape, cell)
    # Uniform grid values, bicubically interpolated: the upper tail above 1 − 2·share holds about `share`.
    return foliage & (noise > np.float32(1.0 - 2.0 * share))


def soften_thin_structures(rgb: np.ndarray, thin: np.ndarray, sigma: float, strength: float) -> np.ndarray:
    """Mix the pixels of thin structures with their surroundings, in place; returns `rgb` [H, W, 3].

    The background b is the Gaussian (σ = `sigma` pixels) average of the non-thin pixels around each
    pixel; its coverage c (the share of non-thin pixels in that window) says how thin the structure is
    there. A thin pixel becomes rgb + strength · min(2c, 1) · (b − rgb): a pole one or two pixels wide
    (c ≈ ½) takes `strength` of its background's colour, the inside of a large sign board (c ≈ 0) keeps
    its own.
    """
    if not thin.any() or strength <= 0:
        return rgb
    around = np.logical_not(thin).astype(np.float32)
    coverage = cv2.GaussianBlur(around, (0, 0), sigma)
    background = cv2.GaussianBlur(rgb * around[..., None], (0, 0), sigma)
    rows, cols = np.nonzero(thin)  # a few percent of the pixels: blend only those
    share = coverage[rows, cols]
    weight = np.float32(strength) * np.minimum(2.0 * share, 1.0)
    own = rgb[rows, cols]
    mean_around = background[rows, cols] / np.maximum(share, np.float32(1e-3))[:, None]
    rgb[rows, cols] = own + weight[:, None] * (mean_around - own)
    return rgb
