"""DVC stage `report`: the ablation table from metrics/evaluate.json and the cells' metrics, as
metrics/ablation.json, reports/ablation.md and .png, and the per-class pseudo-label quality (a DVC plot)."""

from __future__ import annotations

import json
from typing import Any

from pipeline import artifacts
from pipeline.atomic import atomic_path, write_json_atomic
from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.evaluation.plots import write_plot_rows
from pipeline.evaluation.report import build_ablation, markdown, per_class_plot, per_class_plot_rows, plot


def report(config: Config) -> dict[str, Any]:
    evaluation = json.loads(config.resolve(artifacts.EVALUATE_METRICS).read_text())
    table = build_ablation(config, evaluation)
    write_json_atomic(config.resolve(artifacts.ABLATION_JSON), table)
    config.resolve(artifacts.ABLATION_MD).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(config.resolve(artifacts.ABLATION_MD)) as temporary:
        temporary.write_text(markdown(config, table))
    plot(table, config.resolve(artifacts.ABLATION_PNG))
    per_class = table["pseudo_labels_per_class"]
    write_plot_rows(per_class_plot_rows(per_class), config.resolve(artifacts.PER_CLASS_LABELS_JSON))
    per_class_plot(per_class, config.resolve(artifacts.PER_CLASS_LABELS_PNG))
    return table


if __name__ == "__main__":
    run_stage("report", report)
