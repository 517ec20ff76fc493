"""DVC stage `pseudo_label`: static CBST labels y_F on target train from the warmup model.

First two models are written: the normalisation-only reference (models/source_only_target_bn.pt: the
warmup model with every BatchNorm's statistics re-estimated on target train, AdaBN) and the labeller
(models/pseudo_labeller.pt), which adaptation starts from: the warmup model itself under
`adapt.bn_statistics: frozen`, or with domain-specific BatchNorm whose target statistics are the
re-estimated ones under `per_domain`. Then the labeller labels target train (pipeline/labelling.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import torch

from pipeline import artifacts
from pipeline.atomic import write_json_atomic
from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.data.shards import read_rows, shard_paths, verify_shards
from pipeline.data.transforms import image_to_tensor
from pipeline.labelling import label_target_train
from pipeline.models.batchnorm import (
    domain_batchnorm,
    reestimate_batchnorm,
    set_target_statistics,
    thawed_batchnorm,
)
from pipeline.models.configured import build_model
from pipeline.models.pretrained import load_segmentor_state, write_checkpoint


def target_image_batches(config: Config, batch_size: int) -> Iterator[torch.Tensor]:
    """Target-train images [B, 3, H, W] at their preprocessed size, in shard order."""
    folder = config.shards_root / artifacts.TARGET_TRAIN
    batch = []
    for shard in shard_paths(folder, verify_shards(folder)):
        for row in read_rows(shard, label=False):
            batch.append(image_to_tensor(row.image))
            if len(batch) == batch_size:
                yield torch.stack(batch)
                batch = []
    if batch:
        yield torch.stack(batch)


def prepare_labeller(config: Config) -> dict[str, Any]:
    """Write the normalisation-only model and the labeller (module doc); what was done, for the metrics."""
    warmup = build_model(config, per_domain=False)
    load_segmentor_state(warmup, config.resolve(artifacts.WARMUP_MODEL))
    verify_shards(config.shards_root / artifacts.TARGET_TRAIN)  # bad inputs stop the stage before it writes
    normalisation_only = thawed_batchnorm(build_model(config, per_domain=False))
    normalisation_only.load_state_dict(warmup.state_dict(), strict=False)  # FrozenBN files have no counters
    batches = target_image_batches(config, config.evaluate.batch_size)
    images = reestimate_batchnorm(normalisation_only, batches, domain="target")
    info: dict[str, Any] = {"bn_statistics": config.adapt.bn_statistics, "bn_images": images}
    write_checkpoint(normalisation_only.state_dict(), config.resolve(artifacts.NORMALISATION_ONLY_MODEL))
    labeller = warmup
    if config.adapt.bn_statistics == "per_domain":
        labeller = domain_batchnorm(warmup)
        info["bn_layers"] = set_target_statistics(labeller, normalisation_only)
    write_checkpoint(labeller.state_dict(), config.resolve(artifacts.LABELLER_MODEL))
    return info


def pseudo_label(config: Config) -> dict[str, Any]:
    labeller = prepare_labeller(config)
    labels = label_target_train(
        config, config.resolve(artifacts.LABELLER_MODEL), artifacts.PSEUDO_STATIC, config.cbst.portion
    )
    metrics = config.resolve(artifacts.PSEUDO_LABEL_METRICS)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(metrics, json.loads(json.dumps(labels | labeller)))
    return labels | labeller


if __name__ == "__main__":
    run_stage("pseudo_label", pseudo_label)
