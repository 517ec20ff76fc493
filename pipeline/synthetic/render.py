"""Per-domain rendering of a drawn scene: palette, lighting, texture, sky, haze and camera effects.

The three looks model the shifts that separate the real datasets:
- gta5: a game renderer — saturated palette, warm sun with hard cast shadows, smooth textures, crisp
  aliased edges, no sensor noise, per-image time of day.
- synthia: a low-poly renderer — flat pastel colours, almost no texture, clear pale sky.
- cityscapes: a car-mounted camera — dark, desaturated greenish-grey white balance, overcast diffuse
  light, fine natural textures, vignetting, a slight blur, sensor noise and JPEG softness, a tint per city;
  and the class-conditional part of a photograph's look (`pipeline.synthetic.appearance`): materials that
  drift from image to image each their own way, stains and repairs, light that varies over the image, sky
  through tree crowns, thin structures that blend into their background.
Colours are in `palettes`, textures in `textures`, the per-image lighting and camera settings in `looks`.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.synthetic.appearance import (
    canopy_gaps,
    illumination_field,
    patches,
    soften_thin_structures,
    value_noise,
)
from pipeline.synthetic.canvas import Scene
from pipeline.synthetic.codes import SHADOW_LEVELS, Facing, Part
from pipeline.synthetic.looks import Look
from pipeline.synthetic.palettes import palette_table
from pipeline.synthetic.textures import GROUP_OF_PART, TEXTURES

# Parts drawn a few pixels wide (poles, fences, light housings, bicycle frames): what
# `appearance.soften_thin_structures` blends with the background in the camera domain.
THIN_PARTS = (
    Part.POLE_METAL,
    Part.STREETLAMP,
    Part.FENCE_MESH,
    Part.FENCE_POST,
    Part.GUARDRAIL,
    Part.SIGN_BACK,
    Part.LIGHT_HOUSING,
    Part.LAMP_OFF,
    Part.BIKE_FRAME,
    Part.SPOKES,
)
REFERENCE_WIDTH = 512.0
# Sizes of the camera effects' patterns, in pixels at a 512-pixel image width.
LIGHT_CELL = 160.0  # light and dark regions of the illumination field
SHADE_CELL = 90.0  # shadows of trees and buildings outside the frame
CANOPY_GAP_CELL = 3.0  # clumps of sky seen through a crown
THIN_SIGMA = 1.5  # the neighbourhood a thin structure blends with
PENUMBRA, CRISP_EDGE = 0.1, 0.02  # border widths of `appearance.patches` (noise units)
_THIN_LUT = np.isin(np.arange(256), THIN_PARTS)


def _lighting(look: Look) -> tuple[np.ndarray, np.ndarray]:
    """Light factor of each Facing when lit and when in shadow (ambient only), lit ground = 1; vertical
    faces get `look.vertical_ambient` of the ambient light."""
    (sx, sz, _), elevation = look.sun, look.sun_elevation
    sun = np.array([sx * np.cos(elevation), np.sin(elevation), sz * np.cos(elevation)])
    normals = {
        Facing.UP: (0, 1, 0),
        Facing.FRONT: (0, 0, -1),
        Facing.POS_X: (1, 0, 0),
        Facing.NEG_X: (-1, 0, 0),
    }
    norm = look.ambient + look.diffuse * np.sin(elevation)
    lit = np.ones(16, dtype=np.float32)
    shaded = np.ones(16, dtype=np.float32)
    for face, normal in normals.items():
        ambient = look.ambient * (1.0 if face == Facing.UP else look.vertical_ambient)
        lit[face] = (ambient + look.diffuse * max(float(np.dot(normal, sun)), 0.0)) / norm
        shaded[face] = ambient / norm
    return lit, shaded


def _sky(
    rng: np.random.Generator, look: Look, rows: int, width: int, horizon: float, scale: float
) -> np.ndarray:
    """Sky colours [rows, width, 3] for the top `rows` rows: gradient to the horizon plus clouds."""
    t = np.clip(np.arange(rows, dtype=np.float32) / max(horizon, 1.0), 0.0, 1.0)[:, None, None] ** 0.7
    top, bottom = np.asarray(look.sky_top, np.float32), np.asarray(look.sky_horizon, np.float32)
    gradient = (top * (1.0 - t) + bottom * t) * np.float32(look.sky_gain)  # [rows, 1, 3]
    if look.cloud_cover <= 0:
        return np.broadcast_to(gradient, (rows, width, 3))
    clouds = (
        value_noise(rng, rows, width, 90.0 * scale) * 0.6 + value_noise(rng, rows, width, 30.0 * scale) * 0.4
    )
    cover = np.clip((clouds + 1.0) / 2.0 - (1.0 - look.cloud_cover) + 0.15, 0.0, 1.0) * min(
        look.cloud_cover * 2, 1.0
    )
    cloud = (
        np.asarray(look.cloud, np.float32) * (np.float32(look.sky_gain) * (0.92 + 0.08 * clouds))[..., None]
    )
    return gradient + (cloud - gradient) * cover[..., None]


def render(scene: Scene, look: Look, rng: np.random.Generator, domain: str) -> np.ndarray:
    """Scene fields → uint8 RGB [H, W, 3] in `domain`'s look.

    Scene radiance = palette colour (with the image's material drift) · light (with its shadows and, for
    the camera, its variation over the image) · (1 + texture), hazed towards the horizon colour; the
    camera then applies exposure and vignetting, white balance, saturation and contrast, the blending of
    thin structures, blur, noise and JPEG. The per-pixel factors are combined as [H, W] maps and applied
    to the colours once.
    """
    canvas, cam = scene.canvas, scene.camera
    width = canvas.width
    scale = width / REFERENCE_WIDTH
    part = canvas.look & 0xFF
    base = _material_colours(rng, canvas.look, domain)
    factor = _light(rng, look, canvas.look, scale)
    factor *= _texture(rng, part, domain, scale)

    # Sky colours (only on the rows that hold sky); sky pixels get no light, texture or haze.
    sky = _sky_pixels(rng, look, part, cam.horizon, scale)
    sky_rows = np.flatnonzero(sky.any(axis=1))
    if sky_rows.size:
        band = slice(0, int(sky_rows[-1]) + 1)
        colours = _sky(rng, look, band.stop, width, cam.horizon, scale)
        np.copyto(base[band, :, :3], colours, where=sky[band][..., None])
        factor[sky] = 1.0
    rgb = _expose(base, factor, _transmittance(canvas.depth, look, sky), look)
    return _camera_effects(rgb, rng, look, part, scale)


def _material_colours(rng: np.random.Generator, packed_look: np.ndarray, domain: str) -> np.ndarray:
    """[H, W, 4] float32 colour of every pixel's (part, variant) in this image's palette (4th unused)."""
    height, width = packed_look.shape
    part = packed_look & 0xFF
    # Gather 16-byte RGBA rows as single complex128 elements (much faster than a row gather).
    table = palette_table(rng, domain).view(np.complex128).ravel()
    index = (part << 8) | ((packed_look >> 8) & 0xFF)
    return np.take(table, index).view(np.float32).reshape(height, width, 4)


def _light(rng: np.random.Generator, look: Look, packed_look: np.ndarray, scale: float) -> np.ndarray:
    """[H, W] float32 light factor (lit ground = 1).

    Ambient + Lambert term per face; a cast shadow removes the direct part. Shadows of things outside
    the frame (camera, sunny days) join the scene's own; the camera's light also varies slowly over the
    image (sky view, breaks in the clouds).
    """
    height, width = packed_look.shape
    facing = (packed_look >> 16) & 0xF
    lit, shaded = _lighting(look)
    factor = np.take(lit, facing)
    shadow = None
    if look.ambient < 1.0 and (packed_look >> 20).any():
        shadow = ((packed_look >> 20) & 0xF).astype(np.float32) * np.float32(1.0 / SHADOW_LEVELS)
        if look.shadow_blur > 0:
            shadow = cv2.GaussianBlur(shadow, (0, 0), look.shadow_blur * scale)
    if look.shade_coverage > 0:
        outside = patches(rng, height, width, SHADE_CELL * scale, look.shade_coverage, PENUMBRA)
        shadow = outside if shadow is None else np.maximum(shadow, outside)
    if shadow is not None:
        factor -= shadow * (factor - np.take(shaded, facing))
    if look.light_variation > 0:
        factor *= illumination_field(rng, height, width, LIGHT_CELL * scale, look.light_variation)
    return factor


def _texture(rng: np.random.Generator, part: np.ndarray, domain: str, scale: float) -> np.ndarray:
    """[H, W] float32 1 + texture: fine grain, medium and coarse value noise weighted per material group,
    and the domain's stains."""
    height, width = part.shape
    spec = TEXTURES[domain]
    amplitude = np.zeros((3, 256), dtype=np.float32)
    for p, group in GROUP_OF_PART.items():
        amplitude[:, p] = spec.amplitude.get(group, (0.0, 0.0, 0.0))
    texture = np.take(amplitude[1], part) * value_noise(rng, height, width, spec.medium_cell * scale)
    texture += np.take(amplitude[2], part) * value_noise(rng, height, width, spec.coarse_cell * scale)
    if amplitude[0].any():
        texture += np.take(amplitude[0], part) * (rng.random((height, width), dtype=np.float32) * 2.0 - 1.0)
    if spec.blotch:
        weight = np.zeros(256, dtype=np.float32)
        for p, group in GROUP_OF_PART.items():
            weight[p] = spec.blotch.get(group, 0.0)
        stains = patches(rng, height, width, spec.blotch_cell * scale, spec.blotch_coverage, CRISP_EDGE)
        texture += np.take(weight, part) * stains
    texture += 1.0
    return texture


