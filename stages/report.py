"""DVC stage `report`: the ablation table from metrics/evaluate.json and the cells' metrics, as
metrics/ablation.json, reports/ablation.md and .png, and the per-class pseudo-label quality (a DVC plot);
the static labels' coverage of the learnable classes (metrics/label_coverage.json) closes the markdown."""

from __future__ import annotations

import json
from typing import Any

from pipeline import artifacts
from pipeline.atomic import atomic_path, write_json_atomic
from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.evaluation.coverage import coverage_markdown
from pipeline.evaluation.plots import write_plot_rows
from pipeline.evaluation.report import build_ablation, markdown, per_class_plot, per_class_plot_rows, plot


def coverage_section(config: Config) -> list[str]:
    """The markdown of metrics/label_coverage.json; none before `evaluate` has judged static labels."""
    path = config.resolve(artifacts.LABEL_COVERAGE)
    coverage = json.loads(path.read_text()) if path.is_file() else {}
    return coverage_markdown(coverage) if "per_class" in coverage else []


def report(config: Config) -> dict[str, Any]:
    evaluation = json.loads(config.resolve(artifacts.EVALUATE_METRICS).read_text())
    table = build_ablation(config, evaluation)
    write_json_atomic(config.resolve(artifacts.ABLATION_JSON), table)
    config.resolve(artifacts.ABLATION_MD).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(config.resolve(artifacts.ABLATION_MD)) as temporary:
        extra = coverage_section(config)
        temporary.write_text(markdown(config, table) + "\n".join(extra) + ("\n" if extra else ""))
    plot(table, config.resolve(artifacts.ABLATION_PNG))
    per_class = table["pseudo_labels_per_class"]
    write_plot_rows(per_class_plot_rows(per_class), config.resolve(artifacts.PER_CLASS_LABELS_JSON))
    per_class_plot(per_class, config.resolve(artifacts.PER_CLASS_LABELS_PNG))
    return table


if __name__ == "__main__":
    run_stage("report", report)
