"""params.yaml loads into typed objects; every bad value names its key and what is allowed."""

from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, config_from_dict, flatten, load_config

ROOT = Path(__file__).resolve().parents[1]


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def flatten_dict(raw: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_project_params_load():
    """The shipped params.yaml loads; every leaf value arrives unchanged; paths resolve in the project."""
    config = load_config(ROOT / "params.yaml")
    raw = raw_params()
    loaded = flatten(config)
    for key, value in flatten_dict(raw).items():
        got = list(loaded[key]) if isinstance(loaded[key], tuple) else loaded[key]
        assert got == value, f"{key}: params.yaml has {value!r}, the config {loaded[key]!r}"
    synthetic = ROOT / raw["data"]["synthetic"]["root"]
    if raw["data"]["synthetic"]["enabled"]:
        assert config.source_root == synthetic.resolve() / raw["data"]["source"]["name"]
        assert config.target_root == synthetic.resolve() / raw["data"]["target"]["name"]
    assert config.shards_root == (ROOT / "data" / "shards").resolve()


@pytest.mark.parametrize(
    "storage, expected",
    [("ray_results", "/project/ray_results"), ("/shared/runs", "/shared/runs"),
     ("s3://bucket/dass", "s3://bucket/dass"), ("file:///shared/runs", "file:///shared/runs")],
)  # fmt: skip
def test_storage_path_resolves_paths_and_keeps_uris(storage, expected):
    raw = raw_params()
    raw["distributed"]["storage"] = storage
    assert config_from_dict(raw, project_root=Path("/project")).storage_path == expected


def test_every_params_key_has_a_comment():
    """Each leaf key carries an inline comment or sits right below a comment line."""
    lines = (ROOT / "params.yaml").read_text().splitlines()
    uncommented = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue  # blank, comment, or a section heading
        previous = lines[number - 1].strip() if number else ""
        if "#" not in line and not previous.startswith("#"):
            uncommented.append(stripped)
    assert not uncommented, f"params.yaml keys without a comment: {uncommented}"


def test_flatten_gives_dotted_names():
    flat = flatten(load_config(ROOT / "params.yaml"))
    assert flat["preprocess.rows_per_shard"] >= 1
    assert "data.synthetic.cityscapes.train_cities" in flat
    assert "project_root" not in flat


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "preprocess.jpeg_quality",
            0,
            "preprocess.jpeg_quality = 0 is out of range (allowed: ≥ 1 and ≤ 100)",
        ),
        ("preprocess.rows_per_shard", 0, "preprocess.rows_per_shard = 0 is out of range (allowed: ≥ 1)"),
        (
            "preprocess.on_corrupt",
            "warn",
            "preprocess.on_corrupt = 'warn' is not allowed (one of: error | skip)",
        ),
        ("data.source.name", "kitti", "data.source.name = 'kitti' is not allowed (one of: gta5 | synthia)"),
        ("data.synthetic.enabled", "yes", "data.synthetic.enabled = 'yes' must be true or false"),
        ("seed", -1, "seed = -1 is out of range"),
        ("seed", 1.5, "seed = 1.5 must be an integer"),
        ("data.synthetic.cityscapes.val_cities", [], "needs at least 1 item"),
        ("preprocess.source_size", [128, 256], "preprocess.source_size must be a mapping of keys"),
        ("train.crop", {"height": 1024, "width": 224}, "train.crop = 1024×224 is larger than"),
        (
            "distributed.num_workers",
            3,
            "train.batch_size = 8 must be a multiple of distributed.num_workers = 3",
        ),
        ("train.optim.momentum", 1.0, "train.optim.momentum = 1.0 is out of range (allowed: ≥ 0 and < 1)"),
        ("model.depth", 19, "model.depth = 19 is not allowed (one of: 18 | 34 | 50 | 101)"),
        ("distributed.num_workers", 0, "distributed.num_workers = 0 is out of range (allowed: ≥ 1)"),
        ("adapt.rounds", 0, "adapt.rounds = 0 is out of range (allowed: ≥ 1)"),
        (
            "adapt.bn_statistics",
            "source",
            "adapt.bn_statistics = 'source' is not allowed (one of: frozen | batch | per_domain)",
        ),
        (
            "adapt.target_ce_labels",
            "dynamic",
            "adapt.target_ce_labels = 'dynamic' is not allowed (one of: static | hybrid)",
        ),
        ("adapt.memory_init", "ones", "adapt.memory_init = 'ones' is not allowed (one of: first | zero)"),
        ("adapt.bn_affine", "yes", "adapt.bn_affine = 'yes' is not allowed (one of: train | frozen)"),
        (
            "evaluate.bn_reestimation_batch_size",
            0,
            "evaluate.bn_reestimation_batch_size = 0 is out of range (allowed: ≥ 1)",
        ),
        (
            "evaluate.alignment_source_images",
            -1,
            "evaluate.alignment_source_images = -1 is out of range (allowed: ≥ 0)",
        ),
        ("cbst.portion_max", 0.1, "cbst.portion_max = 0.1 must be ≥ cbst.portion = 0.2"),
        ("cbst.portion_step", -0.1, "cbst.portion_step = -0.1 is out of range (allowed: ≥ 0 and ≤ 1)"),
    ],
)
def test_bad_value_names_key_and_allowed(key, value, expected):
    with pytest.raises(ConfigError) as error:
        load_config(ROOT / "params.yaml", overrides={key: value})
    assert expected in str(error.value)


