"""A throw-away git + DVC copy of the project with params shrunk to CPU-test size."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("params.yaml", "dvc.yaml", "pyproject.toml")
PROJECT_DIRS = ("pipeline", "stages")

# Small enough for seconds, large enough that every stage does real work.
TINY_PARAMS = {
    "data.synthetic.gta5.count": 6,
    "data.synthetic.gta5.height": 72,
    "data.synthetic.gta5.width": 128,
    "data.synthetic.synthia.count": 4,
    "data.synthetic.synthia.height": 76,
    "data.synthetic.synthia.width": 128,
    "data.synthetic.cityscapes.train_count": 6,
    "data.synthetic.cityscapes.val_count": 4,
    "data.synthetic.cityscapes.height": 64,
    "data.synthetic.cityscapes.width": 128,
    "data.synthetic.samples_per_task": 3,
    "preprocess.source_size.height": 36,
    "preprocess.source_size.width": 64,
    "preprocess.target_size.height": 32,
    "preprocess.target_size.width": 64,
    "preprocess.rows_per_shard": 4,
    "preprocess.rows_per_row_group": 2,
    "model.width": 0.125,
    "train.batch_size": 2,
    "train.crop.height": 32,
    "train.crop.width": 48,
    "train.log_every": 1,
    "train.checkpoint_every": 2,
    "train.loader_workers": 0,
    "warmup.steps": 2,
    "distributed.cpus_per_worker": 1,
    "evaluate.panel_images": 2,
    "adapt.steps": 2,
    "adapt.threshold": 0.0,
    # The first and the last row: the matrix of cells, static-only and dynamic labels; every row's
    # switches are tested in test_adaptation_distributed.py without DVC.
    "ablation.rows": ["base", "dass"],
    # A grid of two trials side by side (the default), scored with oracle labels on the held-out slice, as a
    # cluster runs them: since issue 37 no trial's placement group outlives its trial
    # (pipeline/distributed/placement.py, tests/test_nothing_left.py); one after another is test_sweep.py's.
    "sweep.max_concurrent_trials": 2,
    "sweep.search": "grid",
    "sweep.num_samples": 1,
    "sweep.space.tau": [0.1],
    "sweep.space.ema_momentum": [0.5, 0.99],
    "sweep.space.threshold": [0.0],
    "sweep.selection_labels": "oracle",
    "sweep.steps": 4,
    "sweep.eval_every": 2,
    "sweep.asha.grace_period": 2,
    "sweep.holdout_fraction": 0.34,  # 1 of the 3 row groups of target train
}


def set_params(path: Path, values: dict[str, object]) -> None:
    """Rewrite params.yaml with dotted-key values (comments are lost; fine for a test copy)."""
    raw = yaml.safe_load(path.read_text())
    for dotted, value in values.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        assert leaf in node, dotted
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    # (Ray Train's faster worker poll, RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, comes from tests/conftest.py.)
    env |= {"DVC_NO_ANALYTICS": "1", "RAY_USAGE_STATS_ENABLED": "0", "GIT_AUTHOR_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.invalid", "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.invalid"}  # fmt: skip
    return env


def run(command: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:  # fmt: skip
    result = subprocess.run(command, cwd=cwd, env=env or environment(), capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def make_project(destination: Path, params: dict[str, object] | None = None) -> Path:
    """Copy the project into `destination`, shrink its params, `git init` + `dvc init`, commit."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, destination / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
    set_params(destination / "params.yaml", TINY_PARAMS | (params or {}))
    run(["git", "init", "-q"], destination)
    run(["dvc", "init", "-q"], destination)
    shutil.copytree(ROOT / ".dvc" / "plots", destination / ".dvc" / "plots")  # custom plot templates
    run(["git", "add", "-A"], destination)
    run(["git", "commit", "-q", "-m", "test project"], destination)
    return destination


def dvc(project: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:  # fmt: skip
    """`dvc <args>` in `project`; `env` (e.g. a Ray head's `driver_env`) replaces the default environment."""
    return run(["dvc", *args], project, check=check, env=env, timeout=timeout)
