"""The BatchNorm regimes (adapt.bn_statistics): one normalisation of an image in the labeller, in an
adaptation step and in evaluation; domain-specific statistics; AdaBN re-estimation."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from pipeline.config import CbstConfig, load_config
from pipeline.data.transforms import image_to_tensor
from pipeline.evaluation.prediction import predict
from pipeline.label_shard import image_probabilities
from pipeline.models import create_segmentor
from pipeline.models.batchnorm import (
    DomainBatchNorm2d,
    batchnorm_affine_trainable,
    domain_batchnorm,
    modes_restored,
    reestimate_batchnorm,
    set_target_statistics,
    thawed_batchnorm,
)
from pipeline.models.configured import build_model
from pipeline.models.pretrained import load_segmentor_state
from pipeline.ports import free_port
from pipeline.training.adapt import TwoDomains, adaptation_mode, round_portion

ROOT = Path(__file__).resolve().parents[1]


class ConvBn(nn.Module):
    """The smallest model with the segmentor's `forward(images, domain=...)` signature."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, momentum=0.1)

    def forward(self, images: torch.Tensor, domain: str = "source") -> torch.Tensor:
        return self.bn(self.conv(images))


def small_segmentor(**flags) -> nn.Module:
    torch.manual_seed(0)
    return create_segmentor(depth=18, width=0.125, output_stride=8, **flags)


def trained_statistics(model: nn.Module, scale: float = 3.0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics (a few train-mode passes), then eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, 32, 48) * scale + 1.0)
    return model.eval()


def test_reestimate_gives_the_mean_and_variance_over_all_batches():
    model = ConvBn()
    torch.manual_seed(1)
    batches = [torch.randn(2, 3, 5, 7) * 3 + 1, torch.randn(2, 3, 5, 7)]
    seen = reestimate_batchnorm(model, batches, domain="target")
    assert seen == 4
    with torch.no_grad():
        features = torch.cat([model.conv(b) for b in batches])  # equal batch sizes: plain average
    per_batch_var = torch.stack([model.conv(b).detach().var(dim=(0, 2, 3), unbiased=True) for b in batches])
    torch.testing.assert_close(model.bn.running_mean, features.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.bn.running_var, per_batch_var.mean(0), rtol=1e-5, atol=1e-5)
    assert model.bn.momentum == 0.1 and not model.training


def test_domain_batchnorm_keeps_two_sets_of_statistics_and_shares_the_affine_parameters():
    plain = nn.BatchNorm2d(4)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 2.0)
        plain.bias.uniform_(-1.0, 1.0)
        plain.running_mean.uniform_(-1.0, 1.0)
        plain.running_var.uniform_(0.5, 2.0)
    layer = DomainBatchNorm2d.from_batchnorm(plain.eval()).eval()
    images = torch.randn(3, 4, 5, 5) * 2 + 1
    # Target statistics never estimated: target images use the source ones, as the plain layer does.
    layer.domain = "target"
    torch.testing.assert_close(layer(images), plain(images))
    layer.train()
    layer(images)  # train mode, target domain: only the target statistics move
    torch.testing.assert_close(layer.running_mean, plain.running_mean)
    assert int(layer.target_num_batches_tracked) == 1
    torch.testing.assert_close(layer.target_running_mean, 0.1 * images.mean(dim=(0, 2, 3)))
    layer.eval()
    target_out = layer(images)
    expected = (images - layer.target_running_mean.view(1, -1, 1, 1)) / torch.sqrt(
        layer.target_running_var.view(1, -1, 1, 1) + layer.eps
    ) * plain.weight.view(1, -1, 1, 1) + plain.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(target_out, expected)
    layer.domain = "source"
    torch.testing.assert_close(layer(images), plain(images))


def test_segmentor_routes_each_domain_to_its_statistics():
    warmup = trained_statistics(small_segmentor())
    adabn = copy.deepcopy(warmup)
    target_images = [torch.randn(2, 3, 32, 48) * 0.5 - 1.0 for _ in range(2)]
    reestimate_batchnorm(adabn, target_images, domain="target")
    per_domain = domain_batchnorm(copy.deepcopy(warmup))
    assert set_target_statistics(per_domain, adabn) == len(
        [m for m in per_domain.modules() if isinstance(m, DomainBatchNorm2d)]
    )
    per_domain.eval()
    images = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(per_domain(images, domain="target").logits, adabn(images).logits)
        torch.testing.assert_close(per_domain(images, domain="source").logits, warmup(images).logits)


