"""benchmarks/gpu_check.py on the CPU (`--device cpu --quick`): every part of the GPU check runs in CI, in a
process where Ray, MLflow and DVC cannot be imported, as on the GPU machine."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# As on the GPU machine: importing any of these fails (a None entry in sys.modules makes `import` raise).
WITHOUT = ("ray", "mlflow", "dvc")


@pytest.mark.slow
def test_gpu_check_runs_every_part_on_cpu_without_ray_mlflow_or_dvc(tmp_path):
    out = tmp_path / "gpu_check.json"
    code = "\n".join([
        "import sys",
        f"sys.modules.update(dict.fromkeys({WITHOUT!r}))",
        "from benchmarks.gpu_check import main",
        f"raise SystemExit(main(['--device', 'cpu', '--quick', '--out', {str(out)!r}]))",
    ])  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["in_process"] and not any(report["environment"]["installed"][name] for name in WITHOUT)
    assert report["not_meaningful"] and report["fit"] == {"skipped": report["not_meaningful"]}
    for precision in ("fp32", "bf16", "bf16 + channels_last"):
        assert report["steps"][f"{precision} base"]["images_per_s"] > 0
        assert report["steps"][f"{precision} dass/base"] > 0
    adaptation = report["adaptation"]
    assert adaptation["losses_finite"] and adaptation["steps"] == 4 and adaptation["checkpoints"] == 2
    # A sweep trial's held-out score at each checkpoint: the confusion matrix went through all_reduce_sum.
    assert len(adaptation["holdout"]) == 2 and all(
        0 <= entry["holdout.miou"] <= 100 for entry in adaptation["holdout"]
    )
    read_back = adaptation["read_back"]
    assert read_back["step"] == 4 and read_back["memory_devices"] == ["cpu"]
    assert math.isfinite(read_back["loss_after_reload"]) and read_back["classes_seen"]["source"] > 0
    inference = report["inference"]
    assert (
        inference["images"] == 4
        and inference["evaluate_images_per_s"] > 0
        and inference["cbst_label_images_per_s"] > 0
    )
    # The stages' own labelling and scoring functions, in GPU-sized batches (inference.batch_size).
    stages = report["stage_inference"]
    assert stages["batch_size"] > 1 and stages["labelled_images"] == 8 and stages["evaluated_images"] == 4
    assert stages["labelling_images_per_s"] > 0 and stages["evaluation_images_per_s"] > 0
    assert 0 <= stages["miou"] <= 100
    # The same steps twice from the same start on a CPU give the same weights, bit for bit.
    assert report["repeatability"]["largest_weight_difference"] == 0.0
