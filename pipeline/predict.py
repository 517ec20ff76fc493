"""`predict`: a model the DAG wrote, applied to images on disk, in the Cityscapes evaluation server's format.

Input: a folder (searched recursively), a glob, or one file; a Cityscapes split folder such as
`<root>/leftImg8bit/test` is a folder like any other. Each image goes through the target preprocessing of
the shards (resize to `preprocess.target_size` with `preprocess.image_interpolation`, the shards' image
encoding), then the model (its BatchNorm regime as the params build it), and the logits are upsampled
bilinearly to the image's own size, as `evaluate` does; `scales` / `flip` are the CBST labeller's
test-time views. Outputs mirror the input's folders under three roots, so that `labelIds/` alone can be
zipped for the server (it matches each `<city>_<seq>_<frame>` to exactly one file):

- `labelIds/<folders>/<stem>_pred_labelIds.png`: Cityscapes label ids (7 road … 33 bicycle), full size;
- `color/<folders>/<stem>_pred_color.png`: the Cityscapes palette;
- `overlay/<folders>/<stem>_pred_overlay.png` (with `overlay`): the palette blended over the image;

where `<stem>` is the image's name without its extension and without Cityscapes' `_leftImg8bit`. Also
`predictions.json` (what ran, on what, class shares) and, with `panel` > 0, `panel.png`. Every file is
written under a temporary name and renamed. Work is split into Ray tasks of `images_per_task` images,
each on a CPU or on the GPU Ray gave it, as `inference.gpus_per_task` says (pipeline/distributed/devices.py);
`batch_size` images go through the model at a time (default: 4 on a CPU, `inference.batch_size` on a GPU).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.atomic import atomic_path, write_json_atomic
from pipeline.config import Config
from pipeline.constants import CITYSCAPES_ID_OF_TRAIN_ID, CITYSCAPES_LUT, CLASS_NAMES, NUM_CLASSES, colorize
from pipeline.data.images import (
    decode_image,
    encode_image,
    read_label_ids_8bit,
    read_rgb,
    resize_image,
    resize_label,
)
from pipeline.data.readers import CITYSCAPES_IMAGE_SUFFIX, cityscapes_label_path
from pipeline.data.transforms import image_to_tensor
from pipeline.distributed.devices import inference_device, inference_gpus
from pipeline.distributed.tasks import run_tasks
from pipeline.errors import InputError
from pipeline.evaluation.panels import qualitative_panel, save_panel
from pipeline.models.configured import load_model
from pipeline.models.inference import class_probabilities
from pipeline.models.segmentor import Segmentor

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SUMMARY = "predictions.json"
PANEL = "panel.png"
PANEL_WIDTH = 512  # pixels per panel cell
OVERLAY_ALPHA = 0.5
CPU_BATCH_SIZE = 4  # images per forward pass on a CPU when --batch-size is not given
# Train id → Cityscapes label id; anything else (never predicted) → 0, "unlabeled".
LABEL_ID_OF_TRAIN_ID = np.zeros(256, dtype=np.uint8)
LABEL_ID_OF_TRAIN_ID[:NUM_CLASSES] = CITYSCAPES_ID_OF_TRAIN_ID


class NoImagesError(InputError, FileNotFoundError):
    """The input names no image."""


@dataclass(frozen=True)
class InputImage:
    path: str
    relative: str  # below the input folder (its name alone for a single file or a flat glob)


@dataclass(frozen=True)
class PredictOptions:
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    overlay: bool = False
    batch_size: int | None = None  # None: CPU_BATCH_SIZE on a CPU, inference.batch_size on a GPU
    images_per_task: int = 32
    panel: int = 0  # images in panel.png (0: none)

    def __post_init__(self) -> None:
        if not self.scales or any(scale <= 0 for scale in self.scales):
            raise InputError(f"--scales {list(self.scales)}: expected one or more positive factors")
        if (
            (self.batch_size is not None and self.batch_size < 1)
            or self.images_per_task < 1
            or self.panel < 0
        ):
            raise InputError("--batch-size and --images-per-task must be ≥ 1, --panel ≥ 0")


@dataclass(frozen=True)
class PredictTask:
    config: Config
    model_path: str
    images: tuple[InputImage, ...]
    output: str
    options: PredictOptions


def list_inputs(source: str) -> list[InputImage]:
    """The images a folder (recursively), a glob or a single file names, sorted by path."""
    path = Path(source).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        images = [InputImage(str(p), str(p.relative_to(path))) for p in found]
    elif path.is_file():
        images = [InputImage(str(path), path.name)]
    elif glob.has_magic(source):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True)
                       if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file())  # fmt: skip
        base = _glob_base(path)
        images = [InputImage(str(p), str(p.relative_to(base))) for p in found]
    else:
        raise NoImagesError(f"input {source}: no such file or folder")
    if not images:
        raise NoImagesError(f"input {source}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return images


def _glob_base(pattern: Path) -> Path:
    """The folder above a glob's first wildcard part: output folders mirror what lies below it."""
    parts = []
    for part in pattern.parts[:-1]:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def prediction_stem(relative: str) -> str:
    """`aachen/aachen_000000_000019_leftImg8bit.png` → `aachen/aachen_000000_000019` (the server's key)."""
    path = Path(relative)
    stem = (
        path.name.removesuffix(CITYSCAPES_IMAGE_SUFFIX)
        if path.name.endswith(CITYSCAPES_IMAGE_SUFFIX)
        else path.stem
    )
    return str(path.parent / stem)