def test_a_plain_checkpoint_loads_into_domain_batchnorm_and_predicts_the_same():
    warmup = trained_statistics(small_segmentor())
    per_domain = domain_batchnorm(small_segmentor())
    load_segmentor_state(per_domain, warmup.state_dict())
    images = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(per_domain.eval()(images, domain="target").logits, warmup(images).logits)


def test_frozen_batchnorm_can_be_thawed_reestimated_and_loaded_back():
    frozen = small_segmentor(frozen_bn=True)
    frozen.projection = None
    with torch.no_grad():
        frozen.backbone.bn1.running_mean.fill_(0.3)
    thawed = thawed_batchnorm(copy.deepcopy(frozen)).eval()
    images = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(thawed(images).logits, frozen.eval()(images).logits)
    assert not any(p.requires_grad for n, p in thawed.named_parameters() if "bn" in n)
    reestimate_batchnorm(thawed, [torch.randn(2, 3, 32, 48)], domain="target")
    assert not torch.all(thawed.backbone.bn1.running_mean == 0.3)
    load_segmentor_state(frozen, thawed.state_dict())  # counters ignored: the frozen model takes it
    torch.testing.assert_close(frozen.backbone.bn1.running_mean, thawed.backbone.bn1.running_mean)


def test_layers_the_batches_never_reach_keep_their_statistics():
    segmentor = small_segmentor(target_stem=True)
    segmentor.backbone.bn1.running_mean.fill_(0.5)
    reestimate_batchnorm(segmentor, [torch.randn(2, 3, 32, 32)], domain="target")
    assert torch.all(segmentor.backbone.bn1.running_mean == 0.5)  # the source stem: not on the path
    assert not torch.all(segmentor.target_stem.bn1.running_mean == 0.0)


def test_a_frozen_batchnorm_model_is_refused_without_thawing():
    segmentor = small_segmentor(frozen_bn=True)
    segmentor.projection = None
    with pytest.raises(ValueError, match="no BatchNorm with running statistics"):
        reestimate_batchnorm(segmentor, [torch.randn(1, 3, 32, 32)], domain="target")


def test_no_batches_is_refused():
    with pytest.raises(ValueError, match="no images"):
        reestimate_batchnorm(ConvBn(), [], domain="target")


def test_adaptation_mode_trains_weights_and_affine_but_never_the_statistics():
    segmentor = trained_statistics(small_segmentor())
    statistics = {k: v.clone() for k, v in segmentor.state_dict().items() if "running" in k}
    model = adaptation_mode(TwoDomains(segmentor), "frozen")
    assert model.training and segmentor.classifier.training
    source, target = model(torch.randn(2, 3, 32, 48) * 5, torch.randn(2, 3, 32, 48))
    (source.logits.square().mean() + target.logits.square().mean()).backward()
    assert segmentor.backbone.bn1.weight.grad is not None
    for key, value in segmentor.state_dict().items():
        if "running" in key:
            torch.testing.assert_close(value, statistics[key], msg=key)
    batchnorm_affine_trainable(segmentor, False)
    assert not segmentor.backbone.bn1.weight.requires_grad and segmentor.backbone.conv1.weight.requires_grad


def test_modes_restored_gives_every_module_its_own_mode_back():
    model = adaptation_mode(TwoDomains(small_segmentor()), "frozen")
    with modes_restored(model):
        model.eval()
    assert model.training and not model.segmentor.backbone.bn1.training


