"""The `report` stage: the ablation table (paper Table 3 analogue) and the pseudo-label table (Table 4).

Cells come from params (rows × seeds), never from a glob, so results of cells dropped from params do
not leak into the table. mIoU is averaged over seeds with the sample standard deviation (0 for one seed).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from pipeline.atomic import atomic_path, write_json_atomic
from pipeline.config import Config
from pipeline.constants import CLASS_NAMES

ABLATION_JSON = "metrics/ablation.json"
ABLATION_MD = "reports/ablation.md"
ABLATION_PNG = "reports/ablation.png"
LABEL_KINDS = {
    "static": "Static (CBST)",
    "dynamic_nocal": "Dyn. (w/o cal.)",
    "dynamic_cal": "Dyn. (w/ cal.)",
    "hybrid": "Hybrid",
}
ROW_TITLES = {
    "source_only": "source only",
    "source_only_target_bn": "source only + target BN statistics",
    "base": "L_base",
    "fc": "+ L_FC",
    "fc_bc": "+ L_FC + L_BC",
    "dyn_nocal": "+ y_D (w/o cal.)",
    "dass": "+ y_D (w/ cal.) = DASS",
    "oracle": "target oracle",
}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Seed entries of evaluate.json → mean/std mIoU and mean per-class IoU."""
    miou, std = mean_std([entry["miou"] for entry in entries])
    per_class = {}
    for name in CLASS_NAMES:
        values = [entry["per_class_iou"].get(name) for entry in entries]
        values = [value for value in values if value is not None]
        per_class[name] = round(statistics.fmean(values), 2) if values else None
    return {
        "miou": round(miou, 2),
        "miou_std": round(std, 2),
        "seeds": len(entries),
        "per_class_iou": per_class,
    }


def build_ablation(config: Config, evaluation: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for reference in ("source_only", "source_only_target_bn"):  # the latter with adapt.bn_statistics: target
        if reference in evaluation:
            table[reference] = summarise([evaluation[reference]])
    for row in config.ablation.rows:
        entries = [
            evaluation[f"{row}_seed{seed}"]
            for seed in config.ablation.seeds
            if f"{row}_seed{seed}" in evaluation
        ]
        if len(entries) != len(config.ablation.seeds):
            raise FileNotFoundError(
                f"metrics/evaluate.json lacks cells of row {row}: run `dvc repro evaluate`"
            )
        table[row] = summarise(entries)
    if "oracle" in evaluation:
        table["oracle"] = summarise([evaluation["oracle"]])
    table["pseudo_labels"] = pseudo_label_table(config)
    return table


def pseudo_label_table(config: Config) -> dict[str, dict[str, float]]:
    """Density and accuracy of each label kind over the adaptation of the last row run (DASS if run)."""
    row = "dass" if "dass" in config.ablation.rows else config.ablation.rows[-1]
    cells = [
        json.loads(config.resolve(f"metrics/adapt/{row}_seed{seed}.json").read_text())
        for seed in config.ablation.seeds
    ]
    table = {}
    for kind in LABEL_KINDS:
        densities = [cell["pseudo_labels"][kind]["density"] for cell in cells]
        accuracies = [cell["pseudo_labels"][kind]["accuracy"] for cell in cells]
        table[kind] = {
            "density": round(statistics.fmean(densities), 2),
            "accuracy": round(statistics.fmean(accuracies), 2),
        }
    return table


def markdown(config: Config, table: dict[str, Any]) -> str:
    rows = [name for name in table if name != "pseudo_labels"]
    source = config.data.source.name
    lines = [
        f"# Ablation on {config.name} ({source} → {config.data.target.name}, target val)",
        "",
        f"mIoU in percent, mean ± std over seeds {config.ablation.seeds}; per-class IoU is the seed mean.",
        "",
        "| row | mIoU | seeds | " + " | ".join(CLASS_NAMES) + " |",
        "|---|---|---|" + "---|" * len(CLASS_NAMES),
    ]
    for name in rows:
        entry = table[name]
        ious = " | ".join(
            "—" if entry["per_class_iou"][c] is None else f"{entry['per_class_iou'][c]:.1f}"
            for c in CLASS_NAMES
        )
        miou = f"{entry['miou']:.2f} ± {entry['miou_std']:.2f}"
        lines.append(f"| {ROW_TITLES[name]} | {miou} | {entry['seeds']} | {ious} |")
    row = "dass" if "dass" in config.ablation.rows else config.ablation.rows[-1]
    lines += [
        "",
        f"## Pseudo labels on target-train batches during `{row}` adaptation (Table 4 analogue)",
        "",
        "Density: labelled share of pixels with valid ground truth; "
        "accuracy: correct share of labelled pixels.",
        "",
        "| labels | density (%) | accuracy (%) |",
        "|---|---|---|",
    ]
    for kind, title in LABEL_KINDS.items():
        values = table["pseudo_labels"][kind]
        lines.append(f"| {title} | {values['density']:.1f} | {values['accuracy']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(table: dict[str, Any], path: Path) -> None:
    rows = [name for name in table if name != "pseudo_labels"]
    figure = Figure(figsize=(7, 3.5), dpi=120)
    axes = figure.add_subplot()
    axes.bar(
        range(len(rows)),
        [table[r]["miou"] for r in rows],
        yerr=[table[r]["miou_std"] for r in rows],
        color=["#999999" if r in ("source_only", "oracle") else "#3366aa" for r in rows],
        capsize=4,
    )
    axes.set_xticks(range(len(rows)), [ROW_TITLES[r] for r in rows], rotation=20, ha="right", fontsize=8)
    axes.set_ylabel("mIoU (%)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")


def report(config: Config) -> dict[str, Any]:
    evaluation = json.loads(config.resolve("metrics/evaluate.json").read_text())
    table = build_ablation(config, evaluation)
    write_json_atomic(config.resolve(ABLATION_JSON), table)
    config.resolve(ABLATION_MD).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(config.resolve(ABLATION_MD)) as temporary:
        temporary.write_text(markdown(config, table))
    plot(table, config.resolve(ABLATION_PNG))
    return table
