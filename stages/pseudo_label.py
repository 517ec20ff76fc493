"""DVC stage `pseudo_label`: static CBST labels y_F on target train from the warmup model.

Two models are written: the normalisation-only reference (models/source_only_target_bn.pt: the warmup
model with every BatchNorm's statistics re-estimated on target train, AdaBN) and the labeller
(models/pseudo_labeller.pt), which adaptation starts from: the warmup model itself under
`adapt.bn_statistics: frozen` or `batch` (both label with the warmup's running statistics), or with
domain-specific BatchNorm whose target statistics are the re-estimated ones under `per_domain`. The
labeller labels target train (pipeline/labelling.py); under `frozen` and `batch` the re-estimation runs
as one more Ray task beside the labelling, which does not need it. Both run where `inference.gpus_per_task`
says: with a GPU, the re-estimation is a Ray task on a GPU under `per_domain` too (on the CPU it runs in
the stage's own process there, as it always has).
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
from pipeline.distributed.devices import inference_device, inference_gpus
from pipeline.distributed.tasks import start_task
from pipeline.labelling import label_target_train
from pipeline.models.batchnorm import (
    domain_batchnorm,
    reestimate_batchnorm,
    set_target_statistics,
    thawed_batchnorm,
)
from pipeline.models.configured import build_model
from pipeline.models.pretrained import load_segmentor_state, write_checkpoint
from pipeline.models.segmentor import Segmentor


def target_image_batches(config: Config, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Target-train images [B, 3, H, W] at their preprocessed size, in shard order, on `device`."""
    folder = config.shards_root / artifacts.TARGET_TRAIN
    batch = []
    for shard in shard_paths(folder, verify_shards(folder)):
        for row in read_rows(shard, label=False):
            batch.append(image_to_tensor(row.image))
            if len(batch) == batch_size:
                yield torch.stack(batch).to(device)
                batch = []
    if batch:
        yield torch.stack(batch).to(device)


def warmup_model(config: Config) -> Segmentor:
    model = build_model(config, per_domain=False)
    load_segmentor_state(model, config.resolve(artifacts.WARMUP_MODEL))
    return model


def normalisation_only_model(config: Config, warmup: Segmentor | None = None,
                             device: torch.device | None = None) -> tuple[Segmentor, int]:  # fmt: skip
    """The warmup model (`warmup`, else read from its file) with every BatchNorm's statistics re-estimated
    on target train (AdaBN) on `device` (default: the CPU), and the number of images they were estimated
    on; `warmup` is left as it is. Batches of `evaluate.bn_reestimation_batch_size` images on any device:
    the batch size changes the statistics."""
    device = device or torch.device("cpu")
    model = thawed_batchnorm(build_model(config, per_domain=False))
    # A model saved with frozen BatchNorm (model.frozen_bn) has no num_batches_tracked counters: not strict.
    source = warmup if warmup is not None else warmup_model(config)
    model.load_state_dict(source.state_dict(), strict=False)
    model = model.to(device)
    batches = target_image_batches(config, config.evaluate.bn_reestimation_batch_size, device)
    return model, reestimate_batchnorm(model, batches, domain="target")


def write_normalisation_only_model(config: Config, warmup: Segmentor | None = None) -> tuple[Segmentor, int]:
    """`normalisation_only_model`, written to models/source_only_target_bn.pt."""
    model, images = normalisation_only_model(config, warmup)
    write_checkpoint(model.state_dict(), config.resolve(artifacts.NORMALISATION_ONLY_MODEL))
    return model, images


def normalisation_only_state(config: Config) -> tuple[dict[str, torch.Tensor], int]:
    """`normalisation_only_model` as a Ray task returns it, on the device Ray gave the task: its weights, on
    the CPU (one thread, as every task)."""
    torch.set_num_threads(1)
    model, images = normalisation_only_model(config, device=inference_device(config))
    return model.cpu().state_dict(), images  # the state dict itself, _metadata and all: the file's bytes


def label(config: Config) -> dict[str, Any]:
    return label_target_train(
        config, config.resolve(artifacts.LABELLER_MODEL), artifacts.PSEUDO_STATIC, config.cbst.portion
    )


def pseudo_label(config: Config) -> dict[str, Any]:
    warmup = warmup_model(config)
    verify_shards(config.shards_root / artifacts.TARGET_TRAIN)  # bad inputs stop the stage before it writes
    info: dict[str, Any] = {"bn_statistics": config.adapt.bn_statistics}
    gpus = inference_gpus(config)
    if config.adapt.bn_statistics == "per_domain":
        # The labeller's target statistics are the re-estimated ones: estimate first, then label.
        if gpus:  # on a GPU Ray gives a task, as the other regimes' re-estimation
            state, info["bn_images"] = start_task(
                normalisation_only_state, config, gpus_per_task=gpus
            ).result()
            write_checkpoint(state, config.resolve(artifacts.NORMALISATION_ONLY_MODEL))
            normalisation_only = thawed_batchnorm(build_model(config, per_domain=False))
            normalisation_only.load_state_dict(state)
        else:
            normalisation_only, info["bn_images"] = write_normalisation_only_model(config, warmup)
        labeller = domain_batchnorm(warmup)
        info["bn_layers"] = set_target_statistics(labeller, normalisation_only)
        write_checkpoint(labeller.state_dict(), config.resolve(artifacts.LABELLER_MODEL))
        labels = label(config)
    else:
        # `frozen`, `batch`: the labeller is the warmup model itself, so one Ray task re-estimates the
        # normalisation-only model while the others label (it fills the labelling's idle core).
        pending = start_task(normalisation_only_state, config, gpus_per_task=gpus)
        try:
            write_checkpoint(warmup.state_dict(), config.resolve(artifacts.LABELLER_MODEL))
            labels = label(config)
        except BaseException:
            pending.discard()
            raise
        state, info["bn_images"] = pending.result()
        write_checkpoint(state, config.resolve(artifacts.NORMALISATION_ONLY_MODEL))
    metrics = config.resolve(artifacts.PSEUDO_LABEL_METRICS)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(metrics, json.loads(json.dumps(labels | info)))
    return labels | info


if __name__ == "__main__":
    run_stage("pseudo_label", pseudo_label)
