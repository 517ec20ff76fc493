"""Models: shapes at every depth and backbone, frozen BatchNorm, torchvision key names, weight files, target
stem (EfficientNet-Lite specifics: tests/test_efficientnet.py)."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_threads import module_torch_threads

from pipeline.constants import NUM_CLASSES
from pipeline.models import Segmentor, SegmentorOutput, create_segmentor
from pipeline.models.pretrained import (
    CheckpointFormatError,
    WeightsMismatchError,
    load_backbone_weights,
    load_segmentor_state,
    write_checkpoint,
)
from pipeline.models.resnet import FrozenBatchNorm2d, resnet18, resnet101

SMALL = 0.125  # width multiplier that keeps every depth fast on CPU
H, W = 33, 65  # odd sizes: feature maps are ⌈H/s⌉ x ⌈W/s⌉

# torchvision.models.resnet18().state_dict() keys, written out by hand (torchvision is not installed):
# 122 keys, of which fc.weight and fc.bias are not part of our backbone.
TORCHVISION_RESNET18_NUM_KEYS = 122
TORCHVISION_RESNET18_FIRST_KEYS = [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "layer1.0.conv1.weight",
    "layer1.0.bn1.weight",
    "layer1.0.bn1.bias",
    "layer1.0.bn1.running_mean",
    "layer1.0.bn1.running_var",
    "layer1.0.bn1.num_batches_tracked",
    "layer1.0.conv2.weight",
]
TORCHVISION_RESNET18_SOME_KEYS = [
    "layer1.1.bn2.running_var",
    "layer2.0.conv1.weight",
    "layer2.0.downsample.0.weight",
    "layer2.0.downsample.1.weight",
    "layer2.0.downsample.1.bias",
    "layer2.0.downsample.1.running_mean",
    "layer2.0.downsample.1.running_var",
    "layer2.0.downsample.1.num_batches_tracked",
    "layer3.1.conv2.weight",
    "layer4.0.downsample.0.weight",
    "layer4.1.bn2.num_batches_tracked",
]
TORCHVISION_RESNET18_LAST_KEYS = ["layer4.1.bn2.num_batches_tracked", "fc.weight", "fc.bias"]
# torchvision resnet50 / resnet101 state dicts: 320 / 626 keys including fc.weight and fc.bias.
TORCHVISION_NUM_KEYS = {50: 320, 101: 626}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# Tiny models run faster on one thread than on two contending ones.
_one_thread = module_torch_threads(1)


def images(n: int = 2, h: int = H, w: int = W) -> torch.Tensor:
    return torch.randn(n, 3, h, w)


def bn_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "bn" in k or "downsample.1" in k}


# ------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_every_depth_gives_logits_at_input_size_and_embedding_at_stride_8(depth: int) -> None:
    model = create_segmentor(depth=depth, width=SMALL)
    out = model(images())
    assert isinstance(out, SegmentorOutput)
    h, w = math.ceil(H / 8), math.ceil(W / 8)
    assert out.logits.shape == (2, NUM_CLASSES, H, W)
    assert out.logits_lowres.shape == (2, NUM_CLASSES, h, w)
    assert out.embedding.shape == (2, 4 * NUM_CLASSES, h, w)
    assert model.embedding_dim == 4 * NUM_CLASSES == 76
    for tensor in out:
        assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
@pytest.mark.parametrize("output_stride", [8, 32])
def test_every_efficientnet_gives_logits_at_input_size(backbone: str, output_stride: int) -> None:
    model = create_segmentor(backbone=backbone, output_stride=output_stride, embedding="projection")
    out = model(images(1))
    h, w = math.ceil(H / output_stride), math.ceil(W / output_stride)
    assert out.logits.shape == (1, NUM_CLASSES, H, W)
    assert out.embedding.shape == (1, 64, h, w)
    assert model.backbone.out_channels == 1280
    for tensor in out:
        assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("depth", [18, 50])
def test_projection_embedding_has_projection_dim_and_unit_length(depth: int) -> None:
    model = create_segmentor(depth=depth, width=SMALL, embedding="projection", projection_dim=12)
    out = model(images())
    assert out.embedding.shape == (2, 12, math.ceil(H / 8), math.ceil(W / 8))
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(1), atol=1e-5)
    assert out.logits.shape == (2, NUM_CLASSES, H, W)


@pytest.mark.parametrize(("depth", "output_stride"), [(18, 16), (18, 32), (101, 16), (50, 32)])
def test_output_stride_is_honoured(depth: int, output_stride: int) -> None:
    model = create_segmentor(depth=depth, width=SMALL, output_stride=output_stride)
    out = model(images(1, 64, 128))
    assert out.embedding.shape[-2:] == (64 // output_stride, 128 // output_stride)
    assert out.logits.shape[-2:] == (64, 128)


def test_logits_are_the_sum_of_the_aspp_branches_and_the_embedding_their_concatenation() -> None:
    model = create_segmentor(depth=18, width=SMALL).eval()
    x = images()
    out = model(x)
    branches = model.classifier.forward_branches(model.backbone(x))
    assert [conv.dilation for conv in model.classifier.conv2d_list] == [(d, d) for d in (6, 12, 18, 24)]
    assert [conv.padding for conv in model.classifier.conv2d_list] == [(d, d) for d in (6, 12, 18, 24)]
    torch.testing.assert_close(out.logits_lowres, sum(branches))
    torch.testing.assert_close(out.embedding, torch.cat(branches, dim=1))
    upsampled = F.interpolate(out.logits_lowres, size=(H, W), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.logits, upsampled)


def test_aspp_weights_are_drawn_with_std_001() -> None:
    model = create_segmentor(depth=101, width=0.25)  # 512 input channels: enough samples for the std
    weights = torch.cat([conv.weight.flatten() for conv in model.classifier.conv2d_list])
    assert abs(weights.std().item() - 0.01) < 5e-4


def test_width_scales_every_stage() -> None:
    backbone = resnet18(width=0.25)
    assert backbone.conv1.out_channels == 16
    assert [getattr(backbone, f"layer{i}")[0].conv2.out_channels for i in range(1, 5)] == [16, 32, 64, 128]
    assert resnet18(width=0.001).conv1.out_channels == 1  # at least one channel
    assert resnet101(width=0.125).out_channels == 64 * 4


def test_stride_in_1x1_moves_the_stride_to_the_first_conv() -> None:
    caffe = resnet101(width=SMALL, stride_in_1x1=True).layer2[0]
    torchvision_style = resnet101(width=SMALL).layer2[0]
    assert (caffe.conv1.stride, caffe.conv2.stride) == ((2, 2), (1, 1))
    assert (torchvision_style.conv1.stride, torchvision_style.conv2.stride) == ((1, 1), (2, 2))


def test_deeplabv2_dilations_of_layer3_and_layer4() -> None:
    backbone = resnet18(width=SMALL, output_stride=8)
    assert {block.conv2.dilation for block in backbone.layer3} == {(2, 2)}
    assert {block.conv2.dilation for block in backbone.layer4} == {(4, 4)}
    assert backbone.layer3[0].conv1.stride == (1, 1)


# --------------------------------------------------------------------------------------- frozen BN


def test_frozen_batchnorm_is_frozen_through_a_training_step() -> None:
    model = create_segmentor(depth=50, width=SMALL, frozen_bn=True)
    frozen = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    for module in frozen:
        # non-trivial statistics, so an update would show
        module.running_mean.uniform_(-1, 1)
        module.running_var.uniform_(0.5, 2)
        module.weight.uniform_(0.5, 2)
    before = bn_buffers(model.backbone)
    conv_before = model.backbone.conv1.weight.detach().clone()
    for module in frozen:
        assert all(not t.requires_grad for t in module.state_dict().values())
    frozen_tensors = {id(t) for m in frozen for t in m.buffers()}
    assert not any(id(p) in frozen_tensors for p in model.parameters())

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(images())
    loss = F.cross_entropy(out.logits, torch.randint(0, NUM_CLASSES, (2, H, W))) + out.embedding.mean()
    loss.backward()
    optimizer.step()

    after = bn_buffers(model.backbone)
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(model.backbone.conv1.weight, conv_before)  # the step did happen


def test_trainable_batchnorm_does_update_its_statistics() -> None:
    model = create_segmentor(depth=18, width=SMALL).train()
    before = model.backbone.bn1.running_mean.clone()
    model(images())
    assert not torch.equal(model.backbone.bn1.running_mean, before)


def test_frozen_batchnorm_matches_eval_batchnorm_and_loads_its_state_dict() -> None:
    bn = nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    bn.num_batches_tracked += 7
    frozen = FrozenBatchNorm2d(5)
    frozen.load_state_dict(bn.state_dict())  # strict, with num_batches_tracked present
    assert set(frozen.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(frozen(x), bn.eval()(x))


# -------------------------------------------------------------------------------------- key names


def test_backbone_keys_are_torchvision_resnet18_keys_without_fc() -> None:
    keys = list(resnet18().state_dict())
    assert len(keys) == TORCHVISION_RESNET18_NUM_KEYS - 2
    assert keys[: len(TORCHVISION_RESNET18_FIRST_KEYS)] == TORCHVISION_RESNET18_FIRST_KEYS
    assert set(TORCHVISION_RESNET18_SOME_KEYS) <= set(keys)
    assert keys[-1] == TORCHVISION_RESNET18_LAST_KEYS[0]
    assert not any(key.startswith("fc.") for key in keys)
    # Frozen BN keeps the names and drops only the counters.
    frozen_keys = list(resnet18(frozen_bn=True).state_dict())
    assert frozen_keys == [key for key in keys if not key.endswith("num_batches_tracked")]


@pytest.mark.parametrize("depth", [50, 101])
def test_bottleneck_key_count_is_torchvisions(depth: int) -> None:
    model = create_segmentor(depth=depth, width=SMALL)
    keys = list(model.backbone.state_dict())
    assert len(keys) == TORCHVISION_NUM_KEYS[depth] - 2
    assert {"layer1.0.conv3.weight", "layer1.0.bn3.running_var", "layer1.0.downsample.0.weight"} <= set(keys)


def test_torchvision_resnet18_parameter_count() -> None:
    # torchvision resnet18 has 11,689,512 parameters, of which fc holds 512·1000 + 1000.
    assert sum(p.numel() for p in resnet18().parameters()) == 11_689_512 - 513_000


# ------------------------------------------------------------------------------------ weight files


def test_torchvision_state_dict_with_fc_round_trips(tmp_path) -> None:
    source = resnet18(width=SMALL)
    with torch.no_grad():
        source.bn1.running_mean.uniform_(-1, 1)
    state = dict(source.state_dict())
    state["fc.weight"] = torch.randn(1000, source.out_channels)
    state["fc.bias"] = torch.randn(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    target = resnet18(width=SMALL)
    report = load_backbone_weights(target, path)
    assert report.dropped == ("fc.bias", "fc.weight")
    assert report.layout == "torchvision"
    assert report.loaded == len(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


@pytest.mark.parametrize("nesting", ["state_dict", "model"])
def test_nested_state_dicts_load(tmp_path, nesting: str) -> None:
    source = resnet18(width=SMALL)
    path = tmp_path / "nested.pt"
    torch.save({nesting: source.state_dict(), "epoch": 3}, path)
    target = resnet18(width=SMALL, frozen_bn=True)  # also: BN counters are ignored
    report = load_backbone_weights(target, path)
    assert report.layout == f"torchvision+nested:{nesting}"
    assert all(key.endswith("num_batches_tracked") for key in report.ignored)
    torch.testing.assert_close(target.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(
        target.layer2[0].downsample[1].running_var, source.layer2[0].downsample[1].running_var
    )


def deeplabv2_init_file(tmp_path, width: float = SMALL):
    """A file in the layout of DeepLab_resnet_pretrained_init-f81d91e8.pth: `Scale.` prefix, ASPP under
    `Scale.layer5.conv2d_list.<i>`, no num_batches_tracked."""
    source = resnet101(width=width, stride_in_1x1=True)
    state = {
        f"Scale.{key}": value
        for key, value in source.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    for i in range(4):
        state[f"Scale.layer5.conv2d_list.{i}.weight"] = torch.randn(21, source.out_channels, 3, 3)
        state[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.randn(21)
    path = tmp_path / "DeepLab_resnet_pretrained_init.pth"
    torch.save(state, path)
    return source, path


def test_deeplabv2_init_layout_loads(tmp_path) -> None:
    source, path = deeplabv2_init_file(tmp_path)
    target = resnet101(width=SMALL, stride_in_1x1=True, frozen_bn=True)
    report = load_backbone_weights(target, path)
    assert report.layout == "deeplabv2"
    assert len(report.dropped) == 8
    assert all(key.startswith("layer5.") for key in report.dropped)
    for key, value in target.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_factory_loads_pretrained_and_copies_it_into_the_target_stem(tmp_path) -> None:
    source, path = deeplabv2_init_file(tmp_path)
    model = create_segmentor(depth=101, width=SMALL, stride_in_1x1=True, target_stem=True, pretrained=path)
    torch.testing.assert_close(model.backbone.layer4[2].conv3.weight, source.layer4[2].conv3.weight)
    torch.testing.assert_close(model.target_stem.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(
        model.target_stem.layer1[0].bn1.running_mean, source.layer1[0].bn1.running_mean
    )


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path) -> None:
    state = dict(resnet18(width=SMALL).state_dict())
    del state["layer3.1.conv2.weight"]
    state["layer9.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError) as info:
        load_backbone_weights(resnet18(width=SMALL), path)
    message = str(info.value)
    assert str(path) in message
    assert "layer3.1.conv2.weight" in message and "missing" in message
    assert "layer9.0.conv1.weight" in message and "unexpected" in message
    assert info.value.missing == ["layer3.1.conv2.weight"]
    assert info.value.unexpected == ["layer9.0.conv1.weight"]

    # Another width: every weight has another shape, and the message says which.
    path_wide = tmp_path / "wide.pth"
    torch.save(resnet18(width=0.25).state_dict(), path_wide)
    with pytest.raises(
        WeightsMismatchError, match=r"conv1\.weight: file \[16, 3, 7, 7\] vs model \[8, 3, 7, 7\]"
    ):
        load_backbone_weights(resnet18(width=SMALL), path_wide)


class NotATensor:
    def __init__(self) -> None:
        self.payload = "anything"


def test_non_tensor_pickle_is_refused_with_the_file_name(tmp_path) -> None:
    path = tmp_path / "object.pt"
    torch.save({"conv1.weight": NotATensor()}, path)
    with pytest.raises(CheckpointFormatError, match="weights_only") as info:
        load_backbone_weights(resnet18(width=SMALL), path)
    assert str(path) in str(info.value)

    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(NotATensor(), protocol=2))
    with pytest.raises(CheckpointFormatError, match=str(plain)):
        load_backbone_weights(resnet18(width=SMALL), plain)


def test_a_dict_without_tensors_is_not_a_state_dict(tmp_path) -> None:
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "name": "warmup"}, path)
    with pytest.raises(CheckpointFormatError, match=r"not a state dict of tensors.*'epoch': int"):
        load_backbone_weights(resnet18(width=SMALL), path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_backbone_weights(resnet18(width=SMALL), tmp_path / "missing.pt")


def test_segmentor_checkpoint_round_trip_and_source_only_into_target_stem(tmp_path) -> None:
    trained = create_segmentor(depth=18, width=SMALL, embedding="projection", projection_dim=8)
    path = tmp_path / "warmup.pt"
    torch.save({"model": trained.state_dict(), "step": 10}, path)

    fresh = create_segmentor(depth=18, width=SMALL, embedding="projection", projection_dim=8)
    report = load_segmentor_state(fresh, path)
    assert report.loaded == len(trained.state_dict())
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key

    # A source-only checkpoint into an adaptation model with a target stem: the stem is copied.
    with_stem = create_segmentor(
        depth=18, width=SMALL, embedding="projection", projection_dim=8, target_stem=True
    )
    report = load_segmentor_state(with_stem, trained.state_dict())
    assert report.target_stem_from_source
    torch.testing.assert_close(with_stem.target_stem.conv1.weight, trained.backbone.conv1.weight)

    # The other way round is an error that says what to do.
    with pytest.raises(WeightsMismatchError, match="target_stem=True"):
        load_segmentor_state(fresh, with_stem.state_dict())
    # And a different head (another class count) is a shape mismatch.
    with pytest.raises(WeightsMismatchError, match=r"classifier\.conv2d_list\.0\.weight"):
        load_segmentor_state(create_segmentor(depth=18, width=SMALL, num_classes=16), path)


# ------------------------------------------------------------------------------------- target stem


def test_target_stem_starts_identical_and_routes_target_images_after_divergence() -> None:
    model = create_segmentor(depth=18, width=SMALL, target_stem=True).eval()
    assert isinstance(model, Segmentor) and model.has_target_stem
    stem_params = {id(p) for p in model.target_stem.parameters()}
    assert not stem_params & {id(p) for p in model.backbone.parameters()}
    x = images()
    with torch.no_grad():
        source_before = model(x, domain="source")
        torch.testing.assert_close(model(x, domain="target").logits, source_before.logits)

        model.target_stem.conv1.weight.add_(0.5 * torch.randn_like(model.target_stem.conv1.weight))
        source_after = model(x, domain="source")
        target_after = model(x, domain="target")
    torch.testing.assert_close(source_after.logits, source_before.logits)
    assert not torch.allclose(target_after.logits, source_after.logits)

    model.copy_source_stem_to_target()
    with torch.no_grad():
        torch.testing.assert_close(model(x, domain="target").logits, source_before.logits)


def test_without_target_stem_both_domains_share_the_stem() -> None:
    model = create_segmentor(depth=18, width=SMALL).eval()
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x, domain="target").embedding, model(x).embedding)
    with pytest.raises(ValueError, match=r"domain='cityscapes'.*'source', 'target'"):
        model(x, domain="cityscapes")


# ----------------------------------------------------------------------------------------- factory


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"depth": 19}, r"depth=19: allowed values \[18, 34, 50, 101\]"),
        ({"depth": 18, "width": 0}, r"width=0: allowed a finite number > 0"),
        ({"depth": 18, "width": float("nan")}, r"width=nan"),
        ({"depth": 18, "output_stride": 4}, r"output_stride=4: allowed values \[8, 16, 32\]"),
        (
            {"depth": 18, "embedding": "aspp"},
            r"embedding='aspp': allowed values \['aspp_concat', 'projection'\]",
        ),
        ({"depth": 18, "num_classes": 0}, r"num_classes=0"),
        ({"depth": 18, "projection_dim": 0}, r"projection_dim=0"),
        ({"depth": 18, "frozen_bn": "yes"}, r"frozen_bn='yes': allowed True or False"),
        ({"depth": 18, "stride_in_1x1": True}, r"stride_in_1x1=True: allowed True only with a Bottleneck"),
        ({"depth": 18, "backbone": "resnet50"}, r"backbone='resnet50': allowed values \['resnet', "),
        ({"depth": 18, "freeze_stages": -1}, r"freeze_stages=-1: allowed an integer >= 0"),
        ({"depth": 18, "freeze_stages": True}, r"freeze_stages=True: allowed an integer >= 0"),
    ],
)
def test_factory_rejects_bad_values_naming_them(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        create_segmentor(**kwargs)


def test_a_checkpoint_without_projection_head_loads_and_keeps_the_head_initialisation(tmp_path) -> None:
    plain = create_segmentor(depth=18, width=SMALL, output_stride=8)
    torch.save(plain.state_dict(), tmp_path / "warmup.pt")
    projected = create_segmentor(depth=18, width=SMALL, output_stride=8, embedding="projection")
    head = {key: value.clone() for key, value in projected.projection.state_dict().items()}
    load_segmentor_state(projected, tmp_path / "warmup.pt")
    for key, value in projected.projection.state_dict().items():
        assert torch.equal(value, head[key]), key
    torch.testing.assert_close(projected.classifier.state_dict(), plain.classifier.state_dict())
    with pytest.raises(WeightsMismatchError, match="unexpected"):  # the other way round stays an error
        load_segmentor_state(create_segmentor(depth=18, width=SMALL, output_stride=8), projected.state_dict())


def test_checkpoints_are_byte_for_byte_reproducible(tmp_path) -> None:
    """dvc.lock hashes model files: the same weights must give the same bytes, whatever the file name."""
    state = create_segmentor(depth=18, width=SMALL, output_stride=8).state_dict()
    write_checkpoint(state, tmp_path / "a.pt")
    write_checkpoint(state, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    loaded = torch.load(tmp_path / "a.pt", weights_only=True)
    assert all(torch.equal(loaded[key], state[key]) for key in state)
