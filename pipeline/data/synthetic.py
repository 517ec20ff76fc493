"""The embedded synthetic benchmark: procedural street scenes written in the real dataset layouts.

Three domains share one scene model (`pipeline.data.scenes`) and differ in viewpoint statistics, content
and rendering (`pipeline.data.styles`):
- gta5: a game-like source, labels in Cityscapes label ids, written in the GTA5 layout;
- synthia: a second rendered source, SYNTHIA class ids (no terrain, truck or train; lane markings have
  their own id), written in the SYNTHIA-RAND-CITYSCAPES layout;
- cityscapes: a camera-like target with the unevaluated ids of real gtFine files (ego vehicle,
  rectification border, static, dynamic, ground, parking, rail track, guard rail …), written in the
  Cityscapes layout.

Every sample is a pure function of (domain, index, seed, height, width, city); files are written to a
temporary name and renamed, so an interrupted run never leaves a half-written PNG.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipeline.atomic import atomic_path
from pipeline.constants import CITYSCAPES_ID_OF_TRAIN_ID, SYNTHIA_ID_OF_TRAIN_ID, SYNTHIA_IGNORED_IDS
from pipeline.data import scenes, styles

DOMAINS = ("gta5", "synthia", "cityscapes")
_CITY_STREAM = 1  # distinguishes the per-city random stream from the per-image ones


@dataclass(frozen=True)
class SceneSample:
    image: np.ndarray  # uint8 [H, W, 3] RGB
    label: np.ndarray  # [H, W] label ids: uint8 Cityscapes ids (gta5, cityscapes), uint16 SYNTHIA ids
    instance: np.ndarray  # uint16 [H, W], 0 = no instance, 1… per object instance


# ---- label tables -------------------------------------------------------------------------------------


def _cityscapes_lut() -> np.ndarray:
    """Scene code → Cityscapes label id: identity, lane markings are road (as in gtFine and GTA5)."""
    lut = np.arange(scenes.NUM_CODES, dtype=np.uint8)
    lut[scenes.LANE_MARKING] = scenes.ROAD
    return lut


def _synthia_lut() -> np.ndarray:
    """Scene code → SYNTHIA class id; codes SYNTHIA has no class for become void (0)."""
    lut = np.full(scenes.NUM_CODES, SYNTHIA_IGNORED_IDS["void"], dtype=np.uint16)
    for cityscapes_id, synthia_id in zip(CITYSCAPES_ID_OF_TRAIN_ID, SYNTHIA_ID_OF_TRAIN_ID, strict=True):
        lut[cityscapes_id] = synthia_id
    lut[scenes.LANE_MARKING] = SYNTHIA_IGNORED_IDS["lanemarking"]
    lut[scenes.PARKING] = SYNTHIA_IGNORED_IDS["parking-slot"]
    return lut


LABEL_LUTS: dict[str, np.ndarray] = {
    "gta5": _cityscapes_lut(),
    "synthia": _synthia_lut(),
    "cityscapes": _cityscapes_lut(),
}

# Colour of every Cityscapes label id 0–33 (cityscapesScripts `labels.py`): the palette of GTA5 label PNGs.
CITYSCAPES_LABEL_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230),
    (119, 11, 32),
)  # fmt: skip


# ---- rendering ----------------------------------------------------------------------------------------


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
    city_look = None
    if domain == "cityscapes":
        city_look = styles.city_look(np.random.default_rng([seed, domain_code, _CITY_STREAM, city_code, 0]))
    look = styles.sample_look(style_rng, domain, city_look)
    scene = scenes.draw_scene(scene_rng, domain, height, width, look.sun)
    image = styles.render(scene, look, style_rng, domain)
    label = LABEL_LUTS[domain][scene.canvas.code]
    return SceneSample(image=image, label=label, instance=scene.canvas.instance)


# ---- writers in the real layouts -------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _rgb_png(image: np.ndarray) -> bytes:
    return _png(Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)))


def write_gta5_sample(root: Path, index: int, sample: SceneSample) -> None:
    """root/images/{index+1:05d}.png and root/labels/{index+1:05d}.png, the label an 8-bit palette PNG
    whose indices are Cityscapes label ids and whose palette holds their colours (as the real files)."""
    name = f"{index + 1:05d}.png"
    label = Image.fromarray(np.ascontiguousarray(sample.label, dtype=np.uint8))
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(CITYSCAPES_LABEL_COLORS)] = CITYSCAPES_LABEL_COLORS
    label.putpalette(palette.ravel().tolist())  # "L" → "P", indices unchanged
    _write_bytes(Path(root) / "images" / name, _rgb_png(sample.image))
    _write_bytes(Path(root) / "labels" / name, _png(label))


def write_synthia_sample(root: Path, index: int, sample: SceneSample) -> None:
    """root/RGB/{index:07d}.png and root/GT/LABELS/{index:07d}.png: 16 bits per channel, class id in
    the first channel, instance id in the second, 0 in the third."""
    name = f"{index:07d}.png"
    label = sample.label.astype(np.uint16)
    rgb16 = np.stack([label, sample.instance.astype(np.uint16), np.zeros_like(label)], axis=-1)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb16[..., ::-1]))  # OpenCV writes BGR
    if not ok:
        raise OSError(f"{Path(root) / 'GT' / 'LABELS' / name}: OpenCV could not encode the label PNG")
    _write_bytes(Path(root) / "RGB" / name, _rgb_png(sample.image))
    _write_bytes(Path(root) / "GT" / "LABELS" / name, data.tobytes())


def cityscapes_instance_ids(label: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """gtFine instanceIds: label_id·1000 + k (k = 0, 1, … per object of that class) for classes with
    instances, label_id elsewhere."""
    out = label.astype(np.int32)
    has = (instance > 0) & np.isin(label, scenes.INSTANCE_CODES)
    if has.any():
        keys = label[has].astype(np.int64) << 16 | instance[has]
        unique, inverse = np.unique(keys, return_inverse=True)
        classes = unique >> 16
        # Rank of each object among the objects of its class.
        first = np.searchsorted(classes, classes)
        rank = np.arange(len(unique)) - first
        out[has] = (classes * 1000 + rank)[inverse]
    return out.astype(np.uint16)


def write_cityscapes_sample(root: Path, split: str, city: str, frame: int, sample: SceneSample) -> None:
    """leftImg8bit/{split}/{city}/{city}_000000_{frame:06d}_leftImg8bit.png, and in gtFine/ the
    _gtFine_labelIds.png (8-bit grey label ids) and _gtFine_instanceIds.png (16-bit grey)."""
    stem = f"{city}_000000_{frame:06d}"
    root = Path(root)
    label = np.ascontiguousarray(sample.label, dtype=np.uint8)
    instance_ids = cityscapes_instance_ids(label, sample.instance)
    labels_dir = root / "gtFine" / split / city
    _write_bytes(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _rgb_png(sample.image))
    _write_bytes(labels_dir / f"{stem}_gtFine_instanceIds.png", _png(Image.fromarray(instance_ids)))
    _write_bytes(labels_dir / f"{stem}_gtFine_labelIds.png", _png(Image.fromarray(label)))


__all__ = [
    "DOMAINS",
    "LABEL_LUTS",
    "SceneSample",
    "render_scene",
    "write_cityscapes_sample",
    "write_gta5_sample",
    "write_synthia_sample",
]
