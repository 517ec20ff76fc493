"""Joint image/label transforms for training (random scale, crop, flip) and tensor conversion.

All randomness comes from a `numpy.random.Generator` the caller seeds once per worker
(seed + rank, then + loader worker id), so a run is reproducible on CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from pipeline.constants import IGNORE_INDEX, IMAGE_MEAN_RGB, IMAGE_STD_RGB

Row = TypeVar("Row", bound=Any)

IMAGE_MEAN = np.array(IMAGE_MEAN_RGB, dtype=np.float32)
IMAGE_STD = np.array(IMAGE_STD_RGB, dtype=np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    crop_size: tuple[int, int]  # (height, width) of training crops
    scale_range: tuple[float, float]  # random rescale factor range; (1, 1) disables it
    flip: bool  # random horizontal flip with probability 1/2


def random_scale(image: np.ndarray, label: np.ndarray | None, factor: float):
    if factor == 1.0:
        return image, label
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    if label is not None:
        label = np.asarray(Image.fromarray(label).resize(size, Image.Resampling.NEAREST))
    return image, label


def random_crop(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int], rng: np.random.Generator):
    """Crop to `size`; images smaller than it are padded (image with the mean colour, label with 255)."""
    crop_h, crop_w = size
    height, width = image.shape[:2]
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    if pad_h or pad_w:
        mean_colour = np.round(IMAGE_MEAN * 255).astype(np.uint8)
        padded = np.empty((height + pad_h, width + pad_w, 3), dtype=np.uint8)
        padded[:] = mean_colour
        padded[:height, :width] = image
        image = padded
        if label is not None:
            label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
        height, width = image.shape[:2]
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    image = image[top : top + crop_h, left : left + crop_w]
    if label is not None:
        label = label[top : top + crop_h, left : left + crop_w]
    return image, label


def augment(image: np.ndarray, label: np.ndarray | None, config: AugmentConfig, rng: np.random.Generator):
    """Random scale → random crop → random flip, applied identically to image and label."""
    low, high = config.scale_range
    image, label = random_scale(image, label, float(rng.uniform(low, high)) if high > low else low)
    image, label = random_crop(image, label, config.crop_size, rng)
    if config.flip and rng.random() < 0.5:
        image = image[:, ::-1]
        label = None if label is None else label[:, ::-1]
    return image, label


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] → normalised float32 [3, H, W]."""
    normalised = (image.astype(np.float32) / 255.0 - IMAGE_MEAN) / IMAGE_STD
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))


def image_batches(rows: Iterable[Row], size: int) -> Iterator[tuple[list[Row], torch.Tensor]]:
    """Consecutive `rows` (each with an `.image`, uint8 [H, W, 3]) in batches of up to `size` images of one
    shape, each with its images as one tensor [B, 3, H, W] (`image_to_tensor`); a row of another shape
    starts a new batch. Order is kept, so a batch of one is exactly `image_to_tensor(image)[None]`."""
    batch: list[Row] = []
    for row in rows:
        if batch and (len(batch) == size or row.image.shape != batch[0].image.shape):
            yield batch, torch.stack([image_to_tensor(item.image) for item in batch])
            batch = []
        batch.append(row)
    if batch:
        yield batch, torch.stack([image_to_tensor(item.image) for item in batch])


def label_to_tensor(label: np.ndarray) -> torch.Tensor:
    """uint8 [H, W] train ids → int64 [H, W]."""
    return torch.from_numpy(np.array(label, dtype=np.int64))


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of image_to_tensor (for qualitative panels)."""
    array = tensor.detach().cpu().numpy().transpose(1, 2, 0) * IMAGE_STD + IMAGE_MEAN
    return np.clip(np.round(array * 255), 0, 255).astype(np.uint8)
