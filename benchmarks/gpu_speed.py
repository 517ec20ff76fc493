"""GPU speed: images/s of a training step in fp32, bf16, bf16 + channels_last (and, with --compile, also
compiled), each one's speed-up over fp32 and the peak memory it allocates (issue 6, GPU readiness).

Runs on CUDA. Without a CUDA device it prints one line saying it skipped and exits 0; `--device cpu`
runs the same comparison on the CPU (a check that it works, and what the switches do on that CPU: the
figures do not predict GPU speed-ups).

A step is what the supervised (warmup) worker runs, through the same functions of
`pipeline.training.acceleration` that `train.precision`, `train.channels_last` and `train.compile` switch:
the model prepared by `prepare_for_speed`, the batch by `input_batch`, the forward under `autocast`, the
cross-entropy on `full_precision` logits (float32), the loop's sum and finiteness check, backward and the
SGD step of `build_optimizer` (parameters float32). Every variant starts from the same weights and
steps on the same batch (random images, random labels with some pixels ignored).

- model: params.yaml's (`build_model`), or with `--paper-model` DeepLabV2 ResNet-101 as the paper preset
  trains it (output stride 8, frozen BatchNorm, Caffe-style blocks; random init).
- shape: `--crop H W` (default on CUDA: the paper preset's 512×1024 crop; on CPU: params.yaml's
  train.crop), `--batch N` images per step (default: params.yaml's train.batch_size; with
  `--paper-model`, 2: one source and one target image, a GPU's share in the paper preset).
- images/s = batch / median seconds per step; × fp32 = fp32's median / the variant's. "first step"
  is the first call alone (with --compile it includes compilation).
- memory (CUDA): the peak torch allocated during one step (`torch.cuda.max_memory_allocated`, after
  `reset_peak_memory_stats`), and that peak minus what was allocated before the step (activations and
  gradients: what precision and memory format change; the resident part holds every variant's weights).
  On CPU the process's peak RSS is printed once (it cannot be split per variant).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.timing import (
    PARAMS_FILE,
    Budget,
    benchmark_parser,
    budget,
    compare,
    finish_benchmark,
    format_table,
    ratio,
    start_benchmark,
    synchronize,
    time_once,
)
from pipeline.config import TrainConfig, load_config
from pipeline.constants import IGNORE_INDEX, NUM_CLASSES
from pipeline.losses.segmentation import segmentation_cross_entropy
from pipeline.memory import peak_rss_mb
from pipeline.models.configured import build_model
from pipeline.models.factory import create_segmentor
from pipeline.training.acceleration import autocast, full_precision, input_batch, prepare_for_speed
from pipeline.training.optim import build_optimizer

PAPER_CROP = (512, 1024)  # presets/paper-gta5.yaml train.crop
PAPER_IMAGES_PER_GPU = 2  # one source + one target image per GPU (paper preset: batch 4 on 4 GPUs)
IGNORED_SHARE = 0.1  # of label pixels set to IGNORE_INDEX
BYTES_PER_MB = 2**20
SKIP_LINE = "gpu_speed: skipped, no CUDA device (use --device cpu for the same comparison on the CPU)"

# name → (precision, channels_last, compile)
VARIANTS = {
    "fp32": ("fp32", False, False),
    "bf16": ("bf16", False, False),
    "bf16 + channels_last": ("bf16", True, False),
}
COMPILED = {"bf16 + channels_last + compile": ("bf16", True, True)}


class TrainingStep:
    """One variant: its own copy of the model and optimizer, stepping on the shared batch."""

    def __init__(self, model: nn.Module, train: TrainConfig, images: torch.Tensor, labels: torch.Tensor):
        device = images.device
        self.train, self.images, self.labels, self.device = train, images, labels, device
        self.model = prepare_for_speed(copy.deepcopy(model), train).to(device).train()
        self.optimizer = build_optimizer(self.model, train.optim)

    def __call__(self) -> None:
        with autocast(self.train, self.device):
            output = self.model(input_batch(self.images, self.train))
        total = segmentation_cross_entropy(full_precision(output).logits, self.labels)
        if not math.isfinite(float(total.detach())):
            raise FloatingPointError(f"non-finite loss in the benchmark step ({self.train.precision})")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()


def step_memory_mb(step: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(peak allocated during one step, that peak minus what was allocated before it), in MB (CUDA)."""
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return peak / BYTES_PER_MB, (peak - before) / BYTES_PER_MB