@pytest.mark.parametrize("regime", ["frozen", "per_domain"])
def test_labeller_adaptation_step_and_evaluation_see_the_same_target_features(regime):
    """The `batch` regime (labeller: source statistics; adaptation: batch statistics; evaluation:
    statistics blended over both domains) fails this on purpose: see the control at the end."""
    config = load_config(
        ROOT / "params.yaml", overrides={"model.width": 0.125, "adapt.bn_statistics": regime}
    )
    warmup = trained_statistics(build_model(config, per_domain=False))
    labeller = warmup
    if regime == "per_domain":
        adabn = copy.deepcopy(warmup)
        reestimate_batchnorm(adabn, [torch.randn(2, 3, 32, 48) - 1.0], domain="target")
        labeller = domain_batchnorm(copy.deepcopy(warmup))
        set_target_statistics(labeller, adabn)
    state = labeller.state_dict()

    def loaded() -> nn.Module:
        model = build_model(config)
        load_segmentor_state(model, state)
        return model.eval()

    image = (np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8)
    target = image_to_tensor(image)[None]
    labelled = image_probabilities(loaded(), image, [1.0], flip=False)  # the CBST labeller's view
    evaluated, embedding = predict(loaded(), image, (32, 48))  # the evaluate stage's view
    adapting = adaptation_mode(TwoDomains(loaded()), regime)
    with torch.no_grad():
        _, target_out = adapting(torch.randn(2, 3, 32, 48) * 4, target)
    torch.testing.assert_close(target_out.logits[0].softmax(0), labelled, rtol=1e-5, atol=1e-6)
    # Labels where the top two classes are clearly apart: this model's are nearly uniform, within float
    # rounding of each other at some pixels (tests/test_predict.py, the batch test).
    top_two = labelled.topk(2, dim=0).values
    apart = top_two[0] - top_two[1] > 1e-4
    assert apart.float().mean() > 0.5 and torch.equal(target_out.logits[0].argmax(0)[apart], evaluated[apart])
    torch.testing.assert_close(target_out.embedding, embedding)

    mixed = adaptation_mode(TwoDomains(loaded()), "batch")  # control: normalised by batch statistics
    with torch.no_grad():
        _, mixed_out = mixed(torch.randn(2, 3, 32, 48) * 4, target)
    assert not torch.allclose(mixed_out.logits[0].softmax(0), labelled, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("round_index", "portion"), [(0, 0.2), (1, 0.25), (2, 0.3), (10, 0.5), (40, 0.5)])
def test_crst_portion_grows_per_round_up_to_its_cap(round_index, portion):
    cbst = CbstConfig(portion=0.2, scales=[1.0], flip=False, histogram_bins=100, portion_step=0.05,
                      portion_max=0.5)  # fmt: skip
    assert round_portion(cbst, round_index) == pytest.approx(portion)


def first_layer_batch_statistics(segmentor: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mean and unbiased variance per channel of the stem convolution's output: what `bn1` sees."""
    with torch.no_grad():
        features = segmentor.backbone.conv1(images)
    return features.mean(dim=(0, 2, 3)), features.var(dim=(0, 2, 3), unbiased=True)


def test_batch_regime_normalises_each_domain_by_the_statistics_of_its_own_batch():
    """`adapt.bn_statistics: batch` (the official code's `model.train()`): a target batch's features in
    an adaptation step are those of that batch under its own statistics, whatever the source batch."""
    labeller = trained_statistics(small_segmentor())
    target = torch.randn(2, 3, 32, 48) * 0.5 - 1.0
    adapting = adaptation_mode(TwoDomains(copy.deepcopy(labeller)), "batch")
    assert all(layer.training for layer in adapting.modules() if isinstance(layer, nn.BatchNorm2d))
    alone = copy.deepcopy(labeller).train()  # the target batch alone, normalised by its own statistics
    with torch.no_grad():
        _, target_out = adapting(torch.randn(2, 3, 32, 48) * 4, target)
        _, other_source = adapting(torch.randn(2, 3, 32, 48) * 0.5 + 3, target)
        reference = alone(target, domain="target")
        labelled = labeller(target, domain="target")  # the labeller: eval mode, running statistics
    for got in (target_out, other_source):
        torch.testing.assert_close(got.logits, reference.logits)
        torch.testing.assert_close(got.embedding, reference.embedding)
    assert not torch.allclose(target_out.logits, labelled.logits, rtol=1e-3, atol=1e-4)


def test_batch_regime_moves_the_running_statistics_by_both_domains_with_the_layers_momentum():
    """Each pass updates r ← (1 − m)·r + m·(batch statistic), source then target, so the saved model's
    statistics (what evaluation uses) move away from the labeller's; `frozen` keeps them."""
    labeller = trained_statistics(small_segmentor())
    source, target = torch.randn(2, 3, 32, 48) * 4, torch.randn(2, 3, 32, 48) * 0.5 - 1.0
    layer = labeller.backbone.bn1
    mean, var, momentum = layer.running_mean.clone(), layer.running_var.clone(), layer.momentum
    for images in (source, target):
        batch_mean, batch_var = first_layer_batch_statistics(labeller, images)
        mean, var = (1 - momentum) * mean + momentum * batch_mean, (1 - momentum) * var + momentum * batch_var
    for regime, moves in (("batch", True), ("frozen", False)):
        adapting = adaptation_mode(TwoDomains(copy.deepcopy(labeller)), regime)
        with torch.no_grad():
            adapting(source, target)
        adapted = adapting.segmentor.state_dict()
        for key, value in labeller.state_dict().items():
            if key.endswith(("running_mean", "running_var")):
                assert torch.equal(adapted[key], value) != moves, f"{regime}: {key}"
        if moves:
            bn1 = adapting.segmentor.backbone.bn1
            torch.testing.assert_close(bn1.running_mean, mean)
            torch.testing.assert_close(bn1.running_var, var)
            assert int(bn1.num_batches_tracked) == int(layer.num_batches_tracked) + 2


def test_batch_regime_scores_held_out_images_with_the_running_statistics_and_resumes_training():
    """A sweep trial's held-out scoring (pipeline/training/holdout.py) under `batch`: eval mode inside,
    every BatchNorm back in train mode after."""
    model = adaptation_mode(TwoDomains(trained_statistics(small_segmentor())), "batch")
    statistics = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    with modes_restored(model), torch.no_grad():
        model.eval()
        model.segmentor(torch.randn(1, 3, 32, 48), domain="target")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in statistics.items())
    assert all(m.training for m in model.modules())


