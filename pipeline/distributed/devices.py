"""Where an inference Ray task runs its model: the CPU, or the GPU Ray gave it (`inference.gpus_per_task`).

The stages that run a trained model (the CBST labeller and the BatchNorm re-estimation, evaluation, the
CRST relabelling, `predict`) fan their work out as Ray tasks. Driver side, `inference_gpus` is what each
task asks Ray for, once the cluster is known to have a GPU at all; task side, `inference_device` is the
torch device of the GPU Ray assigned to the task (`ray.get_gpu_ids()`), or the CPU, and
`images_per_pass` the batch that suits it. Asking for a GPU where there is none is refused in one line
naming the key and the node, never answered with a silent fall-back to the CPU: at the paper's scale that
turns an hour of labelling into days.
"""

from __future__ import annotations

import os

import ray
import torch

from pipeline.config import Config
from pipeline.distributed.runtime import init_ray, node_address
from pipeline.errors import InputError

GPU_KEY = "inference.gpus_per_task"


class InferenceGpuError(InputError, RuntimeError):
    """inference.gpus_per_task asks for a GPU the Ray cluster, or the task's node, does not have."""


def inference_gpus(config: Config) -> float:
    """GPUs per inference task (`inference.gpus_per_task`); a positive value is refused where the Ray
    cluster has no GPU, before any task waits for one that never comes."""
    gpus = config.inference.gpus_per_task
    if gpus == 0:
        return 0.0
    init_ray()
    if ray.cluster_resources().get("GPU", 0) <= 0:
        nodes = ", ".join(sorted({node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}))
        raise InferenceGpuError(
            f"{GPU_KEY} = {gpus:g}, but the Ray cluster (node {nodes}) has no GPU; "
            f"set {GPU_KEY}: 0 to run inference on CPUs"
        )
    return gpus


def inference_device(config: Config) -> torch.device:
    """Inside an inference Ray task: the GPU Ray assigned to it, or the CPU when `inference.gpus_per_task`
    is 0. A task that asked for a GPU on a node where torch finds no CUDA device is refused."""
    gpus = config.inference.gpus_per_task
    if gpus == 0:
        return torch.device("cpu")
    assigned = ray.get_gpu_ids()
    if not assigned:
        raise InferenceGpuError(
            f"{GPU_KEY} = {gpus:g}, but Ray gave this task no GPU on node {node_address()} (called outside "
            "a Ray task that asked for one?)"
        )
    if not torch.cuda.is_available():
        raise InferenceGpuError(
            f"{GPU_KEY} = {gpus:g}: Ray gave this task GPU {assigned[0]} on node {node_address()}, but torch "
            f"{torch.__version__} finds no CUDA device there; install a CUDA build of torch on that node or "
            f"set {GPU_KEY}: 0"
        )
    return torch.device("cuda", cuda_index(str(assigned[0])))


def cuda_index(gpu: str) -> int:
    """torch's index of Ray's GPU id `gpu`. Ray sets CUDA_VISIBLE_DEVICES to the task's GPUs, so it is their
    position there (0 for a task of one GPU); with RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES it is the
    physical id itself."""
    visible = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    return visible.index(gpu) if gpu in visible else int(gpu)


def images_per_pass(config: Config, device: torch.device) -> int:
    """Images per forward pass on `device`: `inference.batch_size` on a GPU; one on the CPU, the arithmetic
    of every CPU run so far (a batch changes the last bits of the logits, and so a few labels)."""
    return config.inference.batch_size if device.type == "cuda" else 1
