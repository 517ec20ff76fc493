"""Prototypes and the pixel-prototype contrast (L_FC, L_BC), and the segmentation CE, against formulas
computed by hand on tiny tensors."""

import math

import pytest
import torch

from pipeline.constants import IGNORE_INDEX
from pipeline.losses.contrastive import (
    anchor_mask,
    class_feature_sums,
    class_prototypes,
    pixel_prototype_loss,
    prototypes_from_sums,
)
from pipeline.losses.segmentation import resize_labels, segmentation_cross_entropy

IGN = IGNORE_INDEX


def feature_map(pixels: list[list[tuple[float, float]]]) -> torch.Tensor:
    """[[(f_x, f_y) per pixel] per row] → features [1, 2, h, w]."""
    return torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1).unsqueeze(0)


def label_map(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long).unsqueeze(0)


# ---------------------------------------------------------------------------------------- prototypes


def test_class_prototypes_mean_of_raw_features_absent_and_ignored():
    features = feature_map([[(1, 0), (3, 2)], [(0, 1), (5, 5)]])
    labels = label_map([[0, 0], [1, IGN]])
    prototypes, present = class_prototypes(features, labels, num_classes=3)
    # ρ(0) = ((1, 0) + (3, 2)) / 2, ρ(1) = (0, 1), class 2 absent; the ignored (5, 5) counts nowhere.
    assert torch.allclose(prototypes, torch.tensor([[2.0, 1.0], [0.0, 1.0], [0.0, 0.0]]))
    assert present.tolist() == [True, True, False]
    sums, counts = class_feature_sums(features, labels, num_classes=3)
    assert torch.allclose(sums, torch.tensor([[4.0, 2.0], [0.0, 1.0], [0.0, 0.0]]))
    assert counts.tolist() == [2.0, 1.0, 0.0]


def test_class_prototypes_pool_over_the_batch():
    features = torch.cat([feature_map([[(1, 0), (0, 0)]]), feature_map([[(3, 6), (0, 2)]])])
    labels = torch.cat([label_map([[0, IGN]]), label_map([[0, 1]])])
    prototypes, present = class_prototypes(features, labels, num_classes=2)
    assert torch.allclose(prototypes, torch.tensor([[2.0, 3.0], [0.0, 2.0]]))
    assert present.tolist() == [True, True]


