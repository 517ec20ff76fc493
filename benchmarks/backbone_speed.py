"""Backbone speed: one training step of the Segmentor on EfficientNet-Lite0 versus the default ResNet.

What is timed: one SGD step (forward, cross-entropy on the input-size logits against random labels,
backward, `optimizer.step`) of `create_segmentor(...)` in train mode, ASPP-concat embedding, on a batch
of 8 images of 128×224 (params' train.batch_size and train.crop), fp32. Candidates, interleaved in one
run so the ratios hold on a busy machine (benchmarks/timing.py):

- resnet18 ×0.25 OS 8: params.yaml's default model (the baseline of every ratio);
- the same with model.freeze_stages 2 (conv1+bn1 and layer1 fixed);
- efficientnet_lite0 at OS 16 and OS 8, each with model.freeze_stages 0 and 3 (3: the stem and block
  groups 1–2, i.e. everything `forward_stem` runs, stride 4).

Weights are the random initialisation: the speed does not depend on them.

    python -m benchmarks.backbone_speed [--quick] [--threads 2] [--json PATH]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.timing import (
    Budget,
    benchmark_parser,
    budget,
    compare,
    finish_benchmark,
    format_table,
    ratio,
    start_benchmark,
)
from pipeline.constants import NUM_CLASSES
from pipeline.models import Segmentor, create_segmentor

BATCH = 8
CROP = (128, 224)
BASELINE = "resnet18 ×0.25, OS 8"
CANDIDATES: dict[str, dict] = {
    BASELINE: {"depth": 18, "width": 0.25, "output_stride": 8},
    "resnet18 ×0.25, OS 8, freeze 2": {"depth": 18, "width": 0.25, "output_stride": 8, "freeze_stages": 2},
    "lite0, OS 16": {"backbone": "efficientnet_lite0", "output_stride": 16},
    "lite0, OS 16, freeze 3": {"backbone": "efficientnet_lite0", "output_stride": 16, "freeze_stages": 3},
    "lite0, OS 8": {"backbone": "efficientnet_lite0", "output_stride": 8},
    "lite0, OS 8, freeze 3": {"backbone": "efficientnet_lite0", "output_stride": 8, "freeze_stages": 3},
}


def training_step(model: Segmentor, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images).logits, labels)
        loss.backward()
        optimizer.step()

    return step


def build_parser() -> argparse.ArgumentParser:
    return benchmark_parser(__doc__)


def run(args: argparse.Namespace) -> dict:
    device, info = start_benchmark(args)
    images = torch.randn(BATCH, 3, *CROP, device=device)
    labels = torch.randint(0, NUM_CLASSES, (BATCH, *CROP), device=device)
    models = {name: create_segmentor(**kwargs).to(device).train() for name, kwargs in CANDIDATES.items()}
    steps = {name: training_step(model, images, labels) for name, model in models.items()}
    chosen = budget(args, full=Budget(warmup=1, repeats=5), quick=Budget(warmup=1, repeats=1))
    timings = compare(steps, chosen, device)
    baseline = timings[BASELINE].median

    def parameters(model: Segmentor, trainable: bool) -> float:
        return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable) / 1e6

    rows = [
        [
            name,
            timings[name].ms,
            f"{ratio(timings[name].median, baseline):.2f}×",
            f"{timings[name].spread:.0%}",
            parameters(models[name], trainable=False),
            parameters(models[name], trainable=True),
        ]
        for name in CANDIDATES
    ]
    print()
    print(
        format_table(
            f"one training step, batch {BATCH} × {CROP[0]}×{CROP[1]}, fp32, {info['torch_threads']} threads "
            f"(median of {chosen.repeats}, after {chosen.warmup} warm-up)",
            ["", "ms", f"vs {BASELINE}", "spread", "M params", "M trained"],
            rows,
        )
    )
    figures = {
        "machine": info,
        "batch": BATCH,
        "crop": list(CROP),
        "steps_ms": {name: timing.as_dict() for name, timing in timings.items()},
        "ratio_to_baseline": {name: ratio(timings[name].median, baseline) for name in CANDIDATES},
    }
    return finish_benchmark(args, figures)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