def _sky_pixels(
    rng: np.random.Generator, look: Look, part: np.ndarray, horizon: float, scale: float
) -> np.ndarray:
    """[H, W] bool: the sky, and for the camera also the sky seen through tree crowns above the horizon
    (labelled vegetation, as annotators do)."""
    sky = part == Part.SKY
    if look.canopy_gaps > 0:
        crowns = (part == Part.FOLIAGE) & (np.arange(part.shape[0])[:, None] < horizon)
        sky |= canopy_gaps(rng, crowns, CANOPY_GAP_CELL * scale, look.canopy_gaps)
    return sky


def _transmittance(depth: np.ndarray, look: Look, sky: np.ndarray) -> np.ndarray:
    """Aerial perspective: transmittance exp(−depth / distance), floored at 1 − strength; 1 on the sky."""
    transmit = np.exp(depth * np.float32(-1.0 / look.haze_distance))
    transmit *= np.float32(look.haze_strength)
    transmit += np.float32(1.0 - look.haze_strength)
    transmit[sky] = 1.0
    return transmit


def _expose(base: np.ndarray, factor: np.ndarray, transmit: np.ndarray, look: Look) -> np.ndarray:
    """[H, W, 3] float32 rgb = (base · factor · transmit + horizon · (1 − transmit)) · gain · white
    balance, the camera gain being exposure and vignetting. Scales `factor` in place."""
    height, width = factor.shape
    gain = np.full((height, width), look.exposure, dtype=np.float32)
    if look.vignetting > 0:
        yy = (np.arange(height, dtype=np.float32)[:, None] - height / 2) / (height / 2)
        xx = (np.arange(width, dtype=np.float32)[None, :] - width / 2) / (width / 2)
        gain *= 1.0 - look.vignetting * (xx**2 * 0.6 + yy**2 * 0.4)
    tint = np.asarray(look.tint, np.float32)
    factor *= transmit
    factor *= gain
    airlight = (1.0 - transmit) * gain
    rgb = base[..., :3] * factor[..., None]
    rgb += airlight[..., None] * np.asarray(look.sky_horizon, np.float32)
    rgb *= tint
    return rgb


