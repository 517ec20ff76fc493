"""What the adaptation logs about its pseudo labels at every step (Table 4 and the per-class view).

Target ground truth enters here only, as a diagnostic; nothing here reaches a loss. Every step sums,
over all workers, the `label_counts` of the static, both dynamic and the hybrid labels and the best-cosine
histograms of both dynamic kinds (the matched-density view), in one all-reduce; each worker also takes the
10/50/90 % quantiles of its best calibrated cosine. `pipeline.training.adapt` accumulates them and
`benchmarks/step_overhead.py` times the same call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.constants import IGNORE_INDEX, LABEL_KINDS, NUM_CLASSES
from pipeline.distributed.collectives import all_reduce_sum
from pipeline.pseudo_labels.diagnostics import binned_cosine_histogram, cosine_bins, label_counts
from pipeline.pseudo_labels.fusion import hybrid_pseudo_labels
from pipeline.training.adaptation_losses import StepOutcome, upsample_labels

COSINE_BINS = 2000  # best-cosine histogram bins over [-1, 1] (matched-density Table 4: 𝒯 within 0.001)
QUANTILES = (0.1, 0.5, 0.9)  # of the best calibrated cosine
QUANTILE_SAMPLE = 100_000  # the quantiles are taken over at most this many of the worker's pixels
DYNAMIC_KINDS = ("dynamic_nocal", "dynamic_cal")  # the keys of `cosine_histograms` (StepOutcome.best_matches)


@dataclass(frozen=True)
class StepDiagnostics:
    label_counts: dict[str, torch.Tensor]  # kind → [3C + 3] float64 on the CPU, summed over workers
    cosine_histograms: dict[str, torch.Tensor]  # dynamic kind → [2, bins] float64 on the CPU, summed
    cosine_quantiles: torch.Tensor | None  # [3] of this worker's finite best calibrated cosines, or None


def local_label_counts(
    outcome: StepOutcome, static_labels: torch.Tensor, ground_truth: torch.Tensor
) -> dict[str, torch.Tensor]:
    """`label_counts` of each label kind on this worker's pixels."""
    # Table 4's hybrid labels are those of the full method: calibrated dynamic labels over static ones.
    hybrid = hybrid_pseudo_labels(outcome.dynamic_labels["dynamic_cal"], static_labels, IGNORE_INDEX)
    kinds = {"static": static_labels, **outcome.dynamic_labels, "hybrid": hybrid}
    return {kind: label_counts(kinds[kind], ground_truth, NUM_CLASSES, IGNORE_INDEX) for kind in LABEL_KINDS}


def local_cosine_histograms(
    outcome: StepOutcome, ground_truth: torch.Tensor, bins: int
) -> dict[str, torch.Tensor]:
    """Best-cosine histograms of each dynamic kind on this worker's pixels, at label resolution: the
    feature-resolution matches are binned first and then upsampled as the dynamic labels are."""
    size = tuple(ground_truth.shape[-2:])
    return {
        kind: binned_cosine_histogram(upsample_labels(cosine_bins(best, bins), size),
                                      upsample_labels(best_class, size), ground_truth, bins, IGNORE_INDEX)
        for kind, (best, best_class) in outcome.best_matches.items()
    }  # fmt: skip


def cosine_quantiles(best_cosine: torch.Tensor) -> torch.Tensor | None:
    finite = best_cosine[torch.isfinite(best_cosine)]
    if not finite.numel():
        return None
    return torch.quantile(finite[:QUANTILE_SAMPLE].float().cpu(), torch.tensor(QUANTILES))


def step_diagnostics(
    outcome: StepOutcome, static_labels: torch.Tensor, ground_truth: torch.Tensor, bins: int = COSINE_BINS
) -> StepDiagnostics:
    """One step's diagnostics; every worker must call it (one collective)."""
    counts = local_label_counts(outcome, static_labels, ground_truth)
    histograms = local_cosine_histograms(outcome, ground_truth, bins)
    parts = [*counts.values(), *histograms.values()]
    summed = all_reduce_sum(torch.cat([part.reshape(-1) for part in parts])).cpu()
    pieces = iter(summed.split([part.numel() for part in parts]))
    return StepDiagnostics(
        label_counts={kind: next(pieces) for kind in counts},
        cosine_histograms={kind: next(pieces).view(2, bins) for kind in histograms},
        cosine_quantiles=cosine_quantiles(outcome.best_cosine),
    )
