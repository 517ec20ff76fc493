"""Global prototypes: 2 gloo workers give the loss and gradients of 1 worker on the whole batch."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from pipeline.constants import NUM_CLASSES
from pipeline.distributed.collectives import reported_mean
from pipeline.losses.contrastive import class_prototypes, pixel_prototype_loss
from pipeline.losses.segmentation import resize_labels, segmentation_cross_entropy
from pipeline.ports import free_port
from pipeline.pseudo_labels.dynamic import PrototypeMemory, dynamic_pseudo_labels
from pipeline.pseudo_labels.fusion import hybrid_pseudo_labels
from pipeline.training.adaptation_losses import ROWS, ObjectiveWeights, dass_objective

WEIGHTS = ObjectiveWeights(target=1.0, forward_contrast=0.5, backward_contrast=0.5, tau=0.1, threshold=0.2)
BATCH, SIZE, DIM = 4, (16, 16), 8


class TinySegmentor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, DIM, 3, stride=4, padding=1)
        self.classify = nn.Conv2d(DIM, NUM_CLASSES, 1)

    def forward(self, images):
        embedding = self.embed(images)
        logits = F.interpolate(
            self.classify(embedding), size=images.shape[-2:], mode="bilinear", align_corners=False
        )
        return logits, embedding


def inputs():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2 * BATCH, 3, *SIZE, generator=generator)
    # Few classes, blocky, with ignore pixels, so every class is present on some worker only.
    labels = torch.randint(0, 5, (2 * BATCH, SIZE[0] // 4, SIZE[1] // 4), generator=generator)
    labels = labels.repeat_interleave(4, 1).repeat_interleave(4, 2)
    labels[:, :2] = 255
    labels[0][labels[0] == 3] = 4  # class 3 absent from the first images
    return images[:BATCH], labels[:BATCH], images[BATCH:], labels[BATCH:]


def prefilled_memory():
    memory = PrototypeMemory(NUM_CLASSES, DIM, momentum=0.9, init="first")
    generator = torch.Generator().manual_seed(1)
    present = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    present[:5] = True
    memory.update(torch.randn(NUM_CLASSES, DIM, generator=generator), present,
                  torch.randn(NUM_CLASSES, DIM, generator=generator), present)  # fmt: skip
    return memory


def run_objective(model, source, source_labels, target, static_labels, memory, row):
    source_logits, source_embedding = model(source)
    target_logits, target_embedding = model(target)
    outcome = dass_objective(source_logits, source_embedding, source_labels, target_logits, target_embedding,
                             static_labels, memory, ROWS[row], WEIGHTS)  # fmt: skip
    return sum(outcome.losses.values()), outcome


def worker(rank, world_size, port, rows, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    for row in rows:
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(TinySegmentor())
        source, source_labels, target, static_labels = inputs()
        half = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
        memory = prefilled_memory()
        total, _ = run_objective(
            model, source[half], source_labels[half], target[half], static_labels[half], memory, row
        )
        total.backward()
        results[row, rank] = {
            "loss": reported_mean(total.detach()),
            "grads": [p.grad.clone() for p in model.parameters()],
            "memory": memory.state_dict(),
        }
    dist.destroy_process_group()


def reference_total(model, source, source_labels, target, target_labels, ce_labels):
    """The objective written directly from the paper's formulas, in one process, no collectives:
    `target_labels` (y_T) build ρ_T and L_FC's anchors, `ce_labels` feed the target cross-entropy."""
    source_logits, f_source = model(source)
    target_logits, f_target = model(target)
    y_source, y_target = (
        resize_labels(source_labels, f_source.shape[-2:]),
        resize_labels(target_labels, f_target.shape[-2:]),
    )
    rho_source, present_source = class_prototypes(f_source, y_source, NUM_CLASSES)
    rho_target, present_target = class_prototypes(f_target, y_target, NUM_CLASSES)
    return (
        segmentation_cross_entropy(source_logits, source_labels)
        + WEIGHTS.target * segmentation_cross_entropy(target_logits, ce_labels)
        + WEIGHTS.forward_contrast
        * pixel_prototype_loss(f_target, y_target, rho_source, present_source, WEIGHTS.tau)
        + WEIGHTS.backward_contrast
        * pixel_prototype_loss(f_source, y_source, rho_target, present_target, WEIGHTS.tau)
    )


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str, **tolerance: float) -> None:
    torch.testing.assert_close(got, want, msg=lambda message: f"{what}: {message}", **tolerance)