def _camera_effects(
    rgb: np.ndarray, rng: np.random.Generator, look: Look, part: np.ndarray, scale: float
) -> np.ndarray:
    """Saturation and contrast about mid-grey, thin structures blended, lens blur, sensor noise, 8-bit
    quantisation and a JPEG round trip: float rgb [H, W, 3] → uint8 RGB."""
    height, width = part.shape
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]
    c, sat = np.float32(look.contrast), np.float32(look.saturation)
    rgb *= c * sat
    rgb += grey * (c * (1.0 - sat)) + np.float32(0.45 * (1.0 - look.contrast))
    if look.thin_softening > 0:  # before the lens blur: sub-pixel coverage of thin structures
        rgb = soften_thin_structures(rgb, np.take(_THIN_LUT, part), THIN_SIGMA * scale, look.thin_softening)
    if look.blur > 0:
        rgb = cv2.GaussianBlur(rgb, (0, 0), look.blur * scale)
    if look.noise > 0:  # shot noise grows with the signal; luminance grain plus coarser chroma blotches
        sigma = np.float32(look.noise) * (0.5 + np.sqrt(np.clip(grey, 0.0, 1.0)))
        noise = rng.standard_normal((height, width, 1), dtype=np.float32)
        chroma = rng.standard_normal((max(height // 3, 1), max(width // 3, 1), 3), dtype=np.float32)
        noise = noise + np.float32(0.4) * cv2.resize(chroma, (width, height), interpolation=cv2.INTER_LINEAR)
        rgb += sigma * noise
    rgb *= 255.0
    rgb += 0.5
    image = np.clip(rgb, 0.0, 255.0, out=rgb).astype(np.uint8)
    if look.jpeg_quality:
        ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality])
        if ok:
            image = np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
    return image
