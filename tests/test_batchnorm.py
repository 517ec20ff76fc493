"""BatchNorm running statistics from chosen images only (adapt.bn_statistics: target)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.config import CbstConfig
from pipeline.models import create_segmentor
from pipeline.models.batchnorm import reestimate_batchnorm, running_statistics_frozen
from pipeline.training.adapt import TwoDomains, round_portion


class ConvBn(nn.Module):
    """The smallest model with the segmentor's `forward(images, domain=...)` signature."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, momentum=0.1)

    def forward(self, images: torch.Tensor, domain: str = "source") -> torch.Tensor:
        return self.bn(self.conv(images))


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


def test_frozen_running_statistics_normalise_by_the_batch_and_keep_the_buffers():
    model = ConvBn().train()
    mean, var = model.bn.running_mean.clone(), model.bn.running_var.clone()
    images = torch.randn(2, 3, 5, 7) * 4 + 2
    with running_statistics_frozen(model):
        out = model(images)
    torch.testing.assert_close(model.bn.running_mean, mean)
    torch.testing.assert_close(model.bn.running_var, var)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)  # batch statistics
    model(images)  # outside the context the buffers move again
    assert not torch.equal(model.bn.running_mean, mean)


def test_two_domains_leave_running_statistics_to_the_target_batches():
    segmentor = create_segmentor(depth=18, width=0.125, output_stride=8, frozen_bn=False)
    reference = create_segmentor(depth=18, width=0.125, output_stride=8, frozen_bn=False)
    reference.load_state_dict(segmentor.state_dict())
    source, target = torch.randn(2, 3, 32, 32) * 5, torch.randn(2, 3, 32, 32)
    TwoDomains(segmentor, target_statistics=True).train()(source, target)
    reference.train()(target, domain="target")  # the target batch alone
    for name, buffer in segmentor.state_dict().items():
        if "running" in name:
            torch.testing.assert_close(buffer, reference.state_dict()[name], msg=name)


def test_layers_the_batches_never_reach_keep_their_statistics():
    segmentor = create_segmentor(depth=18, width=0.125, output_stride=8, frozen_bn=False, target_stem=True)
    segmentor.backbone.bn1.running_mean.fill_(0.5)
    reestimate_batchnorm(segmentor, [torch.randn(2, 3, 32, 32)], domain="target")
    assert torch.all(segmentor.backbone.bn1.running_mean == 0.5)  # the source stem: not on the path
    assert not torch.all(segmentor.target_stem.bn1.running_mean == 0.0)


def test_a_frozen_batchnorm_model_is_refused():
    segmentor = create_segmentor(depth=18, width=0.125, output_stride=8, frozen_bn=True)
    segmentor.projection = None
    with pytest.raises(ValueError, match="no BatchNorm with running statistics"):
        reestimate_batchnorm(segmentor, [torch.randn(1, 3, 32, 32)], domain="target")


def test_no_batches_is_refused():
    with pytest.raises(ValueError, match="no images"):
        reestimate_batchnorm(ConvBn(), [], domain="target")


@pytest.mark.parametrize(("round_index", "portion"), [(0, 0.2), (1, 0.25), (2, 0.3), (10, 0.5), (40, 0.5)])
def test_crst_portion_grows_per_round_up_to_its_cap(round_index, portion):
    cbst = CbstConfig(portion=0.2, scales=[1.0], flip=False, histogram_bins=100, portion_step=0.05,
                      portion_max=0.5)  # fmt: skip
    assert round_portion(cbst, round_index) == pytest.approx(portion)
