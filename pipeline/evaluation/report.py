"""The ablation's tables (for stages/report.py): mIoU per row (paper Table 3 analogue), the pseudo-label
table (Table 4) and the feature-alignment diagnostic of each row, as a dict, markdown and plots.

Cells come from params (rows × seeds), never from a glob, so results of cells dropped from params do
not leak into the table. mIoU is averaged over seeds with the sample standard deviation (0 for one seed).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from pipeline import artifacts
from pipeline.atomic import atomic_path
from pipeline.config import Config
from pipeline.constants import ABLATION_ROWS, CLASS_NAMES, LABEL_KINDS
from pipeline.evaluation.protocols import PROTOCOLS, headline_protocol

# Keys of the ablation table that hold other tables, not rows of it.
NOT_ROWS = ("pseudo_labels", "pseudo_labels_matched_density", "pseudo_labels_per_class", "feature_alignment")
# As in metrics/evaluate.json; not imported from pipeline/evaluation/alignment.py, which would make the
# report stage depend on pipeline/losses.
ALIGNMENT_DECIMALS = 4
LABEL_TITLES = dict(
    zip(LABEL_KINDS, ("Static (CBST)", "Dyn. (w/o cal.)", "Dyn. (w/ cal.)", "Hybrid"), strict=True)
)
ROW_TITLES = {
    "source_only": "source only",
    "source_only_target_bn": "source only + target BN statistics",
    **ABLATION_ROWS,
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
    summary = {"miou": round(miou, 2), "miou_std": round(std, 2)}
    # Every protocol the entries carry (evaluate.json has miou19/16/13), so SYNTHIA's mIoU-13 gets its
    # own mean and std, not a mean of per-class means.
    for key in (f"miou{n}" for n in PROTOCOLS):
        values = [entry.get(key) for entry in entries]
        if values and all(value is not None for value in values):
            mean, spread = mean_std(values)
            summary |= {key: round(mean, 2), f"{key}_std": round(spread, 2)}
    return summary | {"seeds": len(entries), "per_class_iou": per_class}


def build_ablation(config: Config, evaluation: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for reference in ("source_only", "source_only_target_bn"):
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
                f"{artifacts.EVALUATE_METRICS} lacks cells of row {row}: run `dvc repro evaluate`"
            )
        table[row] = summarise(entries)
    if "oracle" in evaluation:
        table["oracle"] = summarise([evaluation["oracle"]])
    cells = table4_cells(config)
    table["pseudo_labels"] = pseudo_label_table(cells)
    table["pseudo_labels_matched_density"] = matched_density_table(cells)
    table["pseudo_labels_per_class"] = pseudo_label_per_class(cells)
    table["feature_alignment"] = feature_alignment_table(config, evaluation)
    return table


def _seed_mean(values: list[float | None], digits: int = ALIGNMENT_DECIMALS) -> float | None:
    """Mean over the seeds that have a value (None when none has)."""
    defined = [value for value in values if value is not None]
    return round(statistics.fmean(defined), digits) if defined else None


def _most_frequent(names: list[str | None]) -> str | None:
    defined = [name for name in names if name is not None]
    return Counter(defined).most_common(1)[0][0] if defined else None  # ties: the earliest seed's


def summarise_alignment(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Seed entries' `feature_alignment` → seed means of every per-class value and of the class means
    (over the seeds that have a value); `nearest_other` is the class most often nearest."""
    per_class = {}
    for name in CLASS_NAMES:
        cells = [entry["per_class"][name] for entry in entries]
        per_class[name] = {key: _seed_mean([cell[key] for cell in cells]) for key in cells[0]
                           if key != "nearest_other"}  # fmt: skip
        per_class[name]["nearest_other"] = _most_frequent([cell["nearest_other"] for cell in cells])
    mean = {key: _seed_mean([entry["mean"][key] for entry in entries]) for key in entries[0]["mean"]}
    return {"seeds": len(entries), "per_class": per_class, "mean": mean}


