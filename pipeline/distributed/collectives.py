"""torch.distributed collectives for losses over the global batch (design.md §5).

Prototypes and per-pixel means are computed over the batch of *all* workers, so the loss and its
gradients do not depend on how a batch is split. Class sums go through a differentiable all-reduce
(a detached one gives wrong gradients); counts need no gradient. Every rank must call these in the
same order, even when a class is absent from its shard. Outside a process group they are identities.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over workers; gradients flow back to every worker's contribution."""
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # torch 2.13 warns that this API will move; it is the documented one
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(tensor)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over workers of a tensor that needs no gradient: a new tensor on the input's device.

    NCCL reduces CUDA tensors only and gloo CPU tensors only, so a tensor on the other kind of device
    travels to the backend's device and back (confusion matrices live on the CPU whatever the backend).
    """
    if not is_distributed():
        return tensor.detach().clone()
    backend_device = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl"
                      else torch.device("cpu"))  # fmt: skip
    total = tensor.detach().to(backend_device, copy=True)
    dist.all_reduce(total)
    return total.to(tensor.device)


def global_mean(local_sum: torch.Tensor, local_count: torch.Tensor) -> torch.Tensor:
    """A per-pixel mean over the global batch, shaped for DDP.

    DDP averages gradients over the W workers, so each worker returns local_sum · W / global_count:
    after averaging, the gradient equals that of Σ_all / global_count in one process. (Its value on one
    worker is not the global mean; `reported_mean` gives that.)
    """
    global_count = all_reduce_sum(local_count.to(local_sum.dtype)).clamp_min(1)
    return local_sum * world_size() / global_count


def reported_mean(value: torch.Tensor) -> float:
    """The global mean of a `global_mean` result (for logging): average of the workers' values."""
    return float(all_reduce_sum(value) / world_size())
