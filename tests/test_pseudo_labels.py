"""Static (CBST), dynamic (prototype memory) and hybrid pseudo labels, against hand-computed values and
a plain-Python CBST reference."""

import io
import math
import random

import pytest
import torch

from pipeline.constants import IGNORE_INDEX
from pipeline.pseudo_labels.diagnostics import (
    cosine_histogram,
    label_counts,
    matched_density_accuracy,
    summarise_label_counts,
)
from pipeline.pseudo_labels.dynamic import (
    PrototypeMemory,
    best_prototype_similarity,
    dynamic_pseudo_labels,
)
from pipeline.pseudo_labels.fusion import hybrid_pseudo_labels
from pipeline.pseudo_labels.static import CbstHistogram, cbst_pseudo_labels, cbst_thresholds

IGN = IGNORE_INDEX

# --------------------------------------------------------------------------------------------- CBST


def reference_thresholds(confidences: list[float], predictions: list[int], num_classes: int, portion: float):
    """CBST thresholds with a plain Python sort per class."""
    thresholds = []
    for c in range(num_classes):
        values = sorted((p for p, k in zip(confidences, predictions, strict=True) if k == c), reverse=True)
        thresholds.append(values[max(int(portion * len(values)) - 1, 0)] if values else 1.0)
    return thresholds


def test_cbst_thresholds_by_hand():
    confidences = torch.tensor([0.5, 0.9, 0.7, 0.6, 0.8, 0.4])
    predictions = torch.tensor([0, 0, 0, 0, 0, 2])
    # Class 0 sorted: 0.9, 0.8, 0.7, 0.6, 0.5. portion 0.4 → index ⌊2⌋ − 1 = 1 → 0.8; class 1 never
    # predicted → 1.0; class 2 has one pixel, index max(⌊0.4⌋ − 1, 0) = 0 → 0.4.
    thresholds = cbst_thresholds(confidences, predictions, num_classes=3, portion=0.4)
    assert thresholds.tolist() == pytest.approx([0.8, 1.0, 0.4])
    assert cbst_thresholds(confidences, predictions, 3, portion=1.0).tolist() == pytest.approx(
        [0.5, 1.0, 0.4]
    )
    empty = cbst_thresholds(torch.empty(0), torch.empty(0, dtype=torch.long), 3, 0.5)
    assert empty.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("portion", [0.001, 0.2, 0.5, 0.77, 1.0])
def test_cbst_thresholds_match_a_python_sort(portion):
    rng = random.Random(portion)
    # Rounded confidences create ties; class 4 is never predicted.
    confidences = torch.tensor([round(rng.uniform(0.2, 1.0), 2) for _ in range(997)])
    predictions = [rng.choice([0, 0, 0, 1, 2, 3]) for _ in range(997)]
    expected = reference_thresholds(confidences.tolist(), predictions, 5, portion)
    got = cbst_thresholds(confidences, torch.tensor(predictions), 5, portion)
    assert got.tolist() == expected  # the same float32 values, exactly
    assert got[4].item() == 1.0


@pytest.mark.parametrize("portion", [0.0, -0.1, 1.5])
def test_cbst_portion_is_validated(portion):
    with pytest.raises(ValueError, match="portion"):
        cbst_thresholds(torch.tensor([0.5]), torch.tensor([0]), 2, portion)
    with pytest.raises(ValueError, match="portion"):
        CbstHistogram(2).thresholds(portion)


@pytest.mark.parametrize("distribution", ["uniform", "saturated"])
def test_streaming_histogram_agrees_with_the_exact_thresholds(distribution):
    generator = torch.Generator().manual_seed(3)
    num_classes = 6
    histogram = CbstHistogram(num_classes)
    all_confidences, all_predictions = [], []
    for _ in range(5):
        if distribution == "uniform":
            confidences = torch.rand(4000, generator=generator) * (1 - 1 / num_classes) + 1 / num_classes
        else:  # softmax-like: most mass just below 1.0, some exactly 1.0
            confidences = (1 - torch.rand(4000, generator=generator) ** 4 * 0.05).clamp(max=1.0)
            confidences[:100] = 1.0
        predictions = torch.randint(0, num_classes - 1, (4000,), generator=generator)  # last class absent
        histogram.update(confidences.view(2, 2000), predictions.view(2, 2000))
        all_confidences.append(confidences)
        all_predictions.append(predictions)
    confidences, predictions = torch.cat(all_confidences), torch.cat(all_predictions)
    for portion in (0.01, 0.2, 0.5, 1.0):
        exact = cbst_thresholds(confidences, predictions, num_classes, portion)
        streamed = histogram.thresholds(portion)
        assert streamed.dtype == exact.dtype
        assert torch.allclose(streamed, exact, atol=1e-3, rtol=0), (portion, streamed - exact)
        assert streamed[-1].item() == 1.0


