"""Typed, validated view of `params.yaml`, the project's only configuration.

`params.yaml` holds every default (with its comment); the dataclasses below hold none, so a key
missing from the file is an error, as is an unknown key or a value outside its allowed range. Every
error names the dotted key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import InputError

PARAMS_FILE = "params.yaml"


class ConfigError(InputError, ValueError):
    """A params.yaml value that cannot be used; the message names the key."""


def constrained(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
                lt: float | None = None, min_items: int | None = None) -> Any:  # fmt: skip
    """A required dataclass field with a numeric range (or list length) checked at load time."""
    return field(metadata={"ge": ge, "gt": gt, "le": le, "lt": lt, "min_items": min_items})


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ImageSize:
    height: int = constrained(ge=8)
    width: int = constrained(ge=8)

    def as_tuple(self) -> tuple[int, int]:
        return (self.height, self.width)


@dataclass(frozen=True)
class SourceData:
    name: Literal["gta5", "synthia"]
    root: str


@dataclass(frozen=True)
class TargetData:
    name: Literal["cityscapes"]
    root: str


@dataclass(frozen=True)
class SyntheticSource:
    count: int = constrained(ge=1)
    height: int = constrained(ge=32)
    width: int = constrained(ge=32)


@dataclass(frozen=True)
class SyntheticTarget:
    train_count: int = constrained(ge=1)
    val_count: int = constrained(ge=1)
    height: int = constrained(ge=32)
    width: int = constrained(ge=32)
    train_cities: list[str] = constrained(min_items=1)
    val_cities: list[str] = constrained(min_items=1)


@dataclass(frozen=True)
class SyntheticData:
    enabled: bool
    root: str
    seed: int = constrained(ge=0)
    samples_per_task: int = constrained(ge=1)
    gta5: SyntheticSource
    synthia: SyntheticSource
    cityscapes: SyntheticTarget


@dataclass(frozen=True)
class DataConfig:
    source: SourceData
    target: TargetData
    synthetic: SyntheticData


@dataclass(frozen=True)
class PreprocessConfig:
    source_size: ImageSize
    target_size: ImageSize
    full_resolution_val_labels: bool
    image_interpolation: Literal["bilinear", "bicubic"]
    image_format: Literal["png", "jpeg"]
    jpeg_quality: int = constrained(ge=1, le=100)
    rows_per_shard: int = constrained(ge=1)
    rows_per_row_group: int = constrained(ge=1)
    on_corrupt: Literal["error", "skip"]
    unknown_label_ids: Literal["error", "ignore"]


# ----------------------------------------------------------------------------------- model / train


@dataclass(frozen=True)
class ModelConfig:
    depth: Literal[18, 34, 50, 101]
    width: float = constrained(gt=0, le=4)
    output_stride: Literal[8, 16, 32]
    frozen_bn: bool
    stride_in_1x1: bool
    embedding: Literal["aspp_concat", "projection"]
    projection_dim: int = constrained(ge=2)
    target_stem: bool
    pretrained: str | None


@dataclass(frozen=True)
class OptimConfig:
    lr: float = constrained(gt=0)
    head_lr_multiplier: float = constrained(gt=0)
    momentum: float = constrained(ge=0, lt=1)
    weight_decay: float = constrained(ge=0)
    poly_power: float = constrained(ge=0)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = constrained(ge=1)
    crop: ImageSize
    scale_range: list[float] = constrained(min_items=2)
    flip: bool
    optim: OptimConfig
    loader_workers: int = constrained(ge=0)
    log_every: int = constrained(ge=1)
    checkpoint_every: int = constrained(ge=1)
    precision: Literal["fp32", "bf16"]
    channels_last: bool
    compile: bool


@dataclass(frozen=True)
class WarmupConfig:
    steps: int = constrained(ge=1)
    oracle: bool


@dataclass(frozen=True)
class CbstConfig:
    portion: float = constrained(gt=0, le=1)
    scales: list[float] = constrained(min_items=1)
    flip: bool
    histogram_bins: int = constrained(ge=10)
    portion_step: float = constrained(ge=0, le=1)
    portion_max: float = constrained(gt=0, le=1)


@dataclass(frozen=True)
class AdaptConfig:
    steps: int = constrained(ge=1)
    lr: float = constrained(gt=0)
    tau: float = constrained(gt=0)
    ema_momentum: float = constrained(ge=0, lt=1)
    threshold: float = constrained(ge=-1, le=1)
    weight_target: float = constrained(ge=0)
    weight_fc: float = constrained(ge=0)
    weight_bc: float = constrained(ge=0)
    rounds: int = constrained(ge=1)
    bn_statistics: Literal["frozen", "per_domain"]
    bn_affine: Literal["train", "frozen"]
    target_ce_labels: Literal["static", "hybrid"]
    memory_init: Literal["first", "zero"]


@dataclass(frozen=True)
class AblationConfig:
    rows: list[Literal["base", "fc", "fc_bc", "dyn_nocal", "dass"]] = constrained(min_items=1)
    seeds: list[int] = constrained(min_items=1)


SWEPT_AXES = ("tau", "ema_momentum", "threshold")  # the adapt.* keys a sweep searches over


@dataclass(frozen=True)
class SweepSpace:
    tau: list[float] = constrained(min_items=1)
    ema_momentum: list[float] = constrained(min_items=1)
    threshold: list[float] = constrained(min_items=1)


@dataclass(frozen=True)
class AshaConfig:
    grace_period: int = constrained(ge=1)
    reduction_factor: float = constrained(gt=1)


@dataclass(frozen=True)
class SweepConfig:
    row: Literal["base", "fc", "fc_bc", "dyn_nocal", "dass"]
    search: Literal["grid", "random"]
    num_samples: int = constrained(ge=1)
    space: SweepSpace
    log_scale: list[Literal["tau", "ema_momentum", "threshold"]]
    scheduler: Literal["fifo", "asha"]
    asha: AshaConfig
    steps: int = constrained(ge=1)
    eval_every: int = constrained(ge=1)
    metric: Literal["miou", "pixel_accuracy"]
    selection_labels: Literal["pseudo", "oracle"]
    holdout_fraction: float = constrained(gt=0, lt=1)
    max_concurrent_trials: int = constrained(ge=1)
    cpus_per_worker: float = constrained(gt=0)
    time_budget_minutes: float = constrained(ge=0)


@dataclass(frozen=True)
class DistributedConfig:
    num_workers: int = constrained(ge=1)
    use_gpu: bool
    cpus_per_worker: float = constrained(gt=0)
    max_failures: int = constrained(ge=0)
    storage: str


@dataclass(frozen=True)
class TrackingConfig:
    uri: str
    experiment: str
    required: bool


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int = constrained(ge=1)
    panel_images: int = constrained(ge=0)
    alignment_source_images: int = constrained(ge=0)


# ------------------------------------------------------------------------------------------- whole


@dataclass(frozen=True)
class Config:
    name: str
    seed: int = constrained(ge=0)
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
    # Directory holding params.yaml; relative paths in the file are relative to it.
    project_root: Path = field(default=Path("."), metadata={"internal": True})

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
        return self.resolve("data/shards")

    @property
    def tracking_uri(self) -> str:
        """tracking.uri with a relative sqlite path made absolute (Ray moves working directories)."""
        uri = self.tracking.uri
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
            return prefix + str(self.resolve(uri[len(prefix) :]))
        return uri


# --------------------------------------------------------------------------------------- loading


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
    config = dataclasses.replace(_build(Config, raw, prefix="", source=source), project_root=project_root)
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
    if config.adapt.bn_statistics == "per_domain" and config.model.frozen_bn:
        raise ConfigError(
            f"{source}: adapt.bn_statistics = per_domain needs model.frozen_bn = false "
            "(domain-specific BatchNorm keeps target running statistics; a frozen BatchNorm keeps none)"
        )
    _check_sweep(config, source)
    if train.batch_size % config.distributed.num_workers:
        raise ConfigError(
            f"{source}: train.batch_size = {train.batch_size} must be a multiple of "
            f"distributed.num_workers = "
            f"{config.distributed.num_workers} (the global batch is split evenly across workers)"
        )


def _check_sweep(config: Config, source: str) -> None:
    """Every swept value must be a valid value of its adapt.* key; budgets must fit the trial."""
    sweep = config.sweep
    limits = {item.name: item.metadata for item in dataclasses.fields(AdaptConfig)}
    for axis in SWEPT_AXES:
        for index, value in enumerate(getattr(sweep.space, axis)):
            key = f"sweep.space.{axis}[{index}] (a value of adapt.{axis})"
            _check_range(value, limits[axis], key, source)
    for axis in sweep.log_scale:
        if min(getattr(sweep.space, axis)) <= 0:
            raise ConfigError(f"{source}: sweep.log_scale lists {axis}, whose values must then all be > 0")
    for key in ("eval_every", "asha.grace_period"):
        value = sweep.eval_every if key == "eval_every" else sweep.asha.grace_period
        if value > sweep.steps:
            raise ConfigError(f"{source}: sweep.{key} = {value} must be ≤ sweep.steps = {sweep.steps}")


def set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict; the path must already exist so typos fail loudly."""
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


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where} must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    allowed = [f.name for f in fields]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"{source}: unknown key {key!r} (allowed under {where}: {', '.join(allowed)})")
    kwargs = {}
    for item in fields:
        key = f"{prefix}{item.name}"
        if item.name not in raw:
            raise ConfigError(f"{source}: missing key {key!r}")
        value = _coerce(raw[item.name], hints[item.name], key, source)
        _check_range(value, item.metadata, key, source)
        kwargs[item.name] = value
    return cls(**kwargs)


