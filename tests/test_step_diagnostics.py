"""The per-step label diagnostics: the counts against per-pixel counting, binning before upsampling
against binning after it, and the sums of two gloo ranks against one process on the whole batch."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from pipeline.constants import IGNORE_INDEX, NUM_CLASSES
from pipeline.pseudo_labels.diagnostics import cosine_histogram, label_counts
from pipeline.pseudo_labels.dynamic import PrototypeMemory
from pipeline.pseudo_labels.fusion import hybrid_pseudo_labels
from pipeline.training.adaptation_losses import ROWS, ObjectiveWeights, dass_objective, upsample_labels
from pipeline.training.step_diagnostics import QUANTILES, StepDiagnostics, step_diagnostics

WEIGHTS = ObjectiveWeights(target=0.3, forward_contrast=0.1, backward_contrast=0.1, tau=0.1, threshold=0.2)
BINS = 50


def random_labels(generator: torch.Generator, shape: tuple[int, ...], ignore_share: float) -> torch.Tensor:
    labels = torch.randint(0, NUM_CLASSES, shape, generator=generator)
    labels[torch.rand(shape, generator=generator) < ignore_share] = IGNORE_INDEX
    return labels


def test_label_counts_equal_counting_pixel_by_pixel():
    generator = torch.Generator().manual_seed(1)
    labels, truth = random_labels(generator, (300,), 0.4), random_labels(generator, (300,), 0.2)
    expected = torch.zeros(3 * NUM_CLASSES + 3, dtype=torch.float64)
    for label, true in zip(labels.tolist(), truth.tolist(), strict=True):
        if true == IGNORE_INDEX:
            expected[3 * NUM_CLASSES + 1] += 1
            expected[3 * NUM_CLASSES] += label != IGNORE_INDEX
        else:
            expected[2 * NUM_CLASSES + true] += 1
            if label != IGNORE_INDEX:
                expected[NUM_CLASSES + label] += 1
                expected[label] += label == true
    expected[-1] = 300
    assert torch.equal(label_counts(labels, truth, NUM_CLASSES), expected)


def test_label_counts_refuse_ids_outside_the_classes():
    with pytest.raises(ValueError, match="class ids below 19"):
        label_counts(torch.tensor([0, 19]), torch.tensor([0, 1]), NUM_CLASSES)


def test_cosine_histogram_equals_binning_pixel_by_pixel():
    generator = torch.Generator().manual_seed(2)
    best = torch.rand(400, generator=generator) * 2 - 1
    best[::7] = -torch.inf  # no candidate class
    best_class, truth = random_labels(generator, (400,), 0.0), random_labels(generator, (400,), 0.2)
    expected = torch.zeros(2, BINS, dtype=torch.float64)
    for cosine, chosen, true in zip(best.tolist(), best_class.tolist(), truth.tolist(), strict=True):
        if true == IGNORE_INDEX or cosine == -float("inf"):
            continue
        index = min(int((cosine + 1.0) / 2.0 * BINS), BINS - 1)
        expected[0, index] += 1
        expected[1, index] += chosen == true
    assert torch.equal(cosine_histogram(best, best_class, truth, BINS), expected)


def step_inputs(seed: int, images: int = 4) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    embeddings = [torch.randn(images, 8, 5, 7, generator=generator) for _ in range(2)]
    logits = [torch.randn(images, NUM_CLASSES, 20, 28, generator=generator) for _ in range(2)]
    source_labels = random_labels(generator, (images, 20, 28), 0.1)
    static = random_labels(generator, (images, 20, 28), 0.5)
    truth = random_labels(generator, (images, 20, 28), 0.1)
    return logits[0], embeddings[0], source_labels, logits[1], embeddings[1], static, truth


def outcome_of(inputs: tuple[torch.Tensor, ...], rank_slice: slice = slice(None)):
    source_logits, source_embedding, source_labels, target_logits, target_embedding, static, _ = inputs
    memory = PrototypeMemory(NUM_CLASSES, 8, 0.9, init="zero")
    # Source prototypes against zero target prototypes: a non-zero bias ξ for the calibrated kind.
    everywhere = torch.ones(NUM_CLASSES, dtype=torch.bool)
    source = torch.randn(NUM_CLASSES, 8, generator=torch.Generator().manual_seed(3))
    memory.update(source, everywhere, torch.zeros(NUM_CLASSES, 8), everywhere)
    parts = (source_logits, source_embedding, source_labels, target_logits, target_embedding, static)
    return dass_objective(*(part[rank_slice] for part in parts), memory, ROWS["dass"], WEIGHTS)


def test_step_diagnostics_equal_counting_each_kind_at_label_resolution():
    """What the step logs equals `label_counts` of each kind and `cosine_histogram` of the upsampled
    best cosine (the diagnostics bin the feature-resolution values first, then upsample the bins)."""
    inputs = step_inputs(seed=4)
    static, truth = inputs[5], inputs[6]
    outcome = outcome_of(inputs)
    found = step_diagnostics(outcome, static, truth, BINS)

    hybrid = hybrid_pseudo_labels(outcome.dynamic_labels["dynamic_cal"], static, IGNORE_INDEX)
    kinds = {"static": static, **outcome.dynamic_labels, "hybrid": hybrid}
    assert list(found.label_counts) == ["static", "dynamic_nocal", "dynamic_cal", "hybrid"]
    for kind, labels in kinds.items():
        assert torch.equal(found.label_counts[kind], label_counts(labels, truth, NUM_CLASSES)), kind
    size = tuple(truth.shape[-2:])
    for kind, (best, best_class) in outcome.best_matches.items():
        upsampled = F.interpolate(best[:, None], size=size, mode="nearest")[:, 0]
        expected = cosine_histogram(upsampled, upsample_labels(best_class, size), truth, BINS)
        assert torch.equal(found.cosine_histograms[kind], expected), kind
        assert expected[0].sum() > 0
    finite = outcome.best_cosine[torch.isfinite(outcome.best_cosine)]
    assert torch.equal(found.cosine_quantiles, torch.quantile(finite, torch.tensor(QUANTILES)))


def as_lists(found: StepDiagnostics) -> tuple[dict, dict]:
    return ({kind: value.tolist() for kind, value in found.label_counts.items()},
            {kind: value.tolist() for kind, value in found.cosine_histograms.items()})  # fmt: skip


def _two_rank_worker(rank: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        inputs = step_inputs(seed=5)
        half = slice(rank * 2, rank * 2 + 2)
        found = step_diagnostics(outcome_of(inputs, half), inputs[5][half], inputs[6][half], BINS)
        results[rank] = as_lists(found)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_sum_to_the_diagnostics_of_the_whole_batch(tmp_path):
    """Two real gloo processes, each with half of the images: every rank ends with the counts and
    histograms one process computes on the whole batch (prototypes are global in both)."""
    import torch.multiprocessing as mp

    inputs = step_inputs(seed=5)
    whole = step_diagnostics(outcome_of(inputs), inputs[5], inputs[6], BINS)
    expected = as_lists(whole)
    with mp.get_context("spawn").Manager() as manager:  # not fork: it breaks a Ray driver's gRPC
        results = manager.dict()
        mp.spawn(_two_rank_worker, args=(str(tmp_path / "store"), results), nprocs=2)
        assert dict(results) == {0: expected, 1: expected}
