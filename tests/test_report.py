"""The `report` stage's pseudo-label tables: Table 4 (with the share on ignore ground truth), Table 4 at
matched density and the per-class view, from the cells' metrics files, averaged over seeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from test_evaluation import assert_png

from pipeline.config import config_from_dict
from pipeline.constants import CLASS_NAMES, LABEL_KINDS, NUM_CLASSES
from pipeline.evaluation.coverage import label_coverage
from pipeline.evaluation.report import NOT_ROWS
from pipeline.pseudo_labels.diagnostics import (
    cosine_histogram,
    label_counts,
    matched_density_accuracy,
    summarise_label_counts,
)
from stages.report import report

ROOT = Path(__file__).resolve().parents[1]


def cell_metrics(correct_share: float) -> dict:
    """A cell's metrics file as `adapt` writes it, from labels that are right on `correct_share` of
    the road pixels they cover."""
    truth = torch.zeros(100, dtype=torch.long)  # all road ...
    truth[80:] = 255  # ... with 20 ignore pixels
    labels = torch.full((100,), 255)
    labels[:40] = 0
    labels[40:50] = 1  # 10 wrong (sidewalk)
    labels[int(40 * correct_share) : 40] = 1
    labels[90:] = 0  # 10 on ignore ground truth
    summary = summarise_label_counts(label_counts(labels, truth, NUM_CLASSES), CLASS_NAMES)
    best = torch.linspace(-0.5, 0.95, 100)
    histogram = cosine_histogram(best, torch.zeros(100, dtype=torch.long), truth, bins=100)
    return {
        "pseudo_labels": dict.fromkeys(LABEL_KINDS, summary),
        "pseudo_labels_matched_density": {
            kind: matched_density_accuracy(histogram, summary["density"])
            for kind in ("dynamic_nocal", "dynamic_cal")
        },
    }


def test_report_writes_the_label_tables_plot_and_rows(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["ablation"] |= {"rows": ["dass"], "seeds": [0, 1]}
    config = config_from_dict(raw, project_root=tmp_path)
    (tmp_path / "metrics" / "adapt").mkdir(parents=True)
    evaluation = {"source_only": {"miou": 10.0, "per_class_iou": dict.fromkeys(CLASS_NAMES, 10.0)}}
    for seed, share in ((0, 1.0), (1, 0.5)):
        (tmp_path / "metrics" / "adapt" / f"dass_seed{seed}.json").write_text(json.dumps(cell_metrics(share)))
        evaluation[f"dass_seed{seed}"] = {
            "miou": 20.0 + seed,
            "per_class_iou": dict.fromkeys(CLASS_NAMES, 20.0),
        }
    (tmp_path / "metrics" / "evaluate.json").write_text(json.dumps(evaluation))
    static = {name: {"precision": 90.0, "recall": 0.0 if name == "car" else 20.0} for name in CLASS_NAMES}
    coverage = label_coverage(static, dict.fromkeys(CLASS_NAMES, 30.0))
    (tmp_path / "metrics" / "label_coverage.json").write_text(json.dumps(coverage))

    table = report(config)

    assert [name for name in table if name not in NOT_ROWS] == ["source_only", "dass"]
    static = table["pseudo_labels"]["static"]
    # 50 of 80 valid pixels labelled; seed 0: 40 of 50 right, seed 1: 20 of 50; 10 of 60 labels on ignore.
    assert static == {"density": 62.5, "accuracy": 60.0, "density_all_pixels": 60.0, "on_ignore_truth": 16.67}
    road = table["pseudo_labels_per_class"]["hybrid"]["road"]
    assert road == {"precision": 100.0, "recall": 37.5}  # precision 40/40, 20/20; recall 40/80, 20/80
    assert table["pseudo_labels_per_class"]["static"]["sidewalk"] == {"precision": 0.0, "recall": None}
    matched = table["pseudo_labels_matched_density"]["dynamic_cal"]
    assert matched["density"] >= 62.5 and matched["accuracy"] == 100.0
    text = (tmp_path / "reports" / "ablation.md").read_text()
    assert "| Static (CBST) | 62.5 | 60.0 | 60.0 | 16.7 |" in text
    assert "At matched density" in text and "| road | 100.0 / 37.5 |" in text
    assert "reach 18 of the 19 learnable classes; missed: car." in text
    rows = json.loads((tmp_path / "reports" / "pseudo_labels_per_class.json").read_text())
    assert {"labels": "hybrid", "class": "road", "precision": 100.0, "recall": 37.5} in rows
    assert_png(tmp_path / "reports" / "pseudo_labels_per_class.png", min_bytes=5_000)
    assert (
        json.loads((tmp_path / "metrics" / "ablation.json").read_text())["pseudo_labels"]["static"] == static
    )


def test_synthia_report_gives_mIoU_16_and_13_each_with_its_own_seed_spread(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["source"]["name"] = "synthia"
    raw["ablation"] |= {"rows": ["base"], "seeds": [0, 1]}
    config = config_from_dict(raw, project_root=tmp_path)
    (tmp_path / "metrics" / "adapt").mkdir(parents=True)
    evaluation = {}
    for seed in (0, 1):
        (tmp_path / "metrics" / "adapt" / f"base_seed{seed}.json").write_text(json.dumps(cell_metrics(1.0)))
        evaluation[f"base_seed{seed}"] = {
            "miou": 20.0 + 2 * seed,  # the headline, mIoU-16
            "miou19": 18.0,
            "miou16": 20.0 + 2 * seed,
            "miou13": 30.0 + 4 * seed,
            "per_class_iou": dict.fromkeys(CLASS_NAMES, 20.0),
        }
    (tmp_path / "metrics" / "evaluate.json").write_text(json.dumps(evaluation))

    table = report(config)

    base = table["base"]
    assert (base["miou16"], base["miou13"]) == (21.0, 32.0)
    assert base["miou13_std"] == round(2 * 2**0.5, 2)  # sample std of 30 and 34
    text = (tmp_path / "reports" / "ablation.md").read_text()
    assert "| row | mIoU-16 | mIoU-13 | seeds |" in text
    assert "| L_base | 21.00 ± 1.41 | 32.00 ± 2.83 | 2 |" in text


def test_the_report_stage_does_not_load_torch():
    # It reads JSON and draws figures; importing torch would add seconds to every `dvc repro` of it.
    probe = "import sys, stages.report; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