def build_parser() -> argparse.ArgumentParser:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--compile", action="store_true", help="also time bf16 + channels_last + compile")
    parser.add_argument("--paper-model", action="store_true", help="DeepLabV2 ResNet-101 instead of params'")
    parser.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), default=None, help="input size")
    parser.add_argument("--batch", type=int, default=None, help="images per step")
    return parser


def run(args: argparse.Namespace) -> dict:
    if args.device != "cpu" and not torch.cuda.is_available():
        print(SKIP_LINE)
        return {"skipped": "no CUDA device"}
    device, info = start_benchmark(args)
    config = load_config(PARAMS_FILE)
    if device.type == "cpu":
        print("note: CPU figures show what the switches do on this CPU; they do not predict GPU speed-ups")
    if args.paper_model:
        model = create_segmentor(depth=101, output_stride=8, frozen_bn=True, stride_in_1x1=True)
        network, default_batch = "DeepLabV2 ResNet-101 (paper preset)", PAPER_IMAGES_PER_GPU
    else:
        model = build_model(config)
        network = f"params.yaml model (ResNet-{config.model.depth}, width {config.model.width})"
        default_batch = config.train.batch_size
    default_crop = (
        PAPER_CROP if device.type == "cuda" else (config.train.crop.height, config.train.crop.width)
    )
    crop = tuple(args.crop) if args.crop else default_crop
    images_per_step = args.batch or default_batch
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(images_per_step, 3, *crop, generator=generator).to(device)
    labels = torch.randint(0, NUM_CLASSES, (images_per_step, *crop), generator=generator)
    labels[torch.rand(labels.shape, generator=generator) < IGNORED_SHARE] = IGNORE_INDEX
    labels = labels.to(device)

    variants = VARIANTS | (COMPILED if args.compile else {})
    steps = {}
    for name, (precision, channels_last, compiled) in variants.items():
        train = dataclasses.replace(config.train, precision=precision, channels_last=channels_last,
                                    compile=compiled)  # fmt: skip
        steps[name] = TrainingStep(model, train, images, labels)
    first = {name: time_once(step, device) for name, step in steps.items()}
    chosen = budget(args, full=Budget(warmup=3, repeats=10), quick=Budget(warmup=1, repeats=3))
    timings = compare(steps, chosen, device)
    memory = (
        {name: step_memory_mb(step, device) for name, step in steps.items()} if device.type == "cuda" else {}
    )

    fp32 = timings["fp32"].median
    rows, figures = [], {}
    for name, timing in timings.items():
        peak, step_mb = memory.get(name, (None, None))  # None on CPU
        per_second, speedup = ratio(images_per_step, timing.median), ratio(fp32, timing.median)
        figures[name] = {**timing.as_dict(), "images_per_second": per_second, "speedup_over_fp32": speedup,
                         "first_step_seconds": first[name], "peak_allocated_mb": peak,
                         "step_allocated_mb": step_mb}  # fmt: skip
        mb = ["—", "—"] if peak is None else [peak, step_mb]
        rows.append([name, timing.ms, per_second, speedup, first[name], *mb])
    print()
    print(format_table(
        f"training steps on {device}: {network}, {images_per_step} images at {crop[0]}×{crop[1]} "
        f"(median of {chosen.repeats}, after {chosen.warmup} warm-up)",
        ["variant", "ms/step", "images/s", "× fp32", "first step s", "peak MB", "step MB"],
        rows,
    ))  # fmt: skip
    if device.type == "cpu":
        print(f"process peak RSS: {peak_rss_mb():.0f} MB (all variants together)")
    result = {"machine": info, "device": str(device), "network": network, "crop": list(crop),
              "images_per_step": images_per_step, "variants": figures,
              "process_peak_rss_mb": round(peak_rss_mb(), 1)}  # fmt: skip
    return finish_benchmark(args, result)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
