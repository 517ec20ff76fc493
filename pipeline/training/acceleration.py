"""Speed switches of training (`train.precision`, `train.channels_last`, `train.compile`) and the peak
memory of a training process: one place, used by the supervised (warmup, oracle) and the adaptation
workers.

- precision `bf16`: the forward pass runs under `torch.autocast(device.type, dtype=torch.bfloat16)`;
  the model's outputs are cast back to float32 (`full_precision`) and the losses, the prototypes and the
  prototype memory are computed outside autocast, in float32 (autocast would run the cosine matmuls of
  the contrast in bf16, 8 significant bits). Parameters, gradients and the SGD step stay float32; bf16
  has float32's exponent range, so gradients do not underflow and no GradScaler is needed (it exists for
  float16: https://pytorch.org/docs/stable/amp.html#gradient-scaling). Evaluation and pseudo labelling
  build their own model and always run in float32.
- `channels_last`: model and input batches in `torch.channels_last` (NHWC) memory format, which
  convolutions on tensor cores prefer.
- `compile`: `nn.Module.compile()` (in place, so state-dict keys and `unwrap` are unchanged) inside each
  Ray Train worker. Compilation costs start-up time (tens of seconds to minutes, again for every new
  input shape or domain); only worth it on GPU for long runs.

At the defaults (fp32, false, false) every function here returns its input untouched.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from pipeline.config import TrainConfig
from pipeline.memory import peak_rss_mb
from pipeline.models.segmentor import SegmentorOutput

BYTES_PER_MB = 2**20


def prepare_for_speed(model: nn.Module, train: TrainConfig) -> nn.Module:
    """`model` in channels_last and/or compiled, as `train` asks (in place; returns it)."""
    if train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if train.compile:
        model.compile()
    return model


def autocast(train: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The context of the forward pass: bf16 autocast on `device`, or nothing at fp32."""
    if train.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def input_batch(images: torch.Tensor, train: TrainConfig) -> torch.Tensor:
    """images [N, 3, H, W] in the memory format the model was prepared for."""
    if train.channels_last:
        return images.contiguous(memory_format=torch.channels_last)
    return images


def full_precision(output: SegmentorOutput) -> SegmentorOutput:
    """The model's outputs in float32 for the losses (the same object when they already are)."""
    if all(tensor.dtype == torch.float32 for tensor in output):
        return output
    return SegmentorOutput(*(tensor.float() for tensor in output))


def peak_memory(device: torch.device) -> dict[str, float]:
    """This process's peak resident memory (MB) and, on CUDA, the peak memory torch allocated on
    `device` (MB), under the names the trackers log."""
    figures = {"memory.peak_rss_mb": round(peak_rss_mb(), 1)}
    if device.type == "cuda":
        allocated = torch.cuda.max_memory_allocated(device)
        figures["memory.peak_cuda_allocated_mb"] = round(allocated / BYTES_PER_MB, 1)
    return figures
