"""Static CBST labels of target train from a model, as Ray tasks over its shards (the `pseudo_label`
stage, and each CRST round of `adapt`).

Two passes, one task per shard (pipeline/label_shard.py): the first streams class-wise confidence
histograms (merged into CBST thresholds), the second recomputes the probabilities and writes the labels.
Each task runs where `inference.gpus_per_task` says (pipeline/distributed/devices.py): on a CPU, one image
per forward pass, or on the GPU Ray gave it, `inference.batch_size` images per pass. Output shards mirror
the target-train shards row for row (same ids, order and row groups).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline import artifacts
from pipeline.atomic import staged_directory
from pipeline.config import Config
from pipeline.constants import CLASS_NAMES
from pipeline.data.shards import Manifest, sha256_of, shard_paths, verify_shards
from pipeline.distributed.devices import images_per_pass, inference_device, inference_gpus
from pipeline.distributed.tasks import run_tasks
from pipeline.label_shard import ShardJob, label_shard
from pipeline.pseudo_labels.diagnostics import summarise_label_counts


def label_shard_task(job: ShardJob) -> dict[str, Any]:
    """One Ray task: `label_shard` on the device Ray gave the task (the CPU when it asked for no GPU)."""
    device = inference_device(job.config)
    return label_shard(job, device, images_per_pass(job.config, device))


def label_target_train(config: Config, model_path: Path, output: str, portion: float) -> dict[str, Any]:
    """CBST labels of `model_path` on target train at `portion` → shards_root/<output>; their metrics."""
    source = config.shards_root / artifacts.TARGET_TRAIN
    manifest = verify_shards(source)
    shards = shard_paths(source, manifest)
    path, gpus = str(model_path), inference_gpus(config)
    first = run_tasks(label_shard_task, [ShardJob(config, path, str(s), None, None) for s in shards],
                      "pseudo_label: confidences", unit="shard", gpus_per_task=gpus)  # fmt: skip
    histogram = first[0]["histogram"]
    for result in first[1:]:
        histogram.merge(result["histogram"])
    thresholds = histogram.thresholds(portion).tolist()
    (config.shards_root / output).parent.mkdir(parents=True, exist_ok=True)
    with staged_directory(config.shards_root / output) as staging:
        jobs = [ShardJob(config, path, str(s), thresholds, str(staging / s.name)) for s in shards]
        second = run_tasks(label_shard_task, jobs, "pseudo_label: labels", unit="shard", gpus_per_task=gpus)
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
