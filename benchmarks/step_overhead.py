"""Adaptation overhead: one `dass` training step / one `base` step on the same batch and model (issue 6,
target 1: ≤ 1.10 at the default size and at the paper's feature shapes).

One step is what `pipeline.training.adapt` runs: source and target images through the model in one call
(`TwoDomains`), the row's objective (`adaptation_losses.dass_objective` with `ROWS["dass"]` or
`ROWS["base"]`, `ObjectiveWeights` from params.yaml), the loop's finiteness check, backward and the SGD
step (`build_optimizer` at `adapt.lr`). The Table-4 diagnostics adapt.py adds to every step
(`pipeline.training.step_diagnostics`: label counts of every kind, the best-cosine histograms of the
matched-density view and the best-cosine quantiles) are logging, so steps are timed without and with
them. Also timed, as a reference: a "CE only" step (source CE + w_t · target CE on the static labels,
nothing else). The pipeline's `base` row is more than that: `dass_objective` computes the source
prototypes, both kinds of dynamic labels, the best cosine, the target prototypes and the memory update
for every row, because the adapt stage logs the label diagnostics of every row.

Sizes:
- default: the model of params.yaml (`build_model`), `train.batch_size` images per domain at
  `train.crop` (random images, blocky random labels).
- paper feature shapes: 2 source + 2 target images, 76-channel embedding at 92×92, labels and logits at
  730×730. A ResNet-101 at 730×730 is too slow for CPU repetitions, so a stand-in network (one strided
  convolution giving the 4 × 19 ASPP-like channels at 92×92, logits upsampled bilinearly to 730×730)
  isolates the objective; its ratio is therefore an upper bound. The objective's parts are also timed on
  their own (fresh leaf tensors of the model's output shapes, forward + backward), and the table gives
  the model step time M above which dass / base ≤ 1.10 holds: (base + Δ) / base ≤ 1.10 ⇔ the base step
  ≥ 10 Δ, Δ = the objective difference. `--paper-model` times the real DeepLabV2 ResNet-101 (random
  init, frozen BatchNorm) at those shapes instead of the stand-in (slow on a CPU: minutes per step).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.contrast_kernel import blocky_labels, sparse_static_labels
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
from pipeline.constants import NUM_CLASSES
from pipeline.models.configured import build_model
from pipeline.models.factory import create_segmentor
from pipeline.models.segmentor import SegmentorOutput
from pipeline.pseudo_labels.dynamic import PrototypeMemory
from pipeline.training.adapt import TwoDomains, objective_weights
from pipeline.training.adaptation_losses import ROWS, ObjectiveWeights, dass_objective, global_cross_entropy
from pipeline.training.optim import build_optimizer
from pipeline.training.step_diagnostics import step_diagnostics

TARGET_RATIO = 1.10
PAPER_IMAGES_PER_DOMAIN = 2
PAPER_LABEL_SIZE = (730, 730)
OUTPUT_STRIDE = 8
ASPP_BRANCHES = 4

# Objective variants: a row of the ablation, or "ce_only" (no prototype work at all).
CE_ONLY = "ce_only"


class StandIn(nn.Module):
    """The cheapest network with the segmentor's output shapes: one strided convolution gives the
    4 × C ASPP-like branches at stride 8; logits are their sum, upsampled to the input size."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            3, ASPP_BRANCHES * num_classes, OUTPUT_STRIDE, OUTPUT_STRIDE, OUTPUT_STRIDE // 2
        )
        self.embedding_dim = ASPP_BRANCHES * num_classes

    def forward(self, images: torch.Tensor, domain: str = "source") -> SegmentorOutput:
        embedding = self.conv(images)  # [N, 4C, ⌈H/8⌉, ⌈W/8⌉]
        logits_lowres = torch.stack(embedding.chunk(ASPP_BRANCHES, dim=1)).sum(dim=0)
        logits = F.interpolate(logits_lowres, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return SegmentorOutput(logits, logits_lowres, embedding)


@dataclass
class StepInputs:
    source_images: torch.Tensor  # [N, 3, H, W]
    target_images: torch.Tensor
    source_labels: torch.Tensor  # [N, H, W] ground truth
    static_labels: torch.Tensor  # [N, H, W] y_F
    truth: torch.Tensor  # [N, H, W] target ground truth (diagnostics only)


def make_inputs(images: int, size: tuple[int, int], device: torch.device, seed: int = 0) -> StepInputs:
    generator = torch.Generator().manual_seed(seed)
    cells = max(5, min(14, min(size) // 20))  # regions of ≳ 20 pixels, every class present
    source = blocky_labels(generator, images, size, cells)
    truth = blocky_labels(generator, images, size, cells)
    static = sparse_static_labels(generator, truth, cells)
    pictures = torch.randn(2, images, 3, *size, generator=generator)
    tensors = (pictures[0], pictures[1], source, static, truth)
    return StepInputs(*(tensor.to(device) for tensor in tensors))


def objective(
    variant: str,
    outputs: tuple[SegmentorOutput, SegmentorOutput],
    inputs: StepInputs,
    memory: PrototypeMemory,
    weights: ObjectiveWeights,
    with_diagnostics: bool,
) -> dict[str, torch.Tensor]:
    source_out, target_out = outputs
    if variant == CE_ONLY:
        losses = {"ce_source": global_cross_entropy(source_out.logits, inputs.source_labels)}
        if weights.target:
            losses["ce_target"] = weights.target * global_cross_entropy(
                target_out.logits, inputs.static_labels
            )
        return losses
    outcome = dass_objective(
        source_out.logits,
        source_out.embedding,
        inputs.source_labels,
        target_out.logits,
        target_out.embedding,
        inputs.static_labels,
        memory,
        ROWS[variant],
        weights,
    )
    if with_diagnostics:
        step_diagnostics(outcome, inputs.static_labels, inputs.truth)  # what adapt.py logs
    return outcome.losses


def backward_and_check(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """What `training.loop.train` does with a step's losses before the optimizer: sum, read, check."""
    total = sum(losses.values())
    {name: float(value.detach()) for name, value in losses.items()}
    if not math.isfinite(float(total.detach())):
        raise FloatingPointError(f"non-finite loss in the benchmark step: {float(total.detach())}")
    return total


class StepBench:
    """A model, its optimizer and a prototype memory, stepping on one fixed batch."""

    def __init__(self, segmentor: nn.Module, embedding_dim: int, config: Config, inputs: StepInputs) -> None:
        device = inputs.source_images.device
        self.model = TwoDomains(segmentor).to(device).train()
        optim = dataclasses.replace(config.train.optim, lr=config.adapt.lr)
        self.optimizer = build_optimizer(self.model, optim)
        self.memory = PrototypeMemory(NUM_CLASSES, embedding_dim, config.adapt.ema_momentum, device=device,
                                      init=config.adapt.memory_init)  # fmt: skip
        self.weights = objective_weights(config)
        self.inputs = inputs
        self.outputs: tuple[SegmentorOutput, SegmentorOutput] | None = None

    def forward(self) -> tuple[SegmentorOutput, SegmentorOutput]:
        return self.model(self.inputs.source_images, self.inputs.target_images)

    def step(self, variant: str, with_diagnostics: bool = False) -> None:
        losses = objective(variant, self.forward(), self.inputs, self.memory, self.weights, with_diagnostics)
        total = backward_and_check(losses)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()

    def model_only_step(self) -> None:
        """Forward, a trivial loss touching every output (so backward runs through the whole model with
        gradients of the real shapes), backward, SGD: the model's share of a step."""
        source_out, target_out = self.forward()
        total = sum(t.mean() for out in (source_out, target_out) for t in (out.logits, out.embedding))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()

    def objective_only(self, variant: str, with_diagnostics: bool = False) -> Callable[[], None]:
        """Forward + backward of the objective alone, on leaf copies of the model's outputs."""
        with torch.no_grad():
            outputs = tuple(
                SegmentorOutput(*(t.clone().requires_grad_() for t in out)) for out in self.forward()
            )

        def run() -> None:
            for out in outputs:
                for tensor in out:
                    tensor.grad = None
            losses = objective(variant, outputs, self.inputs, self.memory, self.weights, with_diagnostics)
            backward_and_check(losses).backward()

        return run

    def diagnostics_only(self) -> Callable[[], None]:
        with torch.no_grad():
            source_out, target_out = self.forward()
            outcome = dass_objective(
                source_out.logits, source_out.embedding, self.inputs.source_labels, target_out.logits,
                target_out.embedding, self.inputs.static_labels, self.memory, ROWS["dass"], self.weights,
            )  # fmt: skip
        return lambda: step_diagnostics(outcome, self.inputs.static_labels, self.inputs.truth)


def measure_size(name: str, bench: StepBench, chosen: Budget, device: torch.device) -> dict:
    """Both tables of one size: whole steps side by side, then the parts side by side."""
    steps = compare(
        {
            "ce only": lambda: bench.step(CE_ONLY),
            "base": lambda: bench.step("base"),
            "dass": lambda: bench.step("dass"),
            "base + diagnostics": lambda: bench.step("base", True),
            "dass + diagnostics": lambda: bench.step("dass", True),
        },
        chosen,
        device,
    )
    parts = compare(
        {
            "model fwd + bwd + SGD": bench.model_only_step,
            "objective ce only": bench.objective_only(CE_ONLY),
            "objective base": bench.objective_only("base"),
            "objective dass": bench.objective_only("dass"),
            "diagnostics": bench.diagnostics_only(),
        },
        chosen,
        device,
    )
    base, dass = steps["base"].median, steps["dass"].median
    ratios = {
        "dass / base": ratio(dass, base),
        "dass / ce only": ratio(dass, steps["ce only"].median),
        "dass+diag / base+diag": ratio(
            steps["dass + diagnostics"].median, steps["base + diagnostics"].median
        ),
        "dass+diag / base": ratio(steps["dass + diagnostics"].median, base),
    }
    print()
    print(format_table(
        f"{name}: whole training steps (median of {chosen.repeats}, after {chosen.warmup} warm-up)",
        ["step", "ms", "/ base"],
        [[label, timing.ms, ratio(timing.median, base)] for label, timing in steps.items()],
    ))  # fmt: skip
    delta = parts["objective dass"].median - parts["objective base"].median
    print()
    print(format_table(
        f"{name}: parts of a step (objective parts on leaf copies of the model outputs, fwd + bwd)",
        ["part", "ms"],
        [[label, timing.ms] for label, timing in parts.items()]
        + [["Δ = objective dass − objective base", 1000 * delta],
           ["base step needed for dass / base ≤ 1.10 (10 Δ)", 10000 * delta]],
    ))  # fmt: skip
    verdict = "met" if ratios["dass / base"] <= TARGET_RATIO else "MISSED"
    print(
        f"{name}: dass / base = {ratios['dass / base']:.3f} (target ≤ {TARGET_RATIO}: {verdict}); "
        f"dass / ce only = {ratios['dass / ce only']:.3f}; with diagnostics in both: "
        f"{ratios['dass+diag / base+diag']:.3f}; dass with diagnostics / base without: "
        f"{ratios['dass+diag / base']:.3f}"
    )
    return {
        "steps_ms": {label: timing.as_dict() for label, timing in steps.items()},
        "parts_ms": {label: timing.as_dict() for label, timing in parts.items()},
        "objective_delta_ms": 1000 * delta,
        "ratios": ratios,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--paper-model",
        action="store_true",
        help="paper shapes with the real DeepLabV2 ResNet-101, not the stand-in (minutes per step on CPU)",
    )
    parser.add_argument("--skip-default", action="store_true", help="only the paper feature shapes")
    parser.add_argument("--skip-paper", action="store_true", help="only the default size")
    return parser


def run(args: argparse.Namespace) -> dict:
    device, info = start_benchmark(args)
    config = load_config(PARAMS_FILE)
    weights = objective_weights(config)
    print(
        f"objective weights from params.yaml: w_t = {weights.target}, w_fc = {weights.forward_contrast}, "
        f"w_bc = {weights.backward_contrast}, τ = {weights.tau}, 𝒯 = {weights.threshold}"
    )
    figures: dict = {"machine": info, "target_ratio": TARGET_RATIO}

    if not args.skip_default:
        chosen = budget(args, full=Budget(warmup=2, repeats=10), quick=Budget(warmup=1, repeats=2))
        crop = (config.train.crop.height, config.train.crop.width)
        images = config.train.batch_size
        segmentor = build_model(config)
        inputs = make_inputs(images, crop, device)
        with torch.no_grad():
            shape = tuple(segmentor(inputs.source_images[:1]).embedding.shape[1:])
        name = (
            f"default size ({images} + {images} images at {crop[0]}×{crop[1]}, ResNet-{config.model.depth} "
            f"width {config.model.width}, embedding {shape[0]}×{shape[1]}×{shape[2]})"
        )
        figures["default"] = measure_size(name, StepBench(segmentor, segmentor.embedding_dim, config, inputs),
                                          chosen, device)  # fmt: skip

    if not args.skip_paper:
        images = PAPER_IMAGES_PER_DOMAIN
        inputs = make_inputs(images, PAPER_LABEL_SIZE, device, seed=1)
        if args.paper_model:
            chosen = budget(args, full=Budget(warmup=1, repeats=3), quick=Budget(warmup=0, repeats=1))
            segmentor = create_segmentor(depth=101, output_stride=OUTPUT_STRIDE, frozen_bn=True,
                                         stride_in_1x1=True)  # fmt: skip
            network = "DeepLabV2 ResNet-101"
        else:
            chosen = budget(args, full=Budget(warmup=1, repeats=7), quick=Budget(warmup=1, repeats=2))
            segmentor = StandIn()
            network = "stand-in network (one strided conv)"
        name = (
            f"paper feature shapes ({images} + {images} images, 76×92×92 embedding, "
            f"{PAPER_LABEL_SIZE[0]}×{PAPER_LABEL_SIZE[1]} labels, {network})"
        )
        figures["paper_shapes"] = measure_size(
            name, StepBench(segmentor, segmentor.embedding_dim, config, inputs), chosen, device
        )
        figures["paper_shapes"]["network"] = network
    return finish_benchmark(args, figures)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
