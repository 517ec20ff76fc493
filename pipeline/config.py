"""Typed, validated view of `params.yaml`, the project's only configuration.

`params.yaml` holds every default (with its comment); the classes below hold none, so a key missing
from the file is an error, as is an unknown key (extra="forbid") or a value outside its allowed range
(`Field(ge=…, le=…)`, `Literal` choices). Every error is one line naming the dotted key, the value and
what is allowed: pydantic's ValidationError is translated into a ConfigError in that form
(pipeline/config_errors.py).

Why pydantic dataclasses, not BaseModel: they are stdlib dataclasses, so `dataclasses.replace` (used to
derive a trial's or a stage's config), `fields` and `asdict` keep working, and a replaced config is
validated too. Why strict scalars: YAML already gives typed values, and pydantic's lax mode would accept
what a typo most likely means otherwise ("3" or 3.0 as an integer, 1 or "yes" as a boolean, a tuple as
a list); an integer is still a valid float (YAML reads `1` as an int) and is stored as a float.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from pipeline import artifacts
from pipeline.config_errors import describe_first, internal_fields, renamed_key, unknown_key
from pipeline.constants import AblationRow  # the rows of paper Table 3, one more term per row
from pipeline.errors import InputError

PARAMS_FILE = "params.yaml"

# Keys params.yaml had under an earlier name: the old name is refused in one line that names the new one
# (docs/decisions.md). Old dotted key → new dotted key.
RENAMED_KEYS = {
    # Only pseudo_label's BatchNorm re-estimation (AdaBN) reads it; evaluation scores one image at a time.
    "evaluate.batch_size": "evaluate.bn_reestimation_batch_size",
}


class ConfigError(InputError, ValueError):
    """A params.yaml value that cannot be used; the message names the key."""


EXACT_KEYS = ConfigDict(extra="forbid")  # every section: an unknown key is an error
T = TypeVar("T")
StrictList = Annotated[list[T], Strict()]  # a YAML list; a tuple is refused, as lax mode would convert it
NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]


def _yaml_number(value: Any) -> Any:
    # Strict float still takes anything with __float__ (a numpy bool, a Decimal): a number is an int or
    # a float, never a bool, as YAML gives it.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


Number = Annotated[float, BeforeValidator(_yaml_number)]  # an int arrives as a float: 1 → 1.0

# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True, config=EXACT_KEYS)
class ImageSize:
    height: Annotated[StrictInt, Field(ge=8)]
    width: Annotated[StrictInt, Field(ge=8)]

    def as_tuple(self) -> tuple[int, int]:
        return (self.height, self.width)


@dataclass(frozen=True, config=EXACT_KEYS)
class SourceData:
    name: Literal["gta5", "synthia"]
    root: NonEmptyStr


@dataclass(frozen=True, config=EXACT_KEYS)
class TargetData:
    name: Literal["cityscapes"]
    root: NonEmptyStr


@dataclass(frozen=True, config=EXACT_KEYS)
class SyntheticSource:
    count: Annotated[StrictInt, Field(ge=1)]
    height: Annotated[StrictInt, Field(ge=32)]
    width: Annotated[StrictInt, Field(ge=32)]


@dataclass(frozen=True, config=EXACT_KEYS)
class SyntheticTarget:
    train_count: Annotated[StrictInt, Field(ge=1)]
    val_count: Annotated[StrictInt, Field(ge=1)]
    height: Annotated[StrictInt, Field(ge=32)]
    width: Annotated[StrictInt, Field(ge=32)]
    train_cities: Annotated[StrictList[NonEmptyStr], Field(min_length=1)]
    val_cities: Annotated[StrictList[NonEmptyStr], Field(min_length=1)]


@dataclass(frozen=True, config=EXACT_KEYS)
class SyntheticData:
    enabled: StrictBool
    root: NonEmptyStr
    seed: Annotated[StrictInt, Field(ge=0)]
    samples_per_task: Annotated[StrictInt, Field(ge=1)]
    gta5: SyntheticSource
    synthia: SyntheticSource
    cityscapes: SyntheticTarget


@dataclass(frozen=True, config=EXACT_KEYS)
class DataConfig:
    source: SourceData
    target: TargetData
    synthetic: SyntheticData


@dataclass(frozen=True, config=EXACT_KEYS)
class PreprocessConfig:
    source_size: ImageSize
    target_size: ImageSize
    full_resolution_val_labels: StrictBool
    image_interpolation: Literal["bilinear", "bicubic"]
    image_format: Literal["png", "jpeg"]
    jpeg_quality: Annotated[StrictInt, Field(ge=1, le=100)]
    rows_per_shard: Annotated[StrictInt, Field(ge=1)]
    rows_per_row_group: Annotated[StrictInt, Field(ge=1)]
    on_corrupt: Literal["error", "skip"]
    unknown_label_ids: Literal["error", "ignore"]


# ----------------------------------------------------------------------------------- model / train


# model.backbone's values and the number of stages model.freeze_stages counts in each (pipeline/models:
# ResNet conv1+bn1, layer1..layer4; EfficientNet-Lite stem, its 7 block groups, head). Checked against the
# models by tests/test_efficientnet.py.
BACKBONE_STAGES: dict[str, int] = {
    "resnet": 5,
    "efficientnet_lite0": 9,
    "efficientnet_lite1": 9,
    "efficientnet_lite2": 9,
}
Backbone = Literal[tuple(BACKBONE_STAGES)]  # type: ignore[valid-type]  # Literal["resnet", …]


@dataclass(frozen=True, config=EXACT_KEYS)
class ModelConfig:
    backbone: Backbone
    depth: Literal[18, 34, 50, 101]  # ResNet only
    width: Annotated[Number, Field(gt=0, le=4)]  # ResNet only
    output_stride: Literal[8, 16, 32]
    frozen_bn: StrictBool
    stride_in_1x1: StrictBool  # ResNet only
    freeze_stages: Annotated[StrictInt, Field(ge=0)]
    embedding: Literal["aspp_concat", "projection"]
    projection_dim: Annotated[StrictInt, Field(ge=2)]
    target_stem: StrictBool
    pretrained: NonEmptyStr | None  # a file, or "imagenet" (EfficientNet-Lite's packaged weights)


@dataclass(frozen=True, config=EXACT_KEYS)
class OptimConfig:
    lr: Annotated[Number, Field(gt=0)]
    head_lr_multiplier: Annotated[Number, Field(gt=0)]
    momentum: Annotated[Number, Field(ge=0, lt=1)]
    weight_decay: Annotated[Number, Field(ge=0)]
    poly_power: Annotated[Number, Field(ge=0)]


@dataclass(frozen=True, config=EXACT_KEYS)
class TrainConfig:
    batch_size: Annotated[StrictInt, Field(ge=1)]
    crop: ImageSize
    scale_range: Annotated[StrictList[Number], Field(min_length=2)]
    flip: StrictBool
    optim: OptimConfig
    loader_workers: Annotated[StrictInt, Field(ge=0)]
    log_every: Annotated[StrictInt, Field(ge=1)]
    checkpoint_every: Annotated[StrictInt, Field(ge=1)]
    precision: Literal["fp32", "bf16"]
    channels_last: StrictBool
    compile: StrictBool


@dataclass(frozen=True, config=EXACT_KEYS)
class WarmupConfig:
    steps: Annotated[StrictInt, Field(ge=1)]
    oracle: StrictBool


@dataclass(frozen=True, config=EXACT_KEYS)
class CbstConfig:
    portion: Annotated[Number, Field(gt=0, le=1)]
    scales: Annotated[
        StrictList[Annotated[Number, Field(gt=0)]], Field(min_length=1)
    ]  # as predict's --scales
    flip: StrictBool
    histogram_bins: Annotated[StrictInt, Field(ge=10)]
    portion_step: Annotated[Number, Field(ge=0, le=1)]
    portion_max: Annotated[Number, Field(gt=0, le=1)]


@dataclass(frozen=True, config=EXACT_KEYS)
class AdaptConfig:
    steps: Annotated[StrictInt, Field(ge=1)]
    lr: Annotated[Number, Field(gt=0)]
    tau: Annotated[Number, Field(gt=0)]
    ema_momentum: Annotated[Number, Field(ge=0, lt=1)]
    threshold: Annotated[Number, Field(ge=-1, le=1)]
    weight_target: Annotated[Number, Field(ge=0)]
    weight_fc: Annotated[Number, Field(ge=0)]
    weight_bc: Annotated[Number, Field(ge=0)]
    rounds: Annotated[StrictInt, Field(ge=1)]
    bn_statistics: Literal["frozen", "batch", "per_domain"]
    bn_affine: Literal["train", "frozen"]
    target_ce_labels: Literal["static", "hybrid"]
    memory_init: Literal["first", "zero"]


@dataclass(frozen=True, config=EXACT_KEYS)
class AblationConfig:
    rows: Annotated[StrictList[AblationRow], Field(min_length=1)]
    seeds: Annotated[StrictList[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]  # each one a `seed`


SweptAxis = Literal["tau", "ema_momentum", "threshold"]  # the adapt.* keys a sweep searches over
SWEPT_AXES: tuple[str, ...] = typing.get_args(SweptAxis)


@dataclass(frozen=True, config=EXACT_KEYS)
class SweepSpace:
    tau: Annotated[StrictList[Number], Field(min_length=1)]
    ema_momentum: Annotated[StrictList[Number], Field(min_length=1)]
    threshold: Annotated[StrictList[Number], Field(min_length=1)]


@dataclass(frozen=True, config=EXACT_KEYS)
class AshaConfig:
    grace_period: Annotated[StrictInt, Field(ge=1)]
    reduction_factor: Annotated[Number, Field(gt=1)]


@dataclass(frozen=True, config=EXACT_KEYS)
class SweepConfig:
    row: AblationRow
    search: Literal["grid", "random"]
    num_samples: Annotated[StrictInt, Field(ge=1)]
    space: SweepSpace
    log_scale: StrictList[SweptAxis]
    scheduler: Literal["fifo", "asha"]
    asha: AshaConfig
    steps: Annotated[StrictInt, Field(ge=1)]
    eval_every: Annotated[StrictInt, Field(ge=1)]
    metric: Literal["miou", "pixel_accuracy"]
    selection_labels: Literal["pseudo", "oracle"]
    holdout_fraction: Annotated[Number, Field(gt=0, lt=1)]
    max_concurrent_trials: Annotated[StrictInt, Field(ge=1)]
    cpus_per_worker: Annotated[Number, Field(gt=0)]
    time_budget_minutes: Annotated[Number, Field(ge=0)]


@dataclass(frozen=True, config=EXACT_KEYS)
class DistributedConfig:
    num_workers: Annotated[StrictInt, Field(ge=1)]
    use_gpu: StrictBool
    cpus_per_worker: Annotated[Number, Field(gt=0)]
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]
    max_failures: Annotated[StrictInt, Field(ge=0)]
    storage: NonEmptyStr


@dataclass(frozen=True, config=EXACT_KEYS)
class TrackingConfig:
    enabled: StrictBool
    uri: NonEmptyStr
    experiment: NonEmptyStr
    required: StrictBool


@dataclass(frozen=True, config=EXACT_KEYS)
class EvaluateConfig:
    bn_reestimation_batch_size: Annotated[StrictInt, Field(ge=1)]
    panel_images: Annotated[StrictInt, Field(ge=0)]
    alignment_source_images: Annotated[StrictInt, Field(ge=0)]


@dataclass(frozen=True, config=EXACT_KEYS)
class InferenceConfig:
    """Where the stages that run a trained model run it (labelling, BatchNorm re-estimation, evaluation,
    `predict`): Ray tasks on CPUs (0) or with a share of a GPU each."""

    gpus_per_task: Annotated[Number, Field(ge=0, le=1)]
    batch_size: Annotated[StrictInt, Field(ge=1)]


# ------------------------------------------------------------------------------------------- whole


@dataclass(frozen=True, config=EXACT_KEYS)
class Config:
    name: NonEmptyStr
    seed: Annotated[StrictInt, Field(ge=0)]
    data: DataConfig
    preprocess: PreprocessConfig
    model: ModelConfig
    train: TrainConfig
    warmup: WarmupConfig
    cbst: CbstConfig
    adapt: AdaptConfig
    ablation: AblationConfig
    sweep: SweepConfig
    distributed: DistributedConfig
    tracking: TrackingConfig
    evaluate: EvaluateConfig
    inference: InferenceConfig
    # Directory holding params.yaml; relative paths in the file are relative to it.
    project_root: Path = dataclasses.field(default=Path("."), metadata={"internal": True})

    def resolve(self, path: str | Path) -> Path:
        """Absolute path for a params path (Ray moves working directories, so never pass relatives)."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else (self.project_root / path).resolve()

    @property
    def storage_path(self) -> str:
        """Ray Train / Tune storage: a URI (s3://, gs://, file://, any scheme pyarrow.fs knows) as given,
        else an absolute path resolved against the project."""
        storage = self.distributed.storage
        return storage if "://" in storage else str(self.resolve(storage))

    @property
    def source_root(self) -> Path:
        """Where the source dataset is read: the synthetic copy when enabled, else data.source.root."""
        if self.data.synthetic.enabled:
            return self.resolve(self.data.synthetic.root) / self.data.source.name
        return self.resolve(self.data.source.root)

    @property
    def target_root(self) -> Path:
        if self.data.synthetic.enabled:
            return self.resolve(self.data.synthetic.root) / self.data.target.name
        return self.resolve(self.data.target.root)

    @property
    def shards_root(self) -> Path:
        return self.resolve(artifacts.SHARDS)

    @property
    def tracking_uri(self) -> str:
        """tracking.uri with a relative sqlite path made absolute (Ray moves working directories)."""
        uri = self.tracking.uri
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
            return prefix + str(self.resolve(uri[len(prefix) :]))
        return uri