def test_streaming_histograms_merge():
    generator = torch.Generator().manual_seed(4)
    confidences = torch.rand(3000, generator=generator)
    predictions = torch.randint(0, 3, (3000,), generator=generator)
    whole, first, second = CbstHistogram(3, bins=500), CbstHistogram(3, bins=500), CbstHistogram(3, bins=500)
    whole.update(confidences, predictions)
    first.update(confidences[:1000], predictions[:1000])
    second.update(confidences[1000:], predictions[1000:])
    first.merge(second)
    assert torch.equal(whole.thresholds(0.3), first.thresholds(0.3))
    assert torch.allclose(whole.thresholds(0.3), cbst_thresholds(confidences, predictions, 3, 0.3), atol=2e-3)


def test_cbst_pseudo_labels_ratio_of_one_is_labelled():
    thresholds = torch.tensor([0.25, 0.8])
    # Per pixel (p0, p1) → ratios (p0 / 0.25, p1 / 0.8):
    #   (0.25, 0.75) → (1.0, 0.9375): exactly 1 → class 0
    #   (0.2, 0.8)   → (0.8, 1.0):    exactly 1 → class 1
    #   (0.24, 0.76) → (0.96, 0.95):  < 1 → ignore
    #   (0.3, 0.7)   → (1.2, 0.875):  class 0 although p1 is the larger probability
    probs = torch.tensor([[0.25, 0.2], [0.24, 0.3]]), torch.tensor([[0.75, 0.8], [0.76, 0.7]])
    labels = cbst_pseudo_labels(torch.stack(probs).unsqueeze(0), thresholds)
    assert labels.tolist() == [[[0, 1], [IGN, 0]]]
    assert labels.dtype == torch.long


# ------------------------------------------------------------------------------------ prototype memory


def test_memory_initialises_then_averages_and_keeps_absent_classes():
    memory = PrototypeMemory(num_classes=3, dim=2, momentum=0.9, init="first")
    memory.update(
        torch.tensor([[1.0, 2.0], [9.0, 9.0], [9.0, 9.0]]),
        torch.tensor([True, False, False]),
        torch.tensor([[3.0, 0.0], [0.0, 1.0], [9.0, 9.0]]),
        torch.tensor([True, True, False]),
    )
    # First observation: μ(c) = ρ(c); unobserved classes stay zero.
    assert torch.allclose(memory.mu_source, torch.tensor([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]))
    assert torch.allclose(memory.mu_target, torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    # ξ = μ_T − μ_S only where both sides were observed (class 0).
    assert torch.allclose(memory.bias(), torch.tensor([[2.0, -2.0], [0.0, 0.0], [0.0, 0.0]]))

    memory.update(
        torch.tensor([[3.0, 4.0], [5.0, 5.0], [9.0, 9.0]]),
        torch.tensor([True, True, False]),
        torch.tensor([[100.0, 100.0], [2.0, 3.0], [9.0, 9.0]]),
        torch.tensor([False, True, False]),
    )
    # Source: class 0 EMA 0.9·(1, 2) + 0.1·(3, 4); class 1 first seen → (5, 5).
    assert torch.allclose(memory.mu_source, torch.tensor([[1.2, 2.2], [5.0, 5.0], [0.0, 0.0]]))
    # Target: class 0 absent in this update keeps (3, 0); class 1 EMA 0.9·(0, 1) + 0.1·(2, 3).
    assert torch.allclose(memory.mu_target, torch.tensor([[3.0, 0.0], [0.2, 1.2], [0.0, 0.0]]))
    assert torch.allclose(memory.bias(), torch.tensor([[1.8, -2.2], [-4.8, -3.8], [0.0, 0.0]]))
    assert memory.seen_source.tolist() == [True, True, False]
    assert memory.seen_target.tolist() == [True, True, False]


def test_memory_takes_no_gradient():
    prototypes = torch.randn(2, 3, requires_grad=True)
    memory = PrototypeMemory(2, 3, momentum=0.5, init="first")
    memory.update(prototypes * 2, torch.tensor([True, True]), prototypes, torch.tensor([True, False]))
    assert not memory.mu_source.requires_grad and not memory.bias().requires_grad


def test_memory_state_dict_round_trip():
    generator = torch.Generator().manual_seed(5)
    memory = PrototypeMemory(4, 3, momentum=0.99, init="first")
    for _ in range(3):
        memory.update(
            torch.randn(4, 3, generator=generator),
            torch.rand(4, generator=generator) > 0.3,
            torch.randn(4, 3, generator=generator),
            torch.rand(4, generator=generator) > 0.3,
        )
    buffer = io.BytesIO()
    torch.save(memory.state_dict(), buffer)
    buffer.seek(0)
    restored = PrototypeMemory(4, 3, momentum=0.99, device="cpu", init="first")
    restored.load_state_dict(torch.load(buffer))
    for key in PrototypeMemory.STATE_KEYS:
        assert torch.equal(getattr(memory, key), getattr(restored, key)), key
    step = torch.randn(4, 3, generator=generator), torch.tensor([True, False, True, True])
    memory.update(*step, *step)
    restored.update(*step, *step)
    assert torch.equal(memory.bias(), restored.bias())
    assert restored.to("cpu") is restored and restored.device == torch.device("cpu")
    with pytest.raises(ValueError, match="mu_source"):
        PrototypeMemory(5, 3, momentum=0.99, init="first").load_state_dict(memory.state_dict())


@pytest.mark.parametrize("momentum", [1.0, -0.1, 1.5])
def test_memory_momentum_is_validated(momentum):
    with pytest.raises(ValueError, match="momentum"):
        PrototypeMemory(3, 2, momentum=momentum, init="first")


# ------------------------------------------------------------------------------------ dynamic labels


def dynamic_inputs():
    # Target pixels (1, 0), (0, 1), (2, 1), (−1, 0); source prototypes ρ0 = (2, 0), ρ1 = (0, 1) present,
    # ρ2 = (1, 1) absent (it would be the best match of (2, 1): 3/√10 ≈ 0.949 > 2/√5 ≈ 0.894).
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 1.0], [-1.0, 0.0]]]).permute(2, 0, 1)
    prototypes = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    return features.unsqueeze(0), prototypes, torch.tensor([True, True, False])


