"""Static pseudo labels by class-balanced self-training (CBST, Zou et al., ECCV 2018).

CBST picks, per class c, the threshold thr_c that keeps the most confident `portion` of the pixels the
model predicts as c (its "k_c" of Zou et al., with p ≥ exp(−k_c) ⇔ p / thr_c ≥ 1), then labels a pixel
with argmax_c p_c / thr_c where that ratio reaches 1. Normalising by a per-class threshold keeps rare
classes from being swamped by confident frequent ones. DASS uses these labels as y_F (Sec. 3.3).

Two ways to get the thresholds: `cbst_thresholds` from all confidences at once (exact, the reference),
and `CbstHistogram` which streams them batch by batch with bounded memory and agrees to < 1/bins.
"""

from __future__ import annotations

import torch

from pipeline.constants import IGNORE_INDEX


def _check_portion(portion: float) -> None:
    if not 0 < portion <= 1:
        raise ValueError(f"CBST portion must be in (0, 1], got {portion}")


def _check_predictions(confidences: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> None:
    if confidences.dim() != 1 or confidences.shape != predictions.shape:
        raise ValueError(
            f"expected confidences [P] and predictions [P], got {tuple(confidences.shape)} and "
            f"{tuple(predictions.shape)}"
        )
    if not confidences.dtype.is_floating_point or predictions.dtype.is_floating_point:
        raise ValueError(
            f"confidences must be float and predictions integer: {confidences.dtype}, {predictions.dtype}"
        )
    if predictions.numel() and bool(((predictions < 0) | (predictions >= num_classes)).any()):
        raise ValueError(f"predictions must be class ids in [0, {num_classes})")


def _rank_index(counts: torch.Tensor, portion: float) -> torch.Tensor:
    """0-based rank (descending) of the threshold in each class: max(⌊portion · N_c⌋ − 1, 0)."""
    # float64 so ⌊portion · N_c⌋ is the number Python's int(portion * n) gives (float32 turns 0.7 · 10 into
    # 6.99…); on the CPU, as some accelerators (MPS) have no float64. counts is only [C].
    ranks = ((counts.cpu().double() * portion).floor().long() - 1).clamp(min=0)
    return ranks.to(counts.device)


def cbst_thresholds(
    confidences: torch.Tensor, predictions: torch.Tensor, num_classes: int, portion: float
) -> torch.Tensor:
    """Per-class CBST thresholds.

    For class c, the max-probabilities of the N_c pixels predicted as c, sorted in descending order
    (q_0 ≥ q_1 ≥ …), give thr_c = q_k with k = max(⌊portion · N_c⌋ − 1, 0); thr_c = 1.0 when N_c = 0.

    Args:
        confidences: [P] max_c softmax probability of each pixel; predictions: [P] its argmax class.
        num_classes: C; portion: share of each class's pixels to keep, in (0, 1].

    Returns:
        thresholds [C] in the dtype and on the device of `confidences`.
    """
    _check_portion(portion)
    _check_predictions(confidences, predictions, num_classes)
    thresholds = torch.ones(num_classes, dtype=confidences.dtype, device=confidences.device)
    if confidences.numel() == 0:
        return thresholds
    # One lexicographic sort by (class ascending, confidence descending): sort by confidence, then
    # stable-sort that order by class.
    by_confidence = torch.argsort(confidences, descending=True, stable=True)
    by_class = torch.argsort(predictions[by_confidence], stable=True)
    sorted_confidences = confidences[by_confidence][by_class]  # grouped by class, descending within
    counts = torch.bincount(predictions.long(), minlength=num_classes)  # N_c
    starts = torch.cumsum(counts, 0) - counts
    positions = (starts + _rank_index(counts, portion)).clamp(max=confidences.numel() - 1)
    return torch.where(counts > 0, sorted_confidences[positions], thresholds)


class CbstHistogram:
    """Streaming CBST thresholds: per-class histograms of confidences, updated batch by batch.

    Confidences in [0, 1] fall into `bins` equal bins per class; each bin also keeps the smallest and
    largest confidence it received. The threshold is read in the bin that holds rank k (as in
    `cbst_thresholds`), interpolated linearly between the bin's largest and smallest value by the
    rank inside the bin. It is exact when that bin holds one distinct value (e.g. saturated 1.0
    probabilities) and always within the bin width 1/bins of the exact threshold. Memory: C · bins
    counters, independent of the number of pixels.

    Histograms from several workers combine with `merge` (counts add, extrema combine).
    """

    def __init__(self, num_classes: int, bins: int = 10_000) -> None:
        if num_classes < 1 or bins < 1:
            raise ValueError(f"num_classes and bins must be ≥ 1, got {num_classes}, {bins}")
        self.num_classes = num_classes
        self.bins = bins
        self.counts: torch.Tensor | None = None  # [C, bins] int64, allocated on the first update's device
        self.minima: torch.Tensor | None = None  # [C, bins], +inf in empty bins
        self.maxima: torch.Tensor | None = None  # [C, bins], −inf in empty bins
        self.dtype: torch.dtype | None = None  # of the first confidences: extrema and thresholds

    def _allocate(self, device: torch.device, dtype: torch.dtype) -> None:
        shape = (self.num_classes, self.bins)
        self.counts = torch.zeros(shape, dtype=torch.long, device=device)
        self.minima = torch.full(shape, float("inf"), dtype=dtype, device=device)
        self.maxima = torch.full(shape, float("-inf"), dtype=dtype, device=device)
        self.dtype = dtype

    def update(self, confidences: torch.Tensor, predictions: torch.Tensor) -> None:
        """Add pixels: confidences [...] in [0, 1] and predictions [...] (any matching shape, flattened)."""
        confidences, predictions = confidences.reshape(-1), predictions.reshape(-1)
        _check_predictions(confidences, predictions, self.num_classes)
        if confidences.numel() and bool(((confidences < 0) | (confidences > 1)).any()):
            raise ValueError("confidences must be probabilities in [0, 1]")
        if self.counts is None:
            self._allocate(confidences.device, confidences.dtype)
        assert self.counts is not None and self.minima is not None and self.maxima is not None
        values = confidences.to(device=self.counts.device, dtype=self.minima.dtype)
        # Rounding is monotonic, so a larger value never lands in a lower bin; 1.0 goes to the last bin.
        bin_of = (values * self.bins).floor().long().clamp(max=self.bins - 1)
        flat = predictions.to(self.counts.device).long() * self.bins + bin_of  # [P] in [0, C · bins)
        size = self.num_classes * self.bins
        self.counts += torch.bincount(flat, minlength=size).view_as(self.counts)
        self.minima = self.minima.view(-1).scatter_reduce(0, flat, values, "amin").view_as(self.counts)
        self.maxima = self.maxima.view(-1).scatter_reduce(0, flat, values, "amax").view_as(self.counts)

    def merge(self, other: CbstHistogram) -> None:
        """Add another histogram's pixels (e.g. from another worker) to this one."""
        if (other.num_classes, other.bins) != (self.num_classes, self.bins):
            raise ValueError(
                f"cannot merge a histogram of {other.num_classes} classes × {other.bins} bins into one of "
                f"{self.num_classes} × {self.bins}"
            )
        if other.counts is None:
            return
        assert other.minima is not None and other.maxima is not None
        if self.counts is None:
            self._allocate(other.counts.device, other.minima.dtype)
        assert self.counts is not None and self.minima is not None and self.maxima is not None
        device = self.counts.device
        self.counts += other.counts.to(device)
        self.minima = torch.minimum(self.minima, other.minima.to(device=device, dtype=self.minima.dtype))
        self.maxima = torch.maximum(self.maxima, other.maxima.to(device=device, dtype=self.maxima.dtype))

    def thresholds(self, portion: float) -> torch.Tensor:
        """Per-class thresholds [C] as `cbst_thresholds` defines them (1.0 for classes never predicted)."""
        _check_portion(portion)
        if self.counts is None:
            return torch.ones(self.num_classes)
        assert self.minima is not None and self.maxima is not None and self.dtype is not None
        # Bins ordered from the most confident down; cumulative count of pixels from the top.
        counts = self.counts.flip(1)
        from_top = torch.cumsum(counts, 1)  # [C, bins]
        totals = from_top[:, -1]  # N_c
        rank = _rank_index(totals, portion).unsqueeze(1)  # [C, 1]
        # The bin holding rank k is the first whose cumulative count exceeds k.
        bin_from_top = (from_top <= rank).sum(1, keepdim=True).clamp(max=self.bins - 1)  # [C, 1]
        in_bin = counts.gather(1, bin_from_top)
        rank_in_bin = rank - (from_top.gather(1, bin_from_top) - in_bin)  # 0 = the bin's largest value
        high = self.maxima.flip(1).gather(1, bin_from_top)
        low = self.minima.flip(1).gather(1, bin_from_top)
        share = rank_in_bin.to(high.dtype) / (in_bin - 1).clamp(min=1).to(high.dtype)
        value = (high - share * (high - low)).squeeze(1)
        return torch.where(totals > 0, value, torch.ones_like(value))


def cbst_pseudo_labels(
    probs: torch.Tensor, thresholds: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """CBST labels y_F: argmax_c p_c / thr_c where max_c p_c / thr_c ≥ 1, else ignore_index.

    Args:
        probs: [N, C, H, W] softmax probabilities; thresholds: [C] from `cbst_thresholds`, all > 0.

    Returns:
        labels [N, H, W] int64 (a ratio of exactly 1 is labelled).
    """
    if probs.dim() != 4 or thresholds.shape != probs.shape[1:2]:
        raise ValueError(
            f"expected probs [N, C, H, W] and thresholds [C], got {tuple(probs.shape)} and "
            f"{tuple(thresholds.shape)}"
        )
    if bool((thresholds <= 0).any()):
        raise ValueError(f"CBST thresholds must be > 0, got {thresholds.tolist()}")
    ratios = probs / thresholds.to(probs.device).view(1, -1, 1, 1)
    best, classes = ratios.max(dim=1)
    return torch.where(best >= 1, classes, torch.full_like(classes, ignore_index))