# --------------------------------------------------------------------------------------- loading

_CONFIG_ADAPTER = TypeAdapter(Config)  # validates the whole mapping a params.yaml holds


def load_config(path: str | Path = PARAMS_FILE, overrides: dict[str, Any] | None = None) -> Config:
    """Read params.yaml, apply dotted-key overrides (tests, sweeps), validate, return a Config."""
    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (run from the project root or pass its path)") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    return config_from_dict(raw, project_root=path.parent, source=path.name)


def config_from_dict(raw: dict[str, Any], project_root: Path, source: str = PARAMS_FILE) -> Config:
    """Validate the mapping a params.yaml holds; relative paths in it resolve against `project_root`."""
    renamed = [old for old in RENAMED_KEYS if _holds(raw, old)]
    if renamed:
        raise ConfigError(f"{source}: {renamed_key(renamed[0], RENAMED_KEYS[renamed[0]])}")
    # project_root is where the file lies, never a key of it (pydantic would take it: it has a default).
    internal = [key for key in internal_fields(Config) if isinstance(raw, dict) and key in raw]
    if internal:
        raise ConfigError(f"{source}: {unknown_key(Config, internal[0], prefix='')}")
    try:
        config = _CONFIG_ADAPTER.validate_python(raw)
    except ValidationError as error:
        raise ConfigError(f"{source}: {describe_first(error, Config)}") from None
    config = dataclasses.replace(config, project_root=project_root)
    _check_consistency(config, source)
    return config


