"""What the pseudo labels are worth, measured against target ground truth (diagnostics only: nothing that
trains reads them).

- `label_counts`: per-class counts behind precision and recall of one kind of labels, plus the labels
  placed on pixels whose ground truth is ignore (ego hood, rectification border), which training uses
  although no accuracy can judge them. Counts add up over batches and workers; `summarise_label_counts`
  turns the totals into percentages.
- `cosine_histogram` / `matched_density_accuracy`: Table 4 at matched density. Dynamic labels keep the
  pixels whose best prototype cosine exceeds 𝒯, so a kind's density depends on 𝒯; comparing two kinds at
  one 𝒯 compares different densities. Histograms of the best cosine (all valid-ground-truth pixels, and
  those whose best class is right) give, for any density, the 𝒯 reaching it and the accuracy there.
"""

from __future__ import annotations

import math

import torch

from pipeline.constants import IGNORE_INDEX


def label_counts(
    labels: torch.Tensor, truth: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Counts of one kind of labels [3C + 3] float64 (any matching shapes of labels and truth):

    [0:C] correct per class, [C:2C] labelled as the class on valid ground truth, [2C:3C] ground-truth
    pixels of the class, then labels on ignore ground truth, ignore-ground-truth pixels, all pixels.
    All of them are sums over one (C+1)×(C+1) confusion of ground truth and labels (ignore as class C),
    counted with a single `bincount`: it runs on every adaptation step, for four kinds of labels.
    """
    if labels.shape != truth.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and ground truth {tuple(truth.shape)} differ")
    labels, truth = labels.reshape(-1).long(), truth.reshape(-1).to(labels.device).long()
    c = num_classes
    label_code = torch.where(labels == ignore_index, c, labels)
    truth_code = torch.where(truth == ignore_index, c, truth)
    for raw in (labels, truth):
        if bool(((raw < 0) | ((raw >= c) & (raw != ignore_index))).any()):
            raise ValueError(f"labels and ground truth must be class ids below {c} or {ignore_index}")
    confusion = torch.bincount(truth_code * (c + 1) + label_code, minlength=(c + 1) ** 2).view(c + 1, c + 1)
    valid_truth = confusion[:c]  # rows: ground truth classes; the last column: no label
    totals = torch.stack([confusion[c, :c].sum(), confusion[c].sum(), torch.tensor(labels.numel())])
    per_class = [confusion.diagonal()[:c], valid_truth[:, :c].sum(0), valid_truth.sum(1)]
    return torch.cat([*per_class, totals.to(confusion.device)]).double()


def _percent(numerator: float, denominator: float) -> float | None:
    return round(100.0 * numerator / denominator, 2) if denominator else None


def summarise_label_counts(counts: torch.Tensor | list[float], class_names: tuple[str, ...]) -> dict:
    """Totals of `label_counts` → density and accuracy on valid ground truth (as Table 4), the density
    over all pixels, the share of labels on ignore ground truth, per-class precision and recall (%)."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    c = len(class_names)
    correct, labelled, truth = counts[:c], counts[c : 2 * c], counts[2 * c : 3 * c]
    on_ignore, _, pixels = counts[3 * c :].tolist()
    valid_labelled = float(labelled.sum())
    return {
        "density": _percent(valid_labelled, float(truth.sum())),
        "accuracy": _percent(float(correct.sum()), valid_labelled),
        "density_all_pixels": _percent(valid_labelled + on_ignore, pixels),
        "on_ignore_truth": _percent(on_ignore, valid_labelled + on_ignore),
        "per_class": {
            name: {
                "precision": _percent(float(correct[i]), float(labelled[i])),
                "recall": _percent(float(correct[i]), float(truth[i])),
            }
            for i, name in enumerate(class_names)
        },
    }


def cosine_bins(best: torch.Tensor, bins: int) -> torch.Tensor:
    """The histogram bin over cosine [-1, 1] of every pixel's best cosine (int64, same shape); −1 where
    no class was a candidate (cosine −inf). Binning before upsampling to label resolution gives the same
    bins as binning after it (nearest upsampling copies values) for a fraction of the work."""
    index = ((best.double() + 1.0) / 2.0 * bins).floor().clamp(0, bins - 1).long()
    return torch.where(torch.isfinite(best), index, -1)


def binned_cosine_histogram(
    bin_index: torch.Tensor,
    best_class: torch.Tensor,
    truth: torch.Tensor,
    bins: int,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """`cosine_histogram` of pixels already binned by `cosine_bins`."""
    bin_index, best_class = bin_index.reshape(-1), best_class.reshape(-1)
    truth = truth.reshape(-1).to(bin_index.device)
    keep = (truth != ignore_index) & (bin_index >= 0)
    # Pixels left out are counted in one extra bin instead of being gathered out (a boolean gather
    # costs more than the whole count at these sizes).
    code = torch.where(keep, (best_class == truth).long() * bins + bin_index, 2 * bins)
    wrong_and_right = torch.bincount(code, minlength=2 * bins + 1)[: 2 * bins].view(2, bins)
    return torch.stack([wrong_and_right.sum(0), wrong_and_right[1]]).double()


def cosine_histogram(
    best: torch.Tensor,
    best_class: torch.Tensor,
    truth: torch.Tensor,
    bins: int,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """[2, bins] float64 over cosine [-1, 1]: valid-ground-truth pixels by best cosine, and those whose
    best class is the ground truth. Pixels without any candidate class (cosine −inf) are left out."""
    return binned_cosine_histogram(cosine_bins(best, bins), best_class, truth, bins, ignore_index)


def matched_density_accuracy(histogram: torch.Tensor | list, density: float) -> dict[str, float | None]:
    """The 𝒯 (a bin edge) at which the labels' density on valid ground truth reaches `density` (%), and
    their accuracy there (%); the density actually reached is ≥ `density` by at most one bin."""
    histogram = torch.as_tensor(histogram, dtype=torch.float64)
    valid, right = histogram[0], histogram[1]
    total = float(valid.sum())
    if not total or math.isnan(density):
        return {"threshold": None, "density": None, "accuracy": None}
    bins = valid.numel()
    above = valid.flip(0).cumsum(0).flip(0)  # above[k]: pixels in bins k.. (cosine ≥ edge k)
    right_above = right.flip(0).cumsum(0).flip(0)
    reached = (above >= total * density / 100.0).nonzero()
    k = int(reached[-1]) if reached.numel() else 0
    return {
        "threshold": round(-1.0 + 2.0 * k / bins, 4),
        "density": round(100.0 * float(above[k]) / total, 2),
        "accuracy": _percent(float(right_above[k]), float(above[k])),
    }