@pytest.mark.slow
def test_two_workers_match_one_on_the_whole_batch():
    """Rows fc_bc (static labels) and dass (hybrid labels), both in one pair of spawned workers (each
    process costs seconds of imports)."""
    rows = ("fc_bc", "dass")
    manager = mp.get_context("spawn").Manager()  # not fork: a forked copy of a Ray driver breaks its gRPC
    results = manager.dict()
    mp.spawn(worker, args=(2, free_port(), rows, results), nprocs=2, join=True)
    for row in rows:
        torch.manual_seed(0)
        model = TinySegmentor()
        memory = prefilled_memory()
        source, source_labels, target, static_labels = inputs()
        _, outcome = run_objective(model, source, source_labels, target, static_labels, memory, row)
        model.zero_grad()
        total = reference_total(model, source, source_labels, target, outcome.target_labels, static_labels)
        total.backward()
        expected_grads = [p.grad.clone() for p in model.parameters()]
        for rank in range(2):
            got = results[row, rank]
            assert got["loss"] == pytest.approx(float(total.detach()), rel=1e-5), (row, rank)
            for grad, want in zip(got["grads"], expected_grads, strict=True):
                assert_close(grad, want, f"{row}, rank {rank}", rtol=1e-4, atol=1e-6)
            for key, value in memory.state_dict().items():
                assert_close(got["memory"][key], value, f"{row}, rank {rank}, {key}")


def test_rows_switch_terms_on_cumulatively():
    model = TinySegmentor()
    names = {}
    for row in ROWS:
        _, outcome = run_objective(model, *inputs(), prefilled_memory(), row)
        names[row] = set(outcome.losses)
    assert names["base"] == {"ce_source", "ce_target"}
    assert names["fc"] == names["base"] | {"contrast_fc"}
    assert names["fc_bc"] == names["dyn_nocal"] == names["dass"] == names["fc"] | {"contrast_bc"}


def test_dynamic_rows_use_hybrid_labels_at_least_as_dense_as_static():
    model = TinySegmentor()
    source, source_labels, target, static_labels = inputs()
    static = static_labels.clone()
    static[:, :, 8:] = 255  # sparse static labels
    _, base = run_objective(model, source, source_labels, target, static, prefilled_memory(), "base")
    _, dass = run_objective(model, source, source_labels, target, static, prefilled_memory(), "dass")
    assert torch.equal(base.target_labels, static)
    assert (dass.target_labels != 255).sum() >= (static != 255).sum()
    kept = static != 255
    labelled_dynamic = dass.dynamic_labels["dynamic_cal"] != 255
    # hybrid: dynamic where it exists, else static
    assert torch.equal(
        dass.target_labels[labelled_dynamic], dass.dynamic_labels["dynamic_cal"][labelled_dynamic]
    )
    assert torch.equal(dass.target_labels[kept & ~labelled_dynamic], static[kept & ~labelled_dynamic])


@pytest.mark.parametrize("ce_labels", ["static", "hybrid"])
def test_target_cross_entropy_takes_the_labels_adapt_target_ce_labels_names(ce_labels):
    model = TinySegmentor()
    source, source_labels, target, static = inputs()
    static = static.clone()
    static[:, :, 8:] = 255  # sparse static labels, so the hybrid differs from them
    weights = ObjectiveWeights(1.0, 0.5, 0.5, 0.1, 0.2, ce_on_hybrid=ce_labels == "hybrid")
    source_logits, source_embedding = model(source)
    target_logits, target_embedding = model(target)
    outcome = dass_objective(source_logits, source_embedding, source_labels, target_logits, target_embedding,
                             static, prefilled_memory(), ROWS["dass"], weights)  # fmt: skip
    assert not torch.equal(outcome.target_labels, static)
    expected = outcome.target_labels if ce_labels == "hybrid" else static
    torch.testing.assert_close(
        outcome.losses["ce_target"], segmentation_cross_entropy(target_logits, expected)
    )


def test_target_prototypes_use_labels_fused_at_feature_resolution_when_sizes_do_not_divide():
    """Labels of 15×15 over 4×4 features (not a multiple): ρ_T must come from hybrid(y_D, resized y_F)
    at feature resolution, not from the label-resolution hybrid resized back (not the identity here)."""
    torch.manual_seed(0)
    source_embedding = torch.randn(2, DIM, 4, 4)
    target_embedding = torch.randn(2, DIM, 4, 4)
    source_labels = torch.randint(0, 4, (2, 15, 15))
    static = torch.randint(0, 4, (2, 15, 15))
    static[:, :, 7:] = 255
    logits = torch.randn(2, NUM_CLASSES, 15, 15)
    # Empty: ξ = 0, and with "first" ρ_T becomes μ_T at once
    memory = PrototypeMemory(NUM_CLASSES, DIM, momentum=0.9, init="first")
    weights = ObjectiveWeights(
        target=1.0, forward_contrast=1.0, backward_contrast=1.0, tau=0.1, threshold=0.0
    )
    dass_objective(logits, source_embedding, source_labels, logits, target_embedding, static, memory,
                   ROWS["dass"], weights)  # fmt: skip

    rho_source, present_source = class_prototypes(source_embedding, resize_labels(source_labels, (4, 4)),
                                                  NUM_CLASSES)  # fmt: skip
    dynamic = dynamic_pseudo_labels(target_embedding, rho_source, present_source, None, 0.0)
    expected = hybrid_pseudo_labels(dynamic, resize_labels(static, (4, 4)))
    rho_target, present_target = class_prototypes(target_embedding, expected, NUM_CLASSES)
    assert torch.equal(memory.seen_target, present_target)
    torch.testing.assert_close(memory.mu_target[present_target], rho_target[present_target])
