"""The `pseudo_label` stage: static CBST labels y_F on target train from the warmup model.

First two models are written: the normalisation-only reference (models/source_only_target_bn.pt: the
warmup model with every BatchNorm's statistics re-estimated on target train, AdaBN) and the labeller
(models/pseudo_labeller.pt), which adaptation starts from: the warmup model itself under
`adapt.bn_statistics: frozen`, or with domain-specific BatchNorm whose target statistics are the
re-estimated ones under `per_domain`.

Two passes of Ray tasks, one task per target-train shard: the first streams class-wise confidence
histograms (merged into CBST thresholds), the second recomputes the probabilities and writes the
labels, so no probability map is ever stored. Output shards mirror the target-train shards row for
row (same ids, order and row groups). Target ground truth is read only to report density and
accuracy; it never reaches the labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.atomic import atomic_path, staged_directory, write_json_atomic
from pipeline.config import Config
from pipeline.constants import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from pipeline.data.images import decode_image, decode_label, encode_label
from pipeline.data.shards import Manifest, sha256_of, shard_paths, verify_shards
from pipeline.data.transforms import image_to_tensor
from pipeline.distributed.tasks import run_tasks
from pipeline.models.batchnorm import (
    domain_batchnorm,
    reestimate_batchnorm,
    set_target_statistics,
    thawed_batchnorm,
)
from pipeline.models.configured import build_model, load_model
from pipeline.models.inference import class_probabilities
from pipeline.models.pretrained import load_segmentor_state, write_checkpoint
from pipeline.pseudo_labels.diagnostics import label_counts, summarise_label_counts
from pipeline.pseudo_labels.static import CbstHistogram, cbst_pseudo_labels

OUTPUT = "pseudo_static"
WARMUP_MODEL = "models/warmup.pt"  # written by the warmup stage
# The model the static labels come from, and adaptation starts from (see prepare_labeller).
LABELLER = "models/pseudo_labeller.pt"
# The warmup model with target BatchNorm statistics, no training: the "normalisation only" reference row.
NORMALISATION_ONLY = "models/source_only_target_bn.pt"
METRICS = "metrics/pseudo_static.json"
LABEL_SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("label", pa.binary())])


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
    tensor = image_to_tensor(image)[None]
    return class_probabilities(model, tensor, [tuple(tensor.shape[-2:])], scales, flip)[0]


def process_shard(job: ShardJob) -> dict[str, Any]:
    torch.set_num_threads(1)
    model = load_model(job.config, job.model_path)
    cbst = job.config.cbst
    rows = pq.read_table(job.shard, columns=["id", "image", "label"]).to_pylist()
    histogram = CbstHistogram(NUM_CLASSES, cbst.histogram_bins)
    labelled_rows, quality = [], torch.zeros(3 * NUM_CLASSES + 3, dtype=torch.float64)
    for row in rows:
        probabilities = image_probabilities(model, decode_image(row["image"]), cbst.scales, cbst.flip)
        if job.thresholds is None:
            confidence, prediction = probabilities.max(dim=0)
            histogram.update(confidence, prediction)
            continue
        labels = cbst_pseudo_labels(probabilities[None], torch.tensor(job.thresholds), IGNORE_INDEX)[0]
        labelled_rows.append({"id": row["id"], "label": encode_label(labels.numpy().astype(np.uint8))})
        if row["label"] is not None:  # diagnostic only
            truth = torch.from_numpy(decode_label(row["label"]).astype(np.int64))
            quality += label_counts(labels, truth, NUM_CLASSES, IGNORE_INDEX)
    if job.thresholds is None:
        return {"histogram": histogram}
    row_group = pq.ParquetFile(job.shard).metadata.row_group(0).num_rows
    with atomic_path(Path(job.output)) as temporary:
        pq.write_table(pa.Table.from_pylist(labelled_rows, schema=LABEL_SCHEMA), temporary,
                       row_group_size=row_group, compression="none")  # fmt: skip
    return {"quality": quality.tolist(), "rows": len(labelled_rows)}


def target_image_batches(config: Config, batch_size: int):
    """Target-train images [B, 3, H, W] at their preprocessed size, in shard order."""
    folder = config.shards_root / "target_train"
    batch = []
    for shard in shard_paths(folder, verify_shards(folder)):
        for row in pq.read_table(shard, columns=["image"]).to_pylist():
            batch.append(image_to_tensor(decode_image(row["image"])))
            if len(batch) == batch_size:
                yield torch.stack(batch)
                batch = []
    if batch:
        yield torch.stack(batch)


def prepare_labeller(config: Config) -> dict[str, Any]:
    """Write models/source_only_target_bn.pt and models/pseudo_labeller.pt (module doc)."""
    warmup = build_model(config, per_domain=False)
    load_segmentor_state(warmup, config.resolve(WARMUP_MODEL))
    verify_shards(config.shards_root / "target_train")  # bad inputs stop the stage before it writes
    normalisation_only = thawed_batchnorm(build_model(config, per_domain=False))
    normalisation_only.load_state_dict(warmup.state_dict(), strict=False)  # FrozenBN files have no counters
    batches = target_image_batches(config, config.evaluate.batch_size)
    images = reestimate_batchnorm(normalisation_only, batches, domain="target")
    info: dict[str, Any] = {"bn_statistics": config.adapt.bn_statistics, "bn_images": images}
    write_checkpoint(normalisation_only.state_dict(), config.resolve(NORMALISATION_ONLY))
    labeller = warmup
    if config.adapt.bn_statistics == "per_domain":
        labeller = domain_batchnorm(warmup)
        info["bn_layers"] = set_target_statistics(labeller, normalisation_only)
    write_checkpoint(labeller.state_dict(), config.resolve(LABELLER))
    return info


def label_target_train(config: Config, model_path: Path, output: str, portion: float) -> dict[str, Any]:
    """CBST labels of `model_path` on target train at `portion` → shards_root/<output>; their metrics."""
    source = config.shards_root / "target_train"
    manifest = verify_shards(source)
    shards = shard_paths(source, manifest)
    path = str(model_path)
    first = run_tasks(process_shard, [ShardJob(config, path, str(s), None, None) for s in shards],
                      "pseudo_label: confidences", unit="shard")  # fmt: skip
    histogram = first[0]["histogram"]
    for result in first[1:]:
        histogram.merge(result["histogram"])
    thresholds = histogram.thresholds(portion).tolist()
    (config.shards_root / output).parent.mkdir(parents=True, exist_ok=True)
    with staged_directory(config.shards_root / output) as staging:
        jobs = [ShardJob(config, path, str(s), thresholds, str(staging / s.name)) for s in shards]
        second = run_tasks(process_shard, jobs, "pseudo_label: labels", unit="shard")
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


def pseudo_label(config: Config) -> dict[str, Any]:
    labeller = prepare_labeller(config)
    metrics = label_target_train(config, config.resolve(LABELLER), OUTPUT, config.cbst.portion) | labeller
    config.resolve(METRICS).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config.resolve(METRICS), json.loads(json.dumps(metrics)))
    return metrics