def test_dynamic_labels_by_hand():
    features, prototypes, present = dynamic_inputs()
    similarity = best_prototype_similarity(features, prototypes, present)
    expected = [[[1.0, 1.0], [2 / math.sqrt(5), 0.0]]]
    assert torch.allclose(similarity, torch.tensor(expected), atol=1e-6)
    labels = dynamic_pseudo_labels(features, prototypes, present, None, threshold=0.5)
    assert labels.tolist() == [[[0, 1], [0, IGN]]]
    assert labels.dtype == torch.long


def test_dynamic_label_needs_similarity_strictly_above_the_threshold():
    features, prototypes, present = dynamic_inputs()
    # The last pixel (−1, 0) best matches ρ1 with cosine exactly 0.
    assert dynamic_pseudo_labels(features, prototypes, present, None, threshold=0.0)[0, 1, 1] == IGN
    assert dynamic_pseudo_labels(features, prototypes, present, None, threshold=-0.1)[0, 1, 1] == 1
    # The pixel (2, 1): threshold equal to its computed similarity → unlabelled; one float32 step below
    # (𝒯 is compared in the similarity's float32) → class 0.
    value = best_prototype_similarity(features, prototypes, present)[0, 1, 0]
    assert dynamic_pseudo_labels(features, prototypes, present, None, threshold=value.item())[0, 1, 0] == IGN
    below = torch.nextafter(value, torch.tensor(-math.inf)).item()
    assert dynamic_pseudo_labels(features, prototypes, present, None, threshold=below)[0, 1, 0] == 0


def test_dynamic_labels_use_the_calibrated_prototypes():
    features, prototypes, present = dynamic_inputs()
    bias = torch.tensor([[0.0, 2.0], [0.0, 0.0], [0.0, 0.0]])  # ρ_{S→T}(0) = (2, 2)
    similarity = best_prototype_similarity(features, prototypes, present, bias)
    # (1, 0): max(1/√2, 0); (0, 1): max(1/√2, 1); (2, 1): max(3/√10, 1/√5); (−1, 0): max(−1/√2, 0).
    expected = [[[1 / math.sqrt(2), 1.0], [3 / math.sqrt(10), 0.0]]]
    assert torch.allclose(similarity, torch.tensor(expected), atol=1e-6)
    labels = dynamic_pseudo_labels(features, prototypes, present, bias, threshold=0.8)
    assert labels.tolist() == [[[IGN, 1], [0, IGN]]]
    uncalibrated = dynamic_pseudo_labels(features, prototypes, present, None, threshold=0.8)
    assert uncalibrated.tolist() == [[[0, 1], [0, IGN]]]


