"""Ray Train, driver side: running one training function per worker under TorchTrainer.

The worker side (what a training function calls) is pipeline/distributed/worker_api.py. The same code
runs on 1 CPU worker, 2 gloo workers in tests, or N GPUs (NCCL) on a cluster; `ray.init` honours
RAY_ADDRESS so `ray job submit` needs no change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2.api.exceptions import WorkerGroupError

from pipeline.config import Config
from pipeline.distributed.runtime import init_ray, joins_loopback_runtime
from pipeline.distributed.worker_api import CHECKPOINT_FILE
from pipeline.errors import InputError

log = logging.getLogger(__name__)


class NoGpuError(InputError, RuntimeError):
    """distributed.use_gpu is true but the Ray cluster has no GPU."""


class TooFewCpusError(InputError, RuntimeError):
    """A run's workers need more CPUs than the local Ray runtime has, which it never will."""


def fixed_size_runtime() -> bool:
    """Whether nothing will add nodes to this process's Ray runtime: a local runtime this driver started (no
    RAY_ADDRESS), or a shared one on this machine (`pipeline.distributed.shared_runtime`). A joined
    cluster, and the cluster a Ray worker (a Tune trial) runs in, may grow."""
    from ray._private.worker import SCRIPT_MODE

    if ray.get_runtime_context().worker.mode != SCRIPT_MODE:
        return False
    return not os.environ.get("RAY_ADDRESS") or joins_loopback_runtime()


def require_resources(config: Config) -> None:
    """Stages call it first. Raise NoGpuError when params ask for more GPUs than the Ray cluster has, and
    TooFewCpusError when the workers need more CPUs than a fixed-size runtime has (`fixed_size_runtime`):
    Ray Train would retry starting them every 60 s, for ever. A cluster that may grow (an autoscaler adds
    nodes) gets a warning instead: the run waits until the CPUs are there."""
    init_ray()
    dist = config.distributed
    resources = ray.cluster_resources()
    if dist.use_gpu and resources.get("GPU", 0) < dist.num_workers:
        raise NoGpuError(
            f"distributed.use_gpu is true with distributed.num_workers = {dist.num_workers}, but the Ray "
            f"cluster has {int(resources.get('GPU', 0))} GPU(s); "
            "set distributed.use_gpu: false to train on CPU"
        )
    needed, cpus = dist.num_workers * dist.cpus_per_worker, resources.get("CPU", 0)
    if needed <= cpus:
        return
    shortfall = (f"distributed.num_workers ({dist.num_workers}) × distributed.cpus_per_worker "
                 f"({dist.cpus_per_worker:g}) = {needed:g} CPUs, "
                 f"but the Ray cluster has {cpus:g}")  # fmt: skip
    if fixed_size_runtime():
        raise TooFewCpusError(f"{shortfall}; lower distributed.num_workers or distributed.cpus_per_worker")
    log.warning("%s: the run waits until the cluster has them (an autoscaler may add nodes)", shortfall)


class ShardTrainer(TorchTrainer):
    """TorchTrainer without Ray Data's DatasetManager actor. Ray 2.60 starts one per run (its
    DatasetsCallback) even when no Ray Dataset is passed; the workers here read their own Parquet
    shards, so it would serve nothing and costs a process start, about 1.1 CPU-seconds per run
    (measured 2026-12-01). Only that callback is left out; were it renamed, nothing is left out."""

    def _create_default_callbacks(self) -> list:
        callbacks = super()._create_default_callbacks()
        return [callback for callback in callbacks if type(callback).__name__ != "DatasetsCallback"]


def fit(
    train_function: Callable[[dict], None],
    loop_config: dict[str, Any],
    config: Config,
    run_name: str,
    report_to_tune: bool = False,
) -> ray.train.Result:
    """Run `train_function(loop_config)` on `distributed.num_workers` workers; returns Ray's Result.

    A worker failure restarts the run from its last reported checkpoint, up to
    `distributed.max_failures` times. `report_to_tune` (inside a Tune trial) forwards every
    `ray.train.report` of rank 0 to Tune, so its scheduler sees each evaluation.
    """
    require_resources(config)
    dist = config.distributed
    callbacks = None
    if report_to_tune:
        from ray.tune.integration.ray_train import TuneReportCallback  # Tune is imported by sweeps only

        callbacks = [TuneReportCallback()]
    trainer = ShardTrainer(
        train_function,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if dist.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=dist.num_workers,
            use_gpu=dist.use_gpu,
            resources_per_worker={"CPU": dist.cpus_per_worker},
            placement_strategy=dist.placement_strategy,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=config.storage_path,
            failure_config=FailureConfig(max_failures=dist.max_failures),
            callbacks=callbacks,
        ),
    )
    try:
        return trainer.fit()
    except WorkerGroupError as error:
        # A worker's own error that tells the user what to fix (a non-finite loss, a bad checkpoint)
        # is raised as itself, so the stage prints it as one line instead of Ray's wrapper.
        own = [failure for failure in error.worker_failures.values() if isinstance(failure, InputError)]
        if own:
            raise own[0] from None
        raise


def checkpoint_state(result: ray.train.Result) -> dict[str, Any]:
    """The final checkpoint's state of a finished run (driver side)."""
    if result.checkpoint is None:
        raise RuntimeError("the training run reported no checkpoint")
    with result.checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
