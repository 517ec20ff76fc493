"""One shard of target train through the CBST labeller, on one device (the work of each labelling task).

No Ray here: pipeline/labelling.py runs this as Ray tasks, on the device Ray gave each task, and
benchmarks/gpu_check.py runs the very same function in process on a GPU machine where Ray is not installed.
Two passes per shard (pipeline/labelling.py): the first streams the class-wise confidence histogram, the
second recomputes the probabilities and writes the labels, so no probability map is ever stored.
Target ground truth is read only to report density and accuracy; it never reaches the labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.atomic import atomic_path
from pipeline.config import Config
from pipeline.constants import IGNORE_INDEX, NUM_CLASSES
from pipeline.data.images import encode_label
from pipeline.data.shards import LABEL_ROW_SCHEMA, read_rows
from pipeline.data.transforms import image_batches, image_to_tensor
from pipeline.models.configured import load_model
from pipeline.models.inference import class_probabilities, model_device
from pipeline.pseudo_labels.diagnostics import label_counts
from pipeline.pseudo_labels.static import CbstHistogram, cbst_pseudo_labels


@dataclass(frozen=True)
class ShardJob:
    config: Config
    model_path: str
    shard: str
    thresholds: list[float] | None  # None: first pass (histograms); else second pass (labels)
    output: str | None


def batch_probabilities(
    model: torch.nn.Module, images: torch.Tensor, scales: list[float], flip: bool
) -> list[torch.Tensor]:
    """Softmax probabilities [C, H, W] of each image of `images` [B, 3, H, W] (on the model's device),
    averaged over the CBST views, at image size."""
    return class_probabilities(model, images, [tuple(images.shape[-2:])] * images.shape[0], scales, flip)


def image_probabilities(
    model: torch.nn.Module, image: np.ndarray, scales: list[float], flip: bool
) -> torch.Tensor:
    """`batch_probabilities` of one image, uint8 [H, W, 3]: [C, H, W]."""
    return batch_probabilities(model, image_to_tensor(image)[None].to(model_device(model)), scales, flip)[0]


def label_shard(job: ShardJob, device: torch.device, batch_size: int) -> dict[str, Any]:
    """The confidence histogram (first pass) or the labels (second pass) of one shard, with the model on
    `device`, `batch_size` images per forward pass. Returns CPU tensors only (the driver may have no GPU)."""
    torch.set_num_threads(1)
    model = load_model(job.config, job.model_path).to(device)
    cbst = job.config.cbst
    histogram = CbstHistogram(NUM_CLASSES, cbst.histogram_bins)
    thresholds = None if job.thresholds is None else torch.tensor(job.thresholds).to(device)
    labelled_rows, quality = [], torch.zeros(3 * NUM_CLASSES + 3, dtype=torch.float64)
    for rows, images in image_batches(read_rows(Path(job.shard)), batch_size):
        probabilities = batch_probabilities(model, images.to(device), cbst.scales, cbst.flip)
        for row, probability in zip(rows, probabilities, strict=True):
            if thresholds is None:
                confidence, prediction = probability.max(dim=0)
                histogram.update(confidence.cpu(), prediction.cpu())  # the histogram stays on the CPU
                continue
            labels = cbst_pseudo_labels(probability[None], thresholds, IGNORE_INDEX)[0].cpu()
            labelled_rows.append({"id": row.id, "label": encode_label(labels.numpy().astype(np.uint8))})
            if row.label is not None:  # diagnostic only
                truth = torch.from_numpy(row.label.astype(np.int64))
                quality += label_counts(labels, truth, NUM_CLASSES, IGNORE_INDEX)
    if thresholds is None:
        return {"histogram": histogram}
    row_group = pq.ParquetFile(job.shard).metadata.row_group(0).num_rows
    with atomic_path(Path(job.output)) as temporary:
        pq.write_table(pa.Table.from_pylist(labelled_rows, schema=LABEL_ROW_SCHEMA), temporary,
                       row_group_size=row_group, compression="none")  # fmt: skip
    return {"quality": quality.tolist(), "rows": len(labelled_rows)}