def test_dynamic_labels_without_present_classes_or_gradient():
    features, prototypes, _ = dynamic_inputs()
    features.requires_grad_()
    labels = dynamic_pseudo_labels(features, prototypes, torch.zeros(3, dtype=torch.bool), None, -1.0)
    assert (labels == IGN).all()
    similarity = best_prototype_similarity(features, prototypes, torch.tensor([True, False, False]))
    assert not similarity.requires_grad
    with pytest.raises(ValueError, match="threshold"):
        dynamic_pseudo_labels(features, prototypes, torch.ones(3, dtype=torch.bool), None, 1.5)


# ------------------------------------------------------------------------------------ hybrid, quality


def test_hybrid_prefers_dynamic_then_static():
    dynamic = torch.tensor([[[0, IGN], [IGN, 4]]])
    static = torch.tensor([[[1, 2], [IGN, 3]]])
    assert hybrid_pseudo_labels(dynamic, static).tolist() == [[[0, 2], [IGN, 4]]]


def test_zero_initialised_memory_grows_the_calibration_gradually():
    memory = PrototypeMemory(2, 3, momentum=0.9, init="zero")
    source, target = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]), torch.tensor([[0, 0, 1.0], [0, 1.0, 1.0]])
    present = torch.tensor([True, False])
    for step in range(1, 4):
        memory.update(source, present, target, present)
        torch.testing.assert_close(memory.bias()[0], (1 - 0.9**step) * (target[0] - source[0]))
    assert torch.all(memory.bias()[1] == 0) and torch.all(memory.mu_source[1] == 0)  # never observed


def test_memory_init_is_validated_and_has_no_default():
    with pytest.raises(ValueError, match="'first' or 'zero'"):
        PrototypeMemory(2, 3, momentum=0.9, init="ones")
    with pytest.raises(TypeError, match="init"):  # a caller names the init; none is chosen for it
        PrototypeMemory(2, 3, momentum=0.9)


def test_label_counts_and_their_summary_by_hand():
    labels = torch.tensor([0, 0, 1, 255, 1, 2, 255, 0])
    truth = torch.tensor([0, 1, 1, 1, 255, 2, 2, 255])
    counts = label_counts(labels, truth, num_classes=3)
    # correct [1, 1, 1]; labelled on valid truth [2, 1, 1]; truth [1, 3, 2]; on ignore 2, ignore 2, all 8
    assert counts.tolist() == [1, 1, 1, 2, 1, 1, 1, 3, 2, 2, 2, 8]
    summary = summarise_label_counts(counts, ("a", "b", "c"))
    assert summary["density"] == pytest.approx(100 * 4 / 6, abs=0.01)
    assert summary["accuracy"] == 75.0
    assert summary["density_all_pixels"] == 75.0  # 6 of 8 pixels carry a label
    assert summary["on_ignore_truth"] == pytest.approx(100 * 2 / 6, abs=0.01)
    assert summary["per_class"]["a"] == {"precision": 50.0, "recall": 100.0}
    assert summary["per_class"]["b"] == {"precision": 100.0, "recall": pytest.approx(33.33, abs=0.01)}


def test_a_class_never_labelled_has_no_precision():
    counts = label_counts(torch.full((4,), 255), torch.tensor([0, 0, 1, 255]), num_classes=2)
    summary = summarise_label_counts(counts, ("a", "b"))
    assert summary["per_class"]["a"] == {"precision": None, "recall": 0.0}
    assert summary["accuracy"] is None and summary["density"] == 0.0


def test_matched_density_finds_the_threshold_and_the_accuracy_there():
    # 10 valid pixels, cosines 0.05 … 0.95; the 4 most similar are right, the others wrong.
    best = torch.linspace(0.05, 0.95, 10)
    truth = torch.zeros(10, dtype=torch.long)
    best_class = torch.where(best > 0.6, 0, 1)
    histogram = cosine_histogram(best, best_class, truth, bins=200)
    assert histogram[0].sum() == 10 and histogram[1].sum() == 4
    at_40 = matched_density_accuracy(histogram, 40.0)
    assert at_40["density"] == 40.0 and at_40["accuracy"] == 100.0
    assert 0.55 < at_40["threshold"] <= 0.65
    at_80 = matched_density_accuracy(histogram, 80.0)
    assert at_80["density"] == 80.0 and at_80["accuracy"] == 50.0
    assert matched_density_accuracy(histogram, 0.0) == {"threshold": 0.99, "density": 0.0, "accuracy": None}
    assert matched_density_accuracy(torch.zeros(2, 200), 40.0)["accuracy"] is None


def test_cosine_histogram_leaves_out_ignore_truth_and_pixels_without_a_candidate():
    best = torch.tensor([0.5, float("-inf"), 0.5])
    histogram = cosine_histogram(best, torch.tensor([1, 255, 1]), torch.tensor([1, 1, 255]), bins=10)
    assert histogram[0].sum() == 1 and histogram[1].sum() == 1
