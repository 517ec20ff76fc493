"""Every file and folder a DVC stage writes, relative to the project root: the one place each is spelled.

`tests/test_artifacts.py` checks `STAGE_OUTPUTS` against the outs and metrics of `dvc.yaml`, so a path
changed here and not there (or the other way round) fails the suite instead of a later stage.
"""

from __future__ import annotations

# Shard folders under `Config.shards_root` (data/shards), one per split.
SOURCE = "source"
TARGET_TRAIN = "target_train"
TARGET_VAL = "target_val"
PSEUDO_STATIC = "pseudo_static"  # the static CBST labels y_F of target train, row for row
SHARDS = "data/shards"
SPLITS = (SOURCE, TARGET_TRAIN, TARGET_VAL)  # what `preprocess` writes

# synthesize: the embedded benchmark in the real datasets' layouts (data.synthetic.root's default)
RAW_DATA = "data/raw"

# warmup
WARMUP_MODEL = "models/warmup.pt"
ORACLE_FOLDER = "models/oracle"
ORACLE_MODEL = f"{ORACLE_FOLDER}/oracle.pt"
WARMUP_METRICS = "metrics/warmup.json"

# pseudo_label
LABELLER_MODEL = "models/pseudo_labeller.pt"  # the static labels come from it; adaptation starts from it
NORMALISATION_ONLY_MODEL = "models/source_only_target_bn.pt"  # warmup + target BatchNorm statistics
PSEUDO_LABEL_METRICS = "metrics/pseudo_static.json"

# evaluate
EVALUATE_METRICS = "metrics/evaluate.json"
LABEL_COVERAGE = "metrics/label_coverage.json"  # the static labels' per-class reach of learnable classes
PLOTS = "plots"

# report
ABLATION_JSON = "metrics/ablation.json"
ABLATION_MD = "reports/ablation.md"
ABLATION_PNG = "reports/ablation.png"
PER_CLASS_LABELS_PNG = "reports/pseudo_labels_per_class.png"
PER_CLASS_LABELS_JSON = "reports/pseudo_labels_per_class.json"

# sweep
SWEEP_JSON = "metrics/sweep.json"
SWEEP_MD = "reports/sweep.md"
SWEEP_PNG = "reports/sweep.png"


def cell_name(row: str, seed: int | str) -> str:
    """An ablation cell's name: its model, metrics and MLflow run are called after it."""
    return f"{row}_seed{seed}"


def trial_run_name(name: str, trial: str) -> str:
    """The MLflow run of sweep trial `trial` of the experiment called `name` (params.yaml's `name`)."""
    return f"{name}_sweep_{trial}"


CELL_MODELS = "models/adapt"
CELL_METRICS = "metrics/adapt"


def cell_model(row: str, seed: int | str) -> str:
    return f"{CELL_MODELS}/{cell_name(row, seed)}.pt"


def cell_metrics(row: str, seed: int | str) -> str:
    return f"{CELL_METRICS}/{cell_name(row, seed)}.json"


# What each stage writes (the adapt matrix in dvc.yaml's own template).
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "synthesize": (RAW_DATA,),
    "preprocess": tuple(f"{SHARDS}/{split}" for split in SPLITS),
    "warmup": (WARMUP_MODEL, ORACLE_FOLDER, WARMUP_METRICS),
    "pseudo_label": (
        f"{SHARDS}/{PSEUDO_STATIC}",
        LABELLER_MODEL,
        NORMALISATION_ONLY_MODEL,
        PSEUDO_LABEL_METRICS,
    ),
    "adapt": (cell_model("${item.row}", "${item.seed}"), cell_metrics("${item.row}", "${item.seed}")),
    "evaluate": (PLOTS, EVALUATE_METRICS, LABEL_COVERAGE),
    "report": (ABLATION_MD, ABLATION_PNG, PER_CLASS_LABELS_PNG, PER_CLASS_LABELS_JSON, ABLATION_JSON),
    "sweep": (SWEEP_MD, SWEEP_PNG, SWEEP_JSON),
}