def _check_consistency(config: Config, source: str) -> None:
    """Rules that tie several keys together."""
    train, pre = config.train, config.preprocess
    low, high, *extra = train.scale_range
    if extra or not 0 < low <= high:
        raise ConfigError(
            f"{source}: train.scale_range = {train.scale_range!r} must be [low, high] with 0 < low ≤ high"
        )
    for name, size in (("source_size", pre.source_size), ("target_size", pre.target_size)):
        if train.crop.height > size.height * high or train.crop.width > size.width * high:
            raise ConfigError(
                f"{source}: train.crop = {train.crop.height}×{train.crop.width} is larger than "
                f"preprocess.{name} "
                f"{size.height}×{size.width} at the largest scale {high} (allowed: crop ≤ image × scale)"
            )
    if config.cbst.portion_max < config.cbst.portion:
        raise ConfigError(
            f"{source}: cbst.portion_max = {config.cbst.portion_max} must be ≥ cbst.portion = "
            f"{config.cbst.portion} (the cap of the portion grown per round)"
        )
    if config.adapt.bn_statistics in ("batch", "per_domain") and config.model.frozen_bn:
        raise ConfigError(
            f"{source}: adapt.bn_statistics = {config.adapt.bn_statistics} needs model.frozen_bn = false "
            "(it normalises with batch statistics or keeps target running statistics; a frozen BatchNorm "
            "has neither)"
        )
    _check_model(config.model, source)
    _check_sweep(config, source)
    if train.batch_size % config.distributed.num_workers:
        raise ConfigError(
            f"{source}: train.batch_size = {train.batch_size} must be a multiple of "
            f"distributed.num_workers = "
            f"{config.distributed.num_workers} (the global batch is split evenly across workers)"
        )


