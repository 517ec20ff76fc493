"""One sample of the embedded synthetic benchmark: `render_scene` draws a street scene in one of three
domains and renders it in that domain's look, with its label and instance ids.

Three domains share one scene model (`pipeline.synthetic.scene`) and differ in viewpoint statistics,
content (`pipeline.synthetic.layouts`) and rendering (`pipeline.synthetic.render`):
- gta5: a game-like source, labels in Cityscapes label ids, written in the GTA5 layout;
- synthia: a second rendered source, SYNTHIA class ids (no terrain, truck or train; lane markings have
  their own id), written in the SYNTHIA-RAND-CITYSCAPES layout;
- cityscapes: a camera-like target with the unevaluated ids of real gtFine files (ego vehicle,
  rectification border, static, dynamic, ground, parking, rail track, guard rail …), written in the
  Cityscapes layout.

Every sample is a pure function of (domain, index, seed, height, width, city); `pipeline.synthetic.writers`
writes it in its dataset's layout.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from pipeline.synthetic.labels import LABEL_LUTS
from pipeline.synthetic.looks import city_look, sample_look
from pipeline.synthetic.render import render
from pipeline.synthetic.scene import draw_scene

DOMAINS = ("gta5", "synthia", "cityscapes")
_CITY_STREAM = 1  # distinguishes the per-city random stream from the per-image ones


@dataclass(frozen=True)
class SceneSample:
    image: np.ndarray  # uint8 [H, W, 3] RGB
    label: np.ndarray  # [H, W] label ids: uint8 Cityscapes ids (gta5, cityscapes), uint16 SYNTHIA ids
    instance: np.ndarray  # uint16 [H, W], 0 = no instance, 1… per object instance


def _city_code(city: str) -> int:
    """A stable code for a city name (CRC-32; Python's hash() is salted per process)."""
    return zlib.crc32(city.encode("utf-8")) if city else 0


def render_scene(domain: str, index: int, seed: int, height: int, width: int, city: str = "") -> SceneSample:
    """Render sample `index` of `domain` at height × width pixels.

    Deterministic in (domain, index, seed, height, width, city): the generator is seeded with
    [seed, domain code, index, city code]; a Cityscapes-like city also fixes a tint and weather odds
    shared by all its images.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}: expected one of {DOMAINS}")
    if height < 8 or width < 8:
        raise ValueError(f"image size {height}×{width}: expected at least 8×8 pixels")
    if index < 0 or seed < 0:
        raise ValueError(f"index={index}, seed={seed}: expected integers ≥ 0")
    domain_code, city_code = DOMAINS.index(domain), _city_code(city)
    scene_rng, style_rng = np.random.default_rng([seed, domain_code, index, city_code]).spawn(2)
    city_style = None
    if domain == "cityscapes":
        city_style = city_look(np.random.default_rng([seed, domain_code, _CITY_STREAM, city_code, 0]))
    look = sample_look(style_rng, domain, city_style)
    scene = draw_scene(scene_rng, domain, height, width, look.sun)
    image = render(scene, look, style_rng, domain)
    label = LABEL_LUTS[domain][scene.canvas.code]
    return SceneSample(image=image, label=label, instance=scene.canvas.instance)
