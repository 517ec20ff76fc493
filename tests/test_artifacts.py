"""pipeline/artifacts.py and dvc.yaml name the same outputs, stage by stage."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline import artifacts

ROOT = Path(__file__).resolve().parents[1]


def declared_outputs(stage: dict) -> set[str]:
    """The paths of a dvc.yaml stage's `outs` and `metrics` (a path with options is a one-key mapping)."""
    paths = set()
    for kind in ("outs", "metrics", "plots"):
        for entry in stage.get(kind, []):
            paths.add(entry if isinstance(entry, str) else next(iter(entry)))
    return paths


def test_every_dvc_output_is_spelled_in_artifacts_and_nowhere_else():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(artifacts.STAGE_OUTPUTS)
    for name, stage in stages.items():
        assert declared_outputs(stage) == set(artifacts.STAGE_OUTPUTS[name]), name


def test_cell_paths_follow_the_cell_name():
    assert artifacts.cell_model("dass", 2) == "models/adapt/dass_seed2.pt"
    assert artifacts.cell_metrics("base", 0) == "metrics/adapt/base_seed0.json"