def _check_model(model: ModelConfig, source: str) -> None:
    """Combinations of model keys that cannot be built (pipeline/models/factory.py refuses them too)."""
    if model.backbone != "resnet":
        for key in ("stride_in_1x1", "target_stem"):
            if getattr(model, key):
                raise ConfigError(
                    f"{source}: model.{key} = true needs model.backbone = resnet (model.backbone = "
                    f"{model.backbone}; set model.{key}: false)"
                )
    stages = BACKBONE_STAGES[model.backbone]
    if model.freeze_stages > stages:
        raise ConfigError(
            f"{source}: model.freeze_stages = {model.freeze_stages} is out of range for model.backbone = "
            f"{model.backbone} (allowed: 0 to {stages}, its number of stages)"
        )
    if model.target_stem and model.freeze_stages:
        raise ConfigError(
            f"{source}: model.target_stem = true needs model.freeze_stages = 0 (model.freeze_stages = "
            f"{model.freeze_stages}; the target copy of the stem would not be frozen)"
        )
    if model.pretrained == "imagenet" and model.backbone == "resnet":
        raise ConfigError(
            f"{source}: model.pretrained = imagenet names packaged EfficientNet-Lite weights; with "
            "model.backbone = resnet give a local weights file (docs/datasets.md, Pretrained weights)"
        )