def test_sums_of_batch_parts_give_the_global_prototypes():
    """What a distributed caller does: all-reduce (here: add) per-part sums and counts."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4, 3, 5, 6, generator=generator)
    labels = torch.randint(0, 4, (4, 5, 6), generator=generator)
    labels[labels == 3] = IGN
    whole = class_prototypes(features, labels, num_classes=5)
    parts = [class_feature_sums(features[i : i + 2], labels[i : i + 2], 5) for i in (0, 2)]
    merged = prototypes_from_sums(parts[0][0] + parts[1][0], parts[0][1] + parts[1][1])
    assert torch.allclose(whole[0], merged[0], atol=1e-6)
    assert torch.equal(whole[1], merged[1])
    assert whole[1].tolist() == [True, True, True, False, False]


def test_prototypes_of_absent_classes_have_finite_zero_gradients():
    features = feature_map([[(1, 0), (3, 2)]]).requires_grad_()
    prototypes, _ = class_prototypes(features, label_map([[0, IGN]]), num_classes=3)
    prototypes[1:].sum().backward()
    assert torch.isfinite(features.grad).all() and not features.grad.any()


def test_half_precision_features_accumulate_in_float32():
    features = feature_map([[(1, 0), (3, 2)]]).to(torch.bfloat16)
    prototypes, _ = class_prototypes(features, label_map([[0, 0]]), num_classes=1)
    assert prototypes.dtype == torch.float32
    assert torch.allclose(prototypes, torch.tensor([[2.0, 1.0]]))


def test_labels_out_of_range_are_an_error():
    with pytest.raises(ValueError, match="outside"):
        class_prototypes(feature_map([[(1, 0)]]), label_map([[7]]), num_classes=3)
    with pytest.raises(ValueError, match="feature resolution"):
        class_prototypes(feature_map([[(1, 0)]]), label_map([[0, 0]]), num_classes=3)


# ------------------------------------------------------------------------------------- contrast loss

# Pixels: (1, 0) of class 0, (1, 1) of class 1, (0, 1) of class 2 (absent: not an anchor), (3, 4) ignored.
FEATURES = [[(1.0, 0.0), (1.0, 1.0)], [(0.0, 1.0), (3.0, 4.0)]]
LABELS = [[0, 1], [2, IGN]]
# ρ(0) = (2, 0), ρ(1) = (1, 2); ρ(2) equals the first pixel's direction but is absent, so it must not
# enter any denominator.
PROTOTYPES = [[2.0, 0.0], [1.0, 2.0], [1.0, 0.0]]
PRESENT = [True, True, False]
TAU = 0.5


def expected_contrast_terms() -> list[float]:
    """−log softmax over present classes of s/τ at the true class, per anchor pixel."""
    # Pixel (1, 0), class 0: s(·, ρ0) = 1, s(·, ρ1) = 1/√5.
    s00, s01 = 1.0, 1 / math.sqrt(5)
    first = -(s00 / TAU) + math.log(math.exp(s00 / TAU) + math.exp(s01 / TAU))
    # Pixel (1, 1), class 1: s(·, ρ0) = 1/√2, s(·, ρ1) = 3/(√2·√5).
    s10, s11 = 1 / math.sqrt(2), 3 / (math.sqrt(2) * math.sqrt(5))
    second = -(s11 / TAU) + math.log(math.exp(s10 / TAU) + math.exp(s11 / TAU))
    return [first, second]


def contrast_inputs(requires_grad: bool = False):
    features = feature_map(FEATURES).requires_grad_(requires_grad)
    prototypes = torch.tensor(PROTOTYPES).requires_grad_(requires_grad)
    return features, label_map(LABELS), prototypes, torch.tensor(PRESENT)


def test_pixel_prototype_loss_matches_the_formula():
    features, labels, prototypes, present = contrast_inputs()
    loss = pixel_prototype_loss(features, labels, prototypes, present, tau=TAU)
    terms = expected_contrast_terms()
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_sum_reduction_over_anchor_count_is_the_mean():
    features, labels, prototypes, present = contrast_inputs()
    anchors = anchor_mask(labels, present)
    assert anchors.tolist() == [[[True, True], [False, False]]]
    total = pixel_prototype_loss(features, labels, prototypes, present, tau=TAU, reduction="sum")
    mean = pixel_prototype_loss(features, labels, prototypes, present, tau=TAU)
    assert total.item() == pytest.approx(sum(expected_contrast_terms()), rel=1e-6)
    assert (total / anchors.sum()).item() == pytest.approx(mean.item(), rel=1e-6)


def test_sum_reduction_over_batch_parts_gives_the_global_mean():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(4, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 4, (4, 4, 4), generator=generator)
    labels[labels == 3] = IGN
    prototypes, present = class_prototypes(torch.randn(2, 3, 4, 4, generator=generator), labels[:2], 4)
    mean = pixel_prototype_loss(features, labels, prototypes, present, tau=0.1)
    total = sum(
        pixel_prototype_loss(
            features[i : i + 2], labels[i : i + 2], prototypes, present, 0.1, reduction="sum"
        )
        for i in (0, 2)
    )
    assert (total / anchor_mask(labels, present).sum()).item() == pytest.approx(mean.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("labels", "present"),
    [([[IGN, IGN], [IGN, IGN]], [True, True, False]), ([[0, 1], [2, IGN]], [False, False, False])],
    ids=["all-ignored", "no-class-present"],
)
def test_no_anchor_gives_zero_with_finite_gradients(labels, present):
    features, _, prototypes, _ = contrast_inputs(requires_grad=True)
    loss = pixel_prototype_loss(features, label_map(labels), prototypes, torch.tensor(present), tau=TAU)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(features.grad).all() and torch.isfinite(prototypes.grad).all()


def test_gradient_reaches_both_features_and_prototypes():
    features, labels, prototypes, present = contrast_inputs(requires_grad=True)
    pixel_prototype_loss(features, labels, prototypes, present, tau=TAU).backward()
    assert features.grad.abs().sum() > 0 and prototypes.grad[:2].abs().sum() > 0
    assert not prototypes.grad[2].any()  # the absent class is out of the loss


def test_gradient_flows_into_the_other_domain_through_its_prototypes():
    """L_FC = loss(f_T, y_T, ρ_S): f_S receives gradient through ρ_S (prototypes are not detached)."""
    source = feature_map([[(1.0, 0.0), (1.0, 1.0)]]).requires_grad_()
    source_prototypes, source_present = class_prototypes(source, label_map([[0, 1]]), num_classes=2)
    target = feature_map([[(1.0, 0.2), (0.5, 1.0)]])
    loss = pixel_prototype_loss(target, label_map([[0, 1]]), source_prototypes, source_present, tau=TAU)
    loss.backward()
    assert torch.isfinite(source.grad).all() and source.grad.abs().sum() > 0


def test_contrast_arguments_are_validated():
    features, labels, prototypes, present = contrast_inputs()
    with pytest.raises(ValueError, match="tau"):
        pixel_prototype_loss(features, labels, prototypes, present, tau=0.0)
    with pytest.raises(ValueError, match="reduction"):
        pixel_prototype_loss(features, labels, prototypes, present, tau=TAU, reduction="none")


# ----------------------------------------------------------------------------------- segmentation CE


def test_segmentation_cross_entropy_ignores_pixels():
    logits = torch.tensor([[[[1.0, 0.0, 0.5]], [[0.0, 2.0, 0.5]]]])  # [1, 2, 1, 3]
    labels = torch.tensor([[[0, IGN, 1]]])
    first = -1.0 + math.log(math.exp(1.0) + math.exp(0.0))
    third = -0.5 + math.log(2 * math.exp(0.5))
    mean = segmentation_cross_entropy(logits, labels)
    assert mean.item() == pytest.approx((first + third) / 2, rel=1e-6)
    total = segmentation_cross_entropy(logits, labels, reduction="sum")
    assert total.item() == pytest.approx(first + third, rel=1e-6)


def test_segmentation_cross_entropy_all_ignored_is_zero_with_finite_gradient():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = segmentation_cross_entropy(logits, torch.full((1, 2, 2), IGN))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_resize_labels_nearest_keeps_ids_and_dtype():
    labels = torch.arange(16, dtype=torch.uint8).view(1, 4, 4)
    labels[0, 0, 0] = IGN
    resized = resize_labels(labels, (2, 2))
    # Legacy "nearest": source index ⌊i · 4 / 2⌋ = 0, 2.
    assert resized.dtype == torch.uint8
    assert resized.tolist() == [[[IGN, 2], [8, 10]]]