def _coerce(value: Any, annotation: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, prefix=f"{key}.", source=source)
    if origin is Literal:
        if value not in args:
            allowed = " | ".join(map(str, args))
            raise ConfigError(f"{source}: {key} = {value!r} is not allowed (one of: {allowed})")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} = {value!r} must be a list")
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} = {value!r} must be true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} = {value!r} must be an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key} = {value!r} must be a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{source}: {key} = {value!r} must be a non-empty string")
        return value
    raise TypeError(f"config field {key}: unsupported annotation {annotation!r}")


def _check_range(value: Any, rules: typing.Mapping[str, Any], key: str, source: str) -> None:
    if value is None:
        return
    bounds = [
        ("ge", lambda v, b: v >= b, "≥"),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "≤"),
        ("lt", lambda v, b: v < b, "<"),
    ]
    broken = [
        f"{symbol} {rules[name]}"
        for name, holds, symbol in bounds
        if rules.get(name) is not None and not holds(value, rules[name])
    ]
    if broken:
        allowed = " and ".join(
            f"{symbol} {rules[name]}" for name, _, symbol in bounds if rules.get(name) is not None
        )
        raise ConfigError(f"{source}: {key} = {value!r} is out of range (allowed: {allowed})")
    min_items = rules.get("min_items")
    if min_items is not None and len(value) < min_items:
        raise ConfigError(f"{source}: {key} = {value!r} needs at least {min_items} item(s)")