def output_paths(output: Path, image: InputImage, overlay: bool) -> dict[str, Path]:
    stem = prediction_stem(image.relative)
    paths = {"label_ids": output / "labelIds" / f"{stem}_pred_labelIds.png",
             "color": output / "color" / f"{stem}_pred_color.png"}  # fmt: skip
    if overlay:
        paths["overlay"] = output / "overlay" / f"{stem}_pred_overlay.png"
    return paths


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Train ids [H, W] → Cityscapes label ids (uint8)."""
    return LABEL_ID_OF_TRAIN_ID[np.asarray(train_ids, dtype=np.uint8)]


def blend(image: np.ndarray, colours: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    return (
        (image.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha).round().astype(np.uint8)
    )


def model_input(image: np.ndarray, config: Config) -> np.ndarray:
    """The image as a target shard holds it: resized, and through the shards' JPEG encoding if they use
    it (PNG is lossless: its round trip, 57 ms per 512×1024 image here, would change nothing)."""
    pre = config.preprocess
    resized = resize_image(image, pre.target_size.as_tuple(), pre.image_interpolation)
    if pre.image_format == "png":
        return resized
    return decode_image(encode_image(resized, pre.image_format, pre.jpeg_quality))


def load_inference_model(config: Config, model_path: str | Path) -> Segmentor:
    """`load_model`, with a missing file named as what `--model` expects."""
    path = Path(model_path)
    if not path.is_file():
        raise InputError(
            f"model file {path}: not found (a file the DAG writes, e.g. models/adapt/dass_seed0.pt)"
        )
    return load_model(config, path)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        Image.fromarray(array).save(temporary, format="PNG")


def predict_task(task: PredictTask) -> list[dict[str, Any]]:
    """One Ray task: predict its images in batches, on the device Ray gave the task, and write their files;
    per image its size and the pixels of each predicted class."""
    torch.set_num_threads(1)
    device = inference_device(task.config)
    model = load_inference_model(task.config, task.model_path).to(device)
    options, output = task.options, Path(task.output)
    results = []
    for start in range(0, len(task.images), options.batch_size):
        batch = task.images[start : start + options.batch_size]
        originals = [read_rgb(Path(image.path)) for image in batch]
        tensors = torch.stack([image_to_tensor(model_input(image, task.config)) for image in originals])
        sizes = [image.shape[:2] for image in originals]
        probabilities = class_probabilities(model, tensors.to(device), sizes, options.scales, options.flip)
        for image, original, probability in zip(batch, originals, probabilities, strict=True):
            train_ids = probability.argmax(dim=0).cpu().numpy().astype(np.uint8)
            paths = output_paths(output, image, options.overlay)
            colours = colorize(train_ids)
            _save_png(to_label_ids(train_ids), paths["label_ids"])
            _save_png(colours, paths["color"])
            if options.overlay:
                _save_png(blend(original, colours), paths["overlay"])
            pixels = np.bincount(train_ids.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
            results.append({"image": image.relative, "height": int(original.shape[0]),
                            "width": int(original.shape[1]), "class_pixels": pixels.tolist()})  # fmt: skip
    return results


def cityscapes_ground_truth(image: InputImage) -> np.ndarray | None:
    """Train ids of the gtFine label beside a Cityscapes image (`leftImg8bit/<split>/<city>/…`), if any."""
    path = Path(image.path)
    if len(path.parents) < 4 or path.parents[2].name != "leftImg8bit":
        return None
    label = cityscapes_label_path(path)
    return CITYSCAPES_LUT[read_label_ids_8bit(label)] if label.is_file() else None


def write_panel(images: list[InputImage], output: Path) -> Path:
    """panel.png: image | ground truth (Cityscapes inputs that have it) | prediction, `PANEL_WIDTH` wide."""
    pictures, truths, predictions = [], [], []
    for image in images:
        original = read_rgb(Path(image.path))
        size = (max(1, round(original.shape[0] * PANEL_WIDTH / original.shape[1])), PANEL_WIDTH)
        pictures.append(resize_image(original, size, "bilinear"))
        written = read_label_ids_8bit(output_paths(output, image, overlay=False)["label_ids"])
        predictions.append(resize_label(CITYSCAPES_LUT[written], size))
        truth = cityscapes_ground_truth(image)
        truths.append(None if truth is None else resize_label(truth, size))
    with_truth = all(truth is not None for truth in truths)
    panel = qualitative_panel(pictures, truths if with_truth else None, predictions,
                              row_titles=[prediction_stem(image.relative) for image in images])  # fmt: skip
    return save_panel(panel, output / PANEL)


def predict(config: Config, model: str | Path, source: str, output: str | Path,
            options: PredictOptions | None = None) -> dict[str, Any]:  # fmt: skip
    """Predict every image `source` names into `output` (module doc); returns what predictions.json holds."""
    options = options or PredictOptions()
    if options.batch_size is None:
        gpu = inference_gpus(config) > 0
        options = dataclasses.replace(
            options, batch_size=config.inference.batch_size if gpu else CPU_BATCH_SIZE
        )
    model_path, output = Path(model).expanduser().resolve(), Path(output).expanduser().resolve()
    load_inference_model(config, model_path)  # a missing or mismatched model fails before any task starts
    images = list_inputs(source)
    log.info("predicting %d images from %s with %s into %s", len(images), source, model_path, output)
    chunks = [
        tuple(images[i : i + options.images_per_task]) for i in range(0, len(images), options.images_per_task)
    ]
    tasks = [PredictTask(config, str(model_path), chunk, str(output), options) for chunk in chunks]
    results = [r for part in run_tasks(predict_task, tasks, "predict", unit="image",
                                       weights=[len(chunk) for chunk in chunks],
                                       gpus_per_task=inference_gpus(config)) for r in part]  # fmt: skip
    pixels = np.sum([r["class_pixels"] for r in results], axis=0)
    folders = {"label_ids": "labelIds/", "color": "color/"} | (
        {"overlay": "overlay/"} if options.overlay else {}
    )
    summary = {
        "model": str(model_path), "input": source, "images": len(results),
        "options": dataclasses.asdict(options),
        "outputs": folders,
        "class_share": {name: round(100 * float(count) / max(int(pixels.sum()), 1), 3)
                        for name, count in zip(CLASS_NAMES, pixels, strict=True)},
        "per_image": [{key: r[key] for key in ("image", "height", "width")} for r in results],
    }  # fmt: skip
    if options.panel:
        summary["panel"] = str(write_panel(images[: options.panel], output).relative_to(output))
    write_json_atomic(output / SUMMARY, summary)
    return summary
