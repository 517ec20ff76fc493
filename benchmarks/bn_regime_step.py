"""BatchNorm regime cost: one adaptation step under each `adapt.bn_statistics`, side by side.

Issue 36 changed the default regime from `frozen` to `batch` (the official code's). This measures what
that costs a training step, so that a change in `make repro`'s time can be told apart from the day's
host: one `dass` step of the configured model (params.yaml, random initialisation: the speed does not
depend on the weights) on one fixed batch of `train.batch_size` + `train.batch_size` images at
`train.crop`, γ, β as `adapt.bn_affine` says, under

- `frozen`: every BatchNorm in eval mode (running statistics, nothing updated);
- `per_domain`: the same, with a BatchNorm per domain;
- `batch`: every BatchNorm in train mode (each domain's pass normalised by its own batch, running
  statistics updated), as `pipeline.training.adapt.adaptation_mode` sets it.

The step is `benchmarks.step_overhead`'s (objective, finiteness check, backward, SGD), interleaved so
the ratios hold on a busy machine (benchmarks/timing.py).

    python -m benchmarks.bn_regime_step [--quick] [--threads 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from benchmarks.step_overhead import StepBench, StepInputs, make_inputs
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
)
from pipeline.config import Config, load_config
from pipeline.models.batchnorm import batchnorm_affine_trainable
from pipeline.models.configured import build_model
from pipeline.training.adapt import adaptation_mode

REGIMES = ("frozen", "per_domain", "batch")
BASELINE = "frozen"  # the default until issue 36
ROW = "dass"


def regime_bench(config: Config, regime: str, inputs: StepInputs, device: torch.device) -> StepBench:
    """A StepBench whose model is in `regime`'s adaptation mode, as the adapt stage's workers set it."""
    config = dataclasses.replace(config, adapt=dataclasses.replace(config.adapt, bn_statistics=regime))
    torch.manual_seed(0)
    segmentor = build_model(config)
    batchnorm_affine_trainable(segmentor, config.adapt.bn_affine == "train")
    bench = StepBench(segmentor.to(device), segmentor.embedding_dim, config, inputs)
    adaptation_mode(bench.model, regime)
    return bench


def build_parser() -> argparse.ArgumentParser:
    return benchmark_parser(__doc__)


def run(args: argparse.Namespace) -> dict:
    device, info = start_benchmark(args)
    config = load_config(PARAMS_FILE)
    crop = (config.train.crop.height, config.train.crop.width)
    inputs = make_inputs(config.train.batch_size, crop, device)
    benches = {regime: regime_bench(config, regime, inputs, device) for regime in REGIMES}
    chosen = budget(args, full=Budget(warmup=2, repeats=10), quick=Budget(warmup=1, repeats=2))
    steps = {regime: (lambda bench=bench: bench.step(ROW)) for regime, bench in benches.items()}
    timings = compare(steps, chosen, device)
    baseline = timings[BASELINE].median
    print()
    print(
        format_table(
            f"one `{ROW}` adaptation step, {config.train.batch_size} + {config.train.batch_size} images at "
            f"{crop[0]}×{crop[1]}, γ, β {config.adapt.bn_affine}, {info['torch_threads']} threads "
            f"(median of {chosen.repeats}, after {chosen.warmup} warm-up)",
            ["adapt.bn_statistics", "ms", f"vs {BASELINE}", "spread"],
            [
                [regime, timing.ms, f"{ratio(timing.median, baseline):.3f}×", f"{timing.spread:.0%}"]
                for regime, timing in timings.items()
            ],
        )
    )
    figures = {
        "machine": info,
        "row": ROW,
        "steps_ms": {regime: timing.as_dict() for regime, timing in timings.items()},
        "ratio_to_frozen": {regime: ratio(timing.median, baseline) for regime, timing in timings.items()},
    }
    return finish_benchmark(args, figures)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