def test_unknown_key_in_file_is_named(tmp_path):
    raw = raw_params()
    raw["preprocess"]["rows_per_shrd"] = 3
    with pytest.raises(
        ConfigError, match=r"unknown key 'preprocess.rows_per_shrd' \(allowed under preprocess"
    ):
        config_from_dict(raw, project_root=tmp_path)


def test_missing_key_is_named(tmp_path):
    raw = raw_params()
    del raw["data"]["synthetic"]["seed"]
    with pytest.raises(ConfigError, match="missing key 'data.synthetic.seed'"):
        config_from_dict(raw, project_root=tmp_path)


def test_a_renamed_key_is_refused_naming_its_new_name(tmp_path):
    """A params.yaml written before a rename stops in one line that names the key to write instead."""
    raw = raw_params()
    raw["evaluate"]["batch_size"] = raw["evaluate"].pop("bn_reestimation_batch_size")
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw, project_root=tmp_path)
    assert str(error.value) == (
        "params.yaml: key 'evaluate.batch_size' is now 'evaluate.bn_reestimation_batch_size' "
        "(renamed; same meaning and values)"
    )
    with pytest.raises(
        ConfigError, match="'evaluate.batch_size' is now 'evaluate.bn_reestimation_batch_size'"
    ):
        load_config(ROOT / "params.yaml", overrides={"evaluate.batch_size": 2})


def test_override_of_a_key_that_does_not_exist_fails():
    with pytest.raises(ConfigError, match="no such key"):
        load_config(ROOT / "params.yaml", overrides={"preprocess.nope": 1})


def test_real_roots_used_when_synthetic_disabled(tmp_path):
    raw = raw_params()
    raw["data"]["synthetic"]["enabled"] = False
    raw["data"]["source"]["root"] = "relative/gta"
    config = config_from_dict(raw, project_root=tmp_path)
    assert config.source_root == tmp_path / "relative" / "gta"
    assert config.target_root == Path(raw["data"]["target"]["root"])


def test_invalid_yaml_names_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_paper_preset_applies_and_validates(tmp_path):
    import shutil
    import subprocess
    import sys

    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "apply_preset.py"), str(ROOT / "presets" / "paper-gta5.yaml"),
         "--params", str(params)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    config = load_config(params)
    assert (config.model.depth, config.model.stride_in_1x1, config.distributed.use_gpu) == (101, True, True)
    assert config.preprocess.source_size.as_tuple() == (720, 1280)
    assert "# ResNet depth of the DeepLabV2 backbone" in params.read_text()  # comments kept


def test_target_batchnorm_statistics_need_trainable_batchnorm():
    with pytest.raises(ConfigError, match="adapt.bn_statistics = per_domain needs model.frozen_bn = false"):
        load_config(
            ROOT / "params.yaml", overrides={"adapt.bn_statistics": "per_domain", "model.frozen_bn": True}
        )
