"""The worker side of distributed training: what a training function calls inside each worker.

Two sessions provide it. Under Ray Train (`pipeline.distributed.train.fit`, every stage) the calls go to
`ray.train`, imported only when used. In process (`run_in_process`: one rank, its own NCCL or gloo
process group, checkpoints in a local folder) the same training function runs where Ray is not
installed, e.g. the GPU check on a machine that has torch but no Ray (benchmarks/gpu_check.py).
This module imports no Ray, MLflow or DVC at module level.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pipeline.ports import free_port

CHECKPOINT_FILE = "state.pt"


@dataclass(frozen=True)
class WorkerContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class InProcessSession:
    """A one-rank training session without Ray: checkpoints are files in `folder`, newest last."""

    device: torch.device
    folder: Path
    checkpoints: list[Path] = field(default_factory=list)
    reports: list[dict[str, float]] = field(default_factory=list)


_in_process: dict[str, InProcessSession | None] = {"session": None}


def _session() -> InProcessSession | None:
    return _in_process["session"]


def worker_context(cpus_per_worker: float) -> WorkerContext:
    torch.set_num_threads(max(1, int(cpus_per_worker)))
    session = _session()
    if session is not None:
        return WorkerContext(0, 1, session.device)
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    return WorkerContext(context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device())


def prepare_model(model: torch.nn.Module, some_parameters_unused: bool = False) -> torch.nn.Module:
    """Move to the worker's device and wrap in DDP when there is more than one worker.

    `some_parameters_unused`: a step may leave parameters without gradient (a target stem during
    source-only training, a projection head no loss reads); DDP must then be told to look for them.
    """
    session = _session()
    if session is not None:
        return model.to(session.device)  # one rank: no DDP, as Ray Train does for one worker
    import ray.train.torch

    kwargs = {"find_unused_parameters": True} if some_parameters_unused else None
    return ray.train.torch.prepare_model(model, parallel_strategy_kwargs=kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def report(metrics: dict[str, float], state: dict[str, Any] | None, context: WorkerContext) -> None:
    """Report metrics from every worker; rank 0 attaches `state` (torch-saved) as the checkpoint."""
    session = _session()
    if session is not None:
        session.reports.append(dict(metrics))
        if state is not None:
            folder = session.folder / f"checkpoint_{len(session.checkpoints):06d}"
            folder.mkdir(parents=True)
            torch.save(state, folder / CHECKPOINT_FILE)
            session.checkpoints.append(folder)
        return
    import ray.train

    if state is not None and context.is_main:
        folder = tempfile.mkdtemp(prefix="checkpoint-")
        try:
            torch.save(state, os.path.join(folder, CHECKPOINT_FILE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        ray.train.report(metrics, checkpoint=None)


def load_latest_state(map_location: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The state of the last reported checkpoint (after a worker restart), or None on a fresh start."""
    session = _session()
    if session is not None:
        if not session.checkpoints:
            return None
        return torch.load(session.checkpoints[-1] / CHECKPOINT_FILE, map_location=map_location,
                          weights_only=True)  # fmt: skip
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT_FILE, map_location=map_location, weights_only=True)


def wait_until_checkpoint_registered(step: int, timeout_s: float = 300.0) -> bool:
    """Wait until the controller has registered a checkpoint reported at `step` or later (worker side).

    Ray Train registers a reported checkpoint asynchronously, once its controller has collected every
    worker's report; it then rewrites the run's checkpoint-manager snapshot in the storage, which is
    what is polled here. False when that did not happen within `timeout_s`. In process a checkpoint is
    registered when `report` returns.
    """
    if _session() is not None:
        return True
    import ray.train

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


def run_in_process(
    train_function: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], device: torch.device,
    folder: Path,
) -> InProcessSession:  # fmt: skip
    """Run a Ray Train training function without Ray: as the only rank of a process group of its own
    (NCCL on a GPU, gloo on the CPU), so its collectives run for real; checkpoints go to `folder`."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    session = InProcessSession(device, folder)
    _in_process["session"] = session
    try:
        train_function(loop_config)
    finally:
        _in_process["session"] = None
        dist.destroy_process_group()
    return session