def _check_sweep(config: Config, source: str) -> None:
    """Every swept value must be a valid value of its adapt.* key; budgets must fit the trial."""
    sweep = config.sweep
    for axis in SWEPT_AXES:
        for index, value in enumerate(getattr(sweep.space, axis)):
            try:  # AdaptConfig validates the value as it would in params' adapt section
                dataclasses.replace(config.adapt, **{axis: value})
            except ValidationError as error:
                key = f"sweep.space.{axis}[{index}] (a value of adapt.{axis})"
                raise ConfigError(f"{source}: {describe_first(error, AdaptConfig, key)}") from None
    for axis in sweep.log_scale:
        if min(getattr(sweep.space, axis)) <= 0:
            raise ConfigError(f"{source}: sweep.log_scale lists {axis}, whose values must then all be > 0")
    for key in ("eval_every", "asha.grace_period"):
        value = sweep.eval_every if key == "eval_every" else sweep.asha.grace_period
        if value > sweep.steps:
            raise ConfigError(f"{source}: sweep.{key} = {value} must be ≤ sweep.steps = {sweep.steps}")


def _holds(tree: Any, dotted_key: str) -> bool:
    """Whether a nested dict has the key `a.b.c`."""
    for part in dotted_key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict; the path must already exist so typos fail loudly."""
    if dotted_key in RENAMED_KEYS:
        raise ConfigError(f"override {dotted_key!r}: {renamed_key(dotted_key, RENAMED_KEYS[dotted_key])}")
    *parents, leaf = dotted_key.split(".")
    node = tree
    for depth, part in enumerate(parents):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"override {dotted_key!r}: no key {'.'.join(parents[: depth + 1])!r}")
        node = node[part]
    if not isinstance(node, dict) or leaf not in node:
        raise ConfigError(f"override {dotted_key!r}: no such key in params")
    node[leaf] = value


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-name view of a config (what MLflow logs as params: `adapt.tau`)."""
    flat: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        if item.metadata.get("internal"):
            continue
        value = getattr(config, item.name)
        key = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            flat.update(flatten(value, prefix=f"{key}."))
        else:
            flat[key] = value
    return flat


def to_params(config: Any) -> dict[str, Any]:
    """The nested mapping a params.yaml holds for `config` (tuples as lists): `config_from_dict` of it
    gives `config` back. Written beside each adapted model in MLflow, so the model can be rebuilt."""
    nested: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        if item.metadata.get("internal"):
            continue
        value = getattr(config, item.name)
        nested[item.name] = to_params(value) if dataclasses.is_dataclass(value) else _plain(value)
    return nested


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value
