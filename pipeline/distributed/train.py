"""Ray Train: running one training function per worker under TorchTrainer, and the worker-side API.

All Ray Train calls of the project live here. The same code runs on 1 CPU worker, 2 gloo workers in
tests, or N GPUs (NCCL) on a cluster; `ray.init` honours RAY_ADDRESS so `ray job submit` needs no
change.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2.api.exceptions import WorkerGroupError

from pipeline.config import Config
from pipeline.distributed.runtime import init_ray
from pipeline.errors import InputError

CHECKPOINT_FILE = "state.pt"


class NoGpuError(InputError, RuntimeError):
    """distributed.use_gpu is true but the Ray cluster has no GPU."""


@dataclass(frozen=True)
class WorkerContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def require_gpus(config: Config) -> None:
    """Raise NoGpuError when params ask for more GPUs than the Ray cluster has (stages call it first)."""
    init_ray()
    dist = config.distributed
    if dist.use_gpu and ray.cluster_resources().get("GPU", 0) < dist.num_workers:
        raise NoGpuError(
            f"distributed.use_gpu is true with distributed.num_workers = {dist.num_workers}, but the Ray "
            f"cluster has {int(ray.cluster_resources().get('GPU', 0))} GPU(s); "
            "set distributed.use_gpu: false to train on CPU"
        )


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
    require_gpus(config)
    dist = config.distributed
    callbacks = None
    if report_to_tune:
        from ray.tune.integration.ray_train import TuneReportCallback  # Tune is imported by sweeps only

        callbacks = [TuneReportCallback()]
    trainer = TorchTrainer(
        train_function,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if dist.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=dist.num_workers,
            use_gpu=dist.use_gpu,
            resources_per_worker={"CPU": dist.cpus_per_worker},
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


# ------------------------------------------------------------------------------- inside a worker


def worker_context(cpus_per_worker: float) -> WorkerContext:
    context = ray.train.get_context()
    torch.set_num_threads(max(1, int(cpus_per_worker)))
    return WorkerContext(context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device())


def prepare_model(model: torch.nn.Module, some_parameters_unused: bool = False) -> torch.nn.Module:
    """Move to the worker's device and wrap in DDP when there is more than one worker.

    `some_parameters_unused`: a step may leave parameters without gradient (a target stem during
    source-only training, a projection head no loss reads); DDP must then be told to look for them.
    """
    kwargs = {"find_unused_parameters": True} if some_parameters_unused else None
    return ray.train.torch.prepare_model(model, parallel_strategy_kwargs=kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def report(metrics: dict[str, float], state: dict[str, Any] | None, context: WorkerContext) -> None:
    """Report metrics from every worker; rank 0 attaches `state` (torch-saved) as the checkpoint."""
    if state is not None and context.is_main:
        folder = tempfile.mkdtemp(prefix="checkpoint-")
        try:
            torch.save(state, os.path.join(folder, CHECKPOINT_FILE))
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        ray.train.report(metrics, checkpoint=None)


def load_latest_state(map_location: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The state of the last reported checkpoint (after a worker restart), or None on a fresh start."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT_FILE, map_location=map_location, weights_only=True)


def wait_until_checkpoint_registered(step: int, timeout_s: float = 300.0) -> bool:
    """Wait until the controller has registered a checkpoint reported at `step` or later (worker side).

    Ray Train registers a reported checkpoint asynchronously, once its controller has collected every
    worker's report; it then rewrites the run's checkpoint-manager snapshot in the storage, which is
    what is polled here. False when that did not happen within `timeout_s`.
    """
    storage = ray.train.get_context().get_storage()  # DeveloperAPI: the run's filesystem and folder
    snapshot = f"{storage.experiment_fs_path}/checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with storage.storage_filesystem.open_input_stream(snapshot) as stream:
                latest = json.loads(stream.read()).get("latest_checkpoint_result") or {}
            if latest.get("metrics", {}).get("step", -1) >= step:
                return True
        except (FileNotFoundError, OSError, ValueError):  # not written yet, or being rewritten
            pass
        time.sleep(0.05)
    return False


def checkpoint_state(result: ray.train.Result) -> dict[str, Any]:
    """The final checkpoint's state of a finished run (driver side)."""
    if result.checkpoint is None:
        raise RuntimeError("the training run reported no checkpoint")
    with result.checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