def feature_alignment_table(config: Config, evaluation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The feature alignment of each ablation row (the rows of `build_ablation`), averaged over seeds.

    Rows whose models carry no `feature_alignment` (evaluate.alignment_source_images: 0) are left out.
    """
    models = {"source_only": ["source_only"], "source_only_target_bn": ["source_only_target_bn"]}
    models |= {row: [f"{row}_seed{seed}" for seed in config.ablation.seeds] for row in config.ablation.rows}
    models["oracle"] = ["oracle"]
    table = {}
    for row, names in models.items():
        entries = [evaluation[name]["feature_alignment"] for name in names
                   if "feature_alignment" in evaluation.get(name, {})]  # fmt: skip
        if entries:
            table[row] = summarise_alignment(entries)
    return table


def feature_alignment_markdown(alignment: dict[str, dict[str, Any]]) -> list[str]:
    """The report section of `feature_alignment_table` (no lines when it is empty)."""
    if not alignment:
        return []
    columns = {"cross_domain": "cross-domain", "intra": "intra", "inter": "inter"}
    lines = [
        "",
        "## Feature alignment on target val",
        "",
        "Cosine similarities with ground-truth class prototypes ρ (mean over classes, then over seeds): "
        "cross-domain cos(ρ_S(c), ρ_T(c)) (higher: more domain-invariant), intra-class mean cos(f, ρ_T(c)) "
        "and inter-class mean cos(f, ρ_T(k)) of the nearest other class k (intra above inter: more "
        "discriminative).",
        "",
        "| row | " + " | ".join(columns.values()) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row, entry in alignment.items():
        values = [entry["mean"][key] for key in columns]
        cells = " | ".join("—" if value is None else f"{value:.3f}" for value in values)
        lines.append(f"| {ROW_TITLES[row]} | {cells} |")
    return lines


def table4_row(config: Config) -> str:
    """The row whose adaptation the label tables describe: `dass` if it ran, else the last row."""
    return "dass" if "dass" in config.ablation.rows else config.ablation.rows[-1]


def table4_cells(config: Config) -> list[dict[str, Any]]:
    row = table4_row(config)
    return [
        json.loads(config.resolve(artifacts.cell_metrics(row, seed)).read_text())
        for seed in config.ablation.seeds
    ]


def pseudo_label_table(cells: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Seed means of each label kind's density and accuracy on valid ground truth (Table 4), density
    over all pixels, and share of its labels on ignore ground truth."""
    keys = ("density", "accuracy", "density_all_pixels", "on_ignore_truth")
    return {
        kind: {key: _seed_mean([cell["pseudo_labels"][kind].get(key) for cell in cells], 2) for key in keys}
        for kind in LABEL_KINDS
    }


def pseudo_label_per_class(cells: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Seed means of each label kind's per-class precision and recall against target ground truth."""
    return {
        kind: {
            name: {
                key: _seed_mean([cell["pseudo_labels"][kind]["per_class"][name][key] for cell in cells], 2)
                for key in ("precision", "recall")
            }
            for name in CLASS_NAMES
        }
        for kind in LABEL_KINDS
    }


def matched_density_table(cells: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Table 4 at matched density: each dynamic kind at the 𝒯 that gives it the static labels' density
    (seed means)."""
    kinds = cells[0]["pseudo_labels_matched_density"]
    return {
        kind: {
            key: _seed_mean([cell["pseudo_labels_matched_density"][kind][key] for cell in cells], 2)
            for key in ("threshold", "density", "accuracy")
        }
        for kind in kinds
    }


def per_class_plot_rows(per_class: dict[str, dict[str, dict[str, float | None]]]) -> list[dict[str, Any]]:
    """DVC plot rows: one per (label kind, class) with its precision and recall."""
    return [
        {"labels": kind, "class": name, "precision": values["precision"], "recall": values["recall"]}
        for kind, classes in per_class.items()
        for name, values in classes.items()
        if values["precision"] is not None or values["recall"] is not None
    ]


def per_class_plot(per_class: dict[str, dict[str, dict[str, float | None]]], path: Path) -> None:
    """Precision and recall per class (two panels), one bar per label kind."""
    figure = Figure(figsize=(11, 6), dpi=110)
    width = 0.8 / len(per_class)
    for panel, key in enumerate(("precision", "recall")):
        axes = figure.add_subplot(2, 1, panel + 1)
        for index, (kind, classes) in enumerate(per_class.items()):
            values = [classes[name][key] or 0.0 for name in CLASS_NAMES]
            positions = [c + (index - (len(per_class) - 1) / 2) * width for c in range(len(CLASS_NAMES))]
            axes.bar(positions, values, width=width, label=LABEL_TITLES[kind])
        axes.set_ylabel(f"{key} (%)")
        axes.set_ylim(0, 100)
        axes.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES if panel else [], rotation=45, ha="right",
                        fontsize=8)  # fmt: skip
    figure.axes[0].legend(fontsize=7, ncol=len(per_class))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")


def _cell(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def label_markdown(config: Config, table: dict[str, Any]) -> list[str]:
    """The Table-4 sections: label kinds, matched density, per-class precision / recall."""
    lines = [
        "",
        f"## Pseudo labels on target-train batches during `{table4_row(config)}` adaptation "
        "(Table 4 analogue)",
        "",
        "Density: labelled share of pixels with valid ground truth; accuracy: correct share of labelled "
        "pixels; on ignore: share of the labels placed on pixels whose ground truth is ignore (trained on, "
        "never judged).",
        "",
        "| labels | density (%) | accuracy (%) | density, all pixels (%) | on ignore (%) |",
        "|---|---|---|---|---|",
    ]
    for kind, title in LABEL_TITLES.items():
        values = table["pseudo_labels"][kind]
        cells = " | ".join(_cell(values[key]) for key in ("density", "accuracy", "density_all_pixels",
                                                           "on_ignore_truth"))  # fmt: skip
        lines.append(f"| {title} | {cells} |")
    matched = table["pseudo_labels_matched_density"]
    lines += [
        "",
        "At matched density: each dynamic kind with 𝒯 set so that its density equals the static labels'.",
        "",
        "| labels | 𝒯 | density (%) | accuracy (%) |",
        "|---|---|---|---|",
    ]
    for kind, values in matched.items():
        threshold, density, accuracy = (values[key] for key in ("threshold", "density", "accuracy"))
        lines.append(
            f"| {LABEL_TITLES[kind]} | {_cell(threshold, 3)} | {_cell(density)} | {_cell(accuracy)} |"
        )
    per_class = table["pseudo_labels_per_class"]
    lines += [
        "",
        "Per class, precision / recall (%) of each label kind against target-train ground truth:",
        "",
        "| class | " + " | ".join(LABEL_TITLES[kind] for kind in per_class) + " |",
        "|---|" + "---|" * len(per_class),
    ]
    for name in CLASS_NAMES:
        pairs = [per_class[kind][name] for kind in per_class]
        cells = " | ".join(f"{_cell(pair['precision'])} / {_cell(pair['recall'])}" for pair in pairs)
        lines.append(f"| {name} | {cells} |")
    return lines


# Source dataset → the mIoU columns its papers' tables print, the headline first (SYNTHIA tables give
# mIoU-16 and mIoU-13, "mIoU*", side by side).
REPORTED_PROTOCOLS: dict[str, tuple[int, ...]] = {"gta5": (19,), "synthia": (16, 13)}


def reported_protocols(source_name: str) -> tuple[int, ...]:
    headline_protocol(source_name)  # the same error as evaluate for an unknown name
    return REPORTED_PROTOCOLS[source_name]


def _miou_cell(entry: dict[str, Any], protocol: int, headline: bool) -> str:
    """ "mean ± std" of one protocol; the headline falls back to `miou` (entries without protocol keys)."""
    key = f"miou{protocol}"
    if key not in entry:
        key = "miou" if headline else key
    if key not in entry:
        return "—"
    return f"{entry[key]:.2f} ± {entry[f'{key}_std']:.2f}"


def markdown(config: Config, table: dict[str, Any]) -> str:
    rows = [name for name in table if name not in NOT_ROWS]
    source = config.data.source.name
    protocols = reported_protocols(source)
    lines = [
        f"# Ablation on {config.name} ({source} → {config.data.target.name}, target val)",
        "",
        f"mIoU in percent, mean ± std over seeds {config.ablation.seeds}; per-class IoU is the seed mean.",
        "",
        "| row | "
        + " | ".join(f"mIoU-{n}" for n in protocols)
        + " | seeds | "
        + " | ".join(CLASS_NAMES)
        + " |",
        "|---|" + "---|" * len(protocols) + "---|" + "---|" * len(CLASS_NAMES),
    ]
    for name in rows:
        entry = table[name]
        ious = " | ".join(
            "—" if entry["per_class_iou"][c] is None else f"{entry['per_class_iou'][c]:.1f}"
            for c in CLASS_NAMES
        )
        mious = " | ".join(_miou_cell(entry, n, headline=index == 0) for index, n in enumerate(protocols))
        lines.append(f"| {ROW_TITLES[name]} | {mious} | {entry['seeds']} | {ious} |")
    lines += label_markdown(config, table)
    lines += feature_alignment_markdown(table.get("feature_alignment", {}))
    return "\n".join(lines) + "\n"


def plot(table: dict[str, Any], path: Path) -> None:
    rows = [name for name in table if name not in NOT_ROWS]
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