def batch_regime_worker(rank: int, world_size: int, port: int, source, target, results) -> None:
    """One DDP rank of a `batch`-regime step, as Ray Train wraps the model (DDP defaults: no SyncBatchNorm,
    `broadcast_buffers=True`)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    segmentor = trained_statistics(small_segmentor())
    model = nn.parallel.DistributedDataParallel(adaptation_mode(TwoDomains(segmentor), "batch"))
    half = slice(rank * len(target) // world_size, (rank + 1) * len(target) // world_size)
    # With gradients, as in training: DDP syncs buffers only before a forward that follows a training one.
    for step in range(2):
        source_out, target_out = model(source[half], target[half])
        (source_out.logits.mean() + target_out.logits.mean()).backward()
        if step == 0:  # DDP broadcasts rank 0's buffers before the next forward
            first, after_first = target_out.logits.detach(), segmentor.backbone.bn1.running_mean.clone()
    results[rank] = {"target_logits": first, "after_first": after_first,
                     "after_second": segmentor.backbone.bn1.running_mean.clone()}  # fmt: skip
    dist.destroy_process_group()


@pytest.mark.slow
def test_batch_regime_on_two_workers_normalises_by_each_workers_batch_and_keeps_rank_0s_statistics():
    """Several Ray Train workers (DDP without SyncBatchNorm): each rank normalises by the statistics of
    its own share of the batch, not of the global batch; before every forward DDP copies rank 0's
    running statistics to the others, so the running statistics (and the saved model, written by rank 0)
    follow rank 0's batches. One worker (the official code, one GPU) normalises by the whole batch."""
    import torch.multiprocessing as mp

    generator = torch.Generator().manual_seed(1)
    source = torch.randn(4, 3, 32, 48, generator=generator) * 4
    target = torch.randn(4, 3, 32, 48, generator=generator) * 0.5 - 1.0
    results = mp.Manager().dict()
    mp.spawn(batch_regime_worker, args=(2, free_port(), source, target, results), nprocs=2)
    torch.manual_seed(0)
    reference = trained_statistics(small_segmentor())
    for rank, half in ((0, slice(0, 2)), (1, slice(2, 4))):
        alone = copy.deepcopy(reference).train()
        with torch.no_grad():
            own = alone(source[half], domain="source")
            own = alone(target[half], domain="target")
        torch.testing.assert_close(results[rank]["target_logits"], own.logits[:2])
        torch.testing.assert_close(results[rank]["after_first"], alone.backbone.bn1.running_mean)
    whole = copy.deepcopy(reference).train()
    with torch.no_grad():
        global_batch = whole(target, domain="target").logits[:2]
    assert not torch.allclose(results[0]["target_logits"], global_batch, rtol=1e-3, atol=1e-4)
    # Second step: rank 1 starts from rank 0's statistics (broadcast), then adds its own two passes.
    expected = results[0]["after_first"]
    for images in (source[2:], target[2:]):
        batch_mean, _ = first_layer_batch_statistics(reference, images)
        expected = 0.9 * expected + 0.1 * batch_mean
    torch.testing.assert_close(results[1]["after_second"], expected)
