"""Static CBST labels of target train from a model, as Ray tasks over its shards (the `pseudo_label`
stage, and each CRST round of `adapt`).

Two passes, one task per shard: the first streams class-wise confidence histograms (merged into CBST
thresholds), the second recomputes the probabilities and writes the labels, so no probability map is
ever stored. Output shards mirror the target-train shards row for row (same ids, order and row groups).
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

from pipeline import artifacts
from pipeline.atomic import atomic_path, staged_directory
from pipeline.config import Config
from pipeline.constants import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from pipeline.data.images import encode_label
from pipeline.data.shards import LABEL_ROW_SCHEMA, Manifest, read_rows, sha256_of, shard_paths, verify_shards
from pipeline.data.transforms import image_to_tensor
from pipeline.distributed.tasks import run_tasks
from pipeline.models.configured import load_model
from pipeline.models.inference import class_probabilities, model_device
from pipeline.pseudo_labels.diagnostics import label_counts, summarise_label_counts
from pipeline.pseudo_labels.static import CbstHistogram, cbst_pseudo_labels


@dataclass(frozen=True)
class ShardJob:
    config: Config
    model_path: str
    shard: str
    thresholds: list[float] | None  # None: first pass (histograms); else second pass (labels)
    output: str | None


def image_probabilities(
    model: torch.nn.Module, image: np.ndarray, scales: list[float], flip: bool
) -> torch.Tensor:
    """Softmax probabilities [C, H, W] of one image averaged over the CBST views, at image size."""
    tensor = image_to_tensor(image)[None].to(model_device(model))
    return class_probabilities(model, tensor, [tuple(tensor.shape[-2:])], scales, flip)[0]


def label_shard(job: ShardJob) -> dict[str, Any]:
    """One Ray task: the confidence histogram (first pass) or the labels (second pass) of one shard."""
    torch.set_num_threads(1)
    model = load_model(job.config, job.model_path)
    cbst = job.config.cbst
    histogram = CbstHistogram(NUM_CLASSES, cbst.histogram_bins)
    labelled_rows, quality = [], torch.zeros(3 * NUM_CLASSES + 3, dtype=torch.float64)
    for row in read_rows(Path(job.shard)):
        probabilities = image_probabilities(model, row.image, cbst.scales, cbst.flip)
        if job.thresholds is None:
            confidence, prediction = probabilities.max(dim=0)
            histogram.update(confidence, prediction)
            continue
        labels = cbst_pseudo_labels(probabilities[None], torch.tensor(job.thresholds), IGNORE_INDEX)[0]
        labelled_rows.append({"id": row.id, "label": encode_label(labels.numpy().astype(np.uint8))})
        if row.label is not None:  # diagnostic only
            truth = torch.from_numpy(row.label.astype(np.int64))
            quality += label_counts(labels, truth, NUM_CLASSES, IGNORE_INDEX)
    if job.thresholds is None:
        return {"histogram": histogram}
    row_group = pq.ParquetFile(job.shard).metadata.row_group(0).num_rows
    with atomic_path(Path(job.output)) as temporary:
        pq.write_table(pa.Table.from_pylist(labelled_rows, schema=LABEL_ROW_SCHEMA), temporary,
                       row_group_size=row_group, compression="none")  # fmt: skip
    return {"quality": quality.tolist(), "rows": len(labelled_rows)}


def label_target_train(config: Config, model_path: Path, output: str, portion: float) -> dict[str, Any]:
    """CBST labels of `model_path` on target train at `portion` → shards_root/<output>; their metrics."""
    source = config.shards_root / artifacts.TARGET_TRAIN
    manifest = verify_shards(source)
    shards = shard_paths(source, manifest)
    path = str(model_path)
    first = run_tasks(label_shard, [ShardJob(config, path, str(s), None, None) for s in shards],
                      "pseudo_label: confidences", unit="shard")  # fmt: skip
    histogram = first[0]["histogram"]
    for result in first[1:]:
        histogram.merge(result["histogram"])
    thresholds = histogram.thresholds(portion).tolist()
    (config.shards_root / output).parent.mkdir(parents=True, exist_ok=True)
    with staged_directory(config.shards_root / output) as staging:
        jobs = [ShardJob(config, path, str(s), thresholds, str(staging / s.name)) for s in shards]
        second = run_tasks(label_shard, jobs, "pseudo_label: labels", unit="shard")
        entries = [{"file": s.name, "rows": r["rows"], "sha256": sha256_of(staging / s.name)}
                   for s, r in zip(shards, second, strict=True)]  # fmt: skip
        Manifest(Path(output).name, manifest.dataset, "target", sum(e["rows"] for e in entries), entries, {},
                 manifest.image_size).write(staging)  # fmt: skip
    quality = summarise_label_counts(np.sum([r["quality"] for r in second], axis=0).tolist(), CLASS_NAMES)
    return {
        "portion": portion,
        **quality,
        "thresholds": {name: round(value, 4) for name, value in zip(CLASS_NAMES, thresholds, strict=True)},
    }
