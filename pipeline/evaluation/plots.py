"""Evaluation plots: PNG figures (matplotlib) and the data rows `dvc plots` renders.

Figures are drawn on a bare `matplotlib.figure.Figure`, which renders with Agg and never touches
pyplot or a display, so this runs on headless Ray workers and in CI. Every file is written to a
temporary name in its folder and renamed into place.

DVC (dvc_render 1.x, the `dvc plots templates` built-ins):
- per-class IoU: `iou_plot_rows` → one JSON file per model, rows `{"class", "iou"}` (percent), for the
  built-in `bar_horizontal` template with `x: iou`, `y: class` (its bars are offset and coloured by
  revision, so `dvc plots diff` compares commits; several model files in one plot are faceted).
- confusion matrix: the built-in `confusion` / `confusion_normalized` templates *count rows*, one row per
  prediction (`aggregate: count`), which for a pixel matrix would mean one row per pixel. So
  `confusion_plot_rows` writes one row per non-empty cell `{"actual", "predicted", "count"}` and
  `CONFUSION_COUNTS_TEMPLATE` is the normalised built-in with `count` summed instead of rows counted;
  save it under `.dvc/plots/` (`write_confusion_template`) and set `template:` to its name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from matplotlib.figure import Figure

from pipeline.atomic import atomic_path
from pipeline.constants import CLASS_NAMES

if TYPE_CHECKING:  # torch is not imported at run time: the `report` stage needs none of it
    import torch

    from pipeline.evaluation.miou import ConfusionMatrix

PLOT_DPI = 120  # pixels per inch of the PNG figures
# Confusion cells below this fraction of the colour scale get no number: it would print as 0.00, and
# drawing 361 labels dominates the plot's cost.
ANNOTATE_MIN_FRACTION = 0.01
Normalize = Literal["true", "pred", "all"] | None
_NORMALIZE_CAPTION = {
    "true": "each ground-truth row sums to 1",
    "pred": "each predicted column sums to 1",
    "all": "fraction of all pixels",
    None: "pixels",
}


def _save_figure(figure: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    return path


def _counts(cm: ConfusionMatrix | torch.Tensor | np.ndarray) -> np.ndarray:
    matrix = getattr(cm, "matrix", cm)  # a ConfusionMatrix's counts
    counts = np.asarray(matrix.cpu() if hasattr(matrix, "cpu") else matrix)  # a torch tensor's
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square [C, C], got shape {counts.shape}")
    return counts


def normalized_confusion(counts: np.ndarray, normalize: Normalize = "true") -> np.ndarray:
    """Confusion counts [C, C] (rows ground truth) as float64 fractions; NaN where a sum is zero.

    "true": each row sums to 1 (recall per class); "pred": each column; "all": the whole matrix;
    None: the counts as floats (the sklearn `confusion_matrix(normalize=…)` convention).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if normalize is None:
        return counts
    if normalize == "true":
        totals = counts.sum(axis=1, keepdims=True)
    elif normalize == "pred":
        totals = counts.sum(axis=0, keepdims=True)
    elif normalize == "all":
        totals = np.full((1, 1), counts.sum())
    else:
        raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, got {normalize!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1), np.nan)


# ------------------------------------------------------------------------------- PNG figures
def per_class_iou_plot(
    results: Mapping[str, Mapping[str, float | None]],
    path: Path | str,
    title: str | None = None,
) -> Path:
    """Grouped horizontal bars of per-class IoU (percent, 0–100), one colour per model.

    `results`: model name → {class name: IoU in percent, or None where undefined (no bar)}, e.g.
    `{m: entry["per_class_iou"] for m, entry in evaluate_json.items()}`. Classes keep the order of
    their first appearance (train-id order for `protocol_metrics` output), top to bottom.
    """
    if not results:
        raise ValueError("per_class_iou_plot: no models to plot")
    models = list(results)
    classes = list(dict.fromkeys(name for scores in results.values() for name in scores))
    bar_height = 0.8 / len(models)
    positions = np.arange(len(classes), dtype=np.float64)

    figure = Figure(figsize=(8.0, max(3.0, 0.22 * len(classes) * max(1.0, 0.6 * len(models)) + 1.0)))
    axes = figure.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(models))]
    for index, model in enumerate(models):
        values = [results[model].get(name) for name in classes]
        defined = np.array([value is not None for value in values])
        widths = np.array([value for value in values if value is not None], dtype=np.float64)
        offset = (index - (len(models) - 1) / 2) * bar_height
        # An undefined IoU draws no bar (an IoU of 0 draws a zero-width one); the legend keeps the model.
        axes.barh(positions[defined] + offset, widths, height=bar_height, color=colours[index], label=model)
    axes.set_yticks(positions, classes)
    axes.invert_yaxis()  # first class on top
    axes.set_xlim(0, 100)
    axes.set_xlabel("IoU (%)")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if title:
        axes.set_title(title)
    return _save_figure(figure, path)


# Bars of the feature-alignment diagnostic (pipeline/evaluation/alignment.py), in drawing order.
ALIGNMENT_LABELS = {
    "cross_domain": "cross-domain cos(ρ_S(c), ρ_T(c))",
    "intra": "intra-class: mean cos(f, ρ_T(c))",
    "inter": "inter-class: max_k≠c mean cos(f, ρ_T(k))",
}


def _alignment_bars(
    groups: Mapping[str, Mapping[str, Any]], path: Path | str, ylabel: str, title: str | None
) -> Path:
    """One group of horizontal bars per key of `groups` (top to bottom), one bar per ALIGNMENT_LABELS
    metric; a None value draws no bar. Cosines lie in [−1, 1]."""
    if not groups:
        raise ValueError("feature alignment plot: nothing to plot")
    names = list(groups)
    bar_height = 0.8 / len(ALIGNMENT_LABELS)
    positions = np.arange(len(names), dtype=np.float64)

    figure = Figure(figsize=(8.0, max(3.0, 0.22 * len(names) * 0.6 * len(ALIGNMENT_LABELS) + 1.0)))
    axes = figure.add_subplot()
    for index, (metric, label) in enumerate(ALIGNMENT_LABELS.items()):
        values = [groups[name].get(metric) for name in names]
        defined = np.array([value is not None for value in values])
        widths = np.array([value for value in values if value is not None], dtype=np.float64)
        offset = (index - (len(ALIGNMENT_LABELS) - 1) / 2) * bar_height
        axes.barh(positions[defined] + offset, widths, height=bar_height, color=f"C{index}", label=label)
    axes.set_yticks(positions, names)
    axes.set_ylabel(ylabel)
    axes.invert_yaxis()  # first group on top
    axes.set_xlim(-1.0, 1.0)
    axes.axvline(0.0, color="black", linewidth=0.6)
    axes.set_xlabel("cosine similarity")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if title:
        axes.set_title(title)
    return _save_figure(figure, path)


def feature_alignment_plot(
    per_class: Mapping[str, Mapping[str, Any]], path: Path | str, title: str | None = None
) -> Path:
    """Per-class bars of one model's feature alignment: cross-domain, intra- and inter-class cosines.

    `per_class`: class name → `{"cross_domain", "intra", "inter", …}` (the `per_class` of a model's
    `feature_alignment` in metrics/evaluate.json); None draws no bar.
    """
    return _alignment_bars(per_class, path, ylabel="class", title=title)


def feature_alignment_summary_plot(
    means: Mapping[str, Mapping[str, float | None]], path: Path | str, title: str | None = None
) -> Path:
    """The class-mean cross-domain, intra- and inter-class cosines of every model.

    `means`: model name → the `mean` of its `feature_alignment` in metrics/evaluate.json.
    """
    return _alignment_bars(means, path, ylabel="model", title=title or "feature alignment on target val")


def confusion_matrix_plot(
    cm: ConfusionMatrix | torch.Tensor | np.ndarray,
    path: Path | str,
    normalize: Normalize = "true",
    class_names: Sequence[str] = CLASS_NAMES,
    title: str | None = None,
) -> Path:
    """Heatmap of the confusion matrix (rows ground truth, columns prediction) with class names.

    `normalize="true"` shows each ground-truth row as fractions (the per-class recall on the diagonal);
    rows without ground-truth pixels stay blank.
    """
    counts = _counts(cm)
    if len(class_names) != counts.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {counts.shape[0]}-class matrix")
    values = normalized_confusion(counts, normalize)
    size = counts.shape[0]

    figure = Figure(figsize=(0.42 * size + 2.5, 0.42 * size + 1.8))
    axes = figure.add_subplot()
    vmax = 1.0 if normalize is not None else max(float(np.nanmax(values, initial=0.0)), 1.0)
    image = axes.imshow(
        np.ma.masked_invalid(values), cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest"
    )
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(size), class_names, rotation=90)
    axes.set_yticks(range(size), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("ground truth")
    cell_format = "{:.2f}" if normalize is not None else "{:.0f}"
    for row in range(size):
        for column in range(size):
            value = values[row, column]
            if np.isfinite(value) and value >= ANNOTATE_MIN_FRACTION * vmax:
                axes.text(
                    column,
                    row,
                    cell_format.format(value),
                    ha="center",
                    va="center",
                    fontsize=5,
                    color="white" if value > 0.5 * vmax else "black",
                )
    axes.set_title(title or f"confusion matrix ({_NORMALIZE_CAPTION[normalize]})")
    return _save_figure(figure, path)


# ------------------------------------------------------------------------------- DVC plot data
def iou_plot_rows(
    per_class_iou: Mapping[str, float | None], model: str | None = None
) -> list[dict[str, Any]]:
    """Rows `{"class": name, "iou": percent}` for the `bar_horizontal` template (x: iou, y: class).

    Classes without an IoU (None) are left out: JSON null would break a quantitative axis. With
    `model`, each row also carries `"model"` (for one long file holding several models).
    """
    return [
        {"class": name, "iou": value} | ({"model": model} if model is not None else {})
        for name, value in per_class_iou.items()
        if value is not None
    ]


def confusion_plot_rows(
    cm: ConfusionMatrix | torch.Tensor | np.ndarray,
    class_names: Sequence[str] = CLASS_NAMES,
) -> list[dict[str, Any]]:
    """Rows `{"actual": name, "predicted": name, "count": pixels}` for every cell with count > 0.

    At most C² rows (361 for 19 classes), for `CONFUSION_COUNTS_TEMPLATE` (x: predicted, y: actual).
    """
    counts = _counts(cm)
    if len(class_names) != counts.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {counts.shape[0]}-class matrix")
    actual, predicted = np.nonzero(counts)
    return [
        {"actual": class_names[a], "predicted": class_names[p], "count": int(counts[a, p])}
        for a, p in zip(actual.tolist(), predicted.tolist(), strict=True)
    ]


def write_plot_rows(rows: Sequence[Mapping[str, Any]], path: Path | str) -> Path:
    """Write rows as a JSON array (a DVC data-series plot file), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(list(rows), indent=1) + "\n")
    return path


# The built-in `confusion_normalized` template of dvc_render 1.x (`dvc plots templates
# confusion_normalized`) with the cell value summed from a `count` field instead of counted rows, and
# normalised over each ground-truth row (y). Anchors: <DVC_METRIC_X> = predicted, <DVC_METRIC_Y> = actual.
_X, _Y = "<DVC_METRIC_X>", "<DVC_METRIC_Y>"
CONFUSION_COUNTS_TEMPLATE: dict[str, Any] = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "data": {"values": "<DVC_METRIC_DATA>"},
    "title": {"text": "<DVC_METRIC_TITLE>", "anchor": "middle"},
    "facet": {"column": {"field": "rev", "sort": []}, "row": "<DVC_METRIC_ROW>"},
    "spec": {
        "width": 420,
        "height": 420,
        "transform": [
            {"aggregate": [{"op": "sum", "field": "count", "as": "pixels"}], "groupby": [_Y, _X]},
            {"joinaggregate": [{"op": "sum", "field": "pixels", "as": "row_pixels"}], "groupby": [_Y]},
            {"calculate": "datum.pixels / datum.row_pixels", "as": "fraction_of_actual"},
        ],
        "encoding": {
            "x": {"field": _X, "type": "nominal", "sort": list(CLASS_NAMES), "title": "<DVC_METRIC_X_LABEL>"},
            "y": {"field": _Y, "type": "nominal", "sort": list(CLASS_NAMES), "title": "<DVC_METRIC_Y_LABEL>"},
        },
        "layer": [
            {
                "mark": "rect",
                "encoding": {
                    "color": {
                        "field": "fraction_of_actual",
                        "type": "quantitative",
                        "title": "",
                        "scale": {"domain": [0, 1], "scheme": "blues"},
                    },
                    "tooltip": [
                        {"field": _Y, "type": "nominal"},
                        {"field": _X, "type": "nominal"},
                        {"field": "pixels", "type": "quantitative"},
                        {"field": "fraction_of_actual", "type": "quantitative", "format": ".3f"},
                    ],
                },
            },
            {
                "mark": {"type": "text", "fontSize": 7},
                "encoding": {
                    "text": {"field": "fraction_of_actual", "type": "quantitative", "format": ".2f"},
                    "color": {
                        "condition": {"test": "datum.fraction_of_actual > 0.5", "value": "white"},
                        "value": "black",
                    },
                },
            },
        ],
    },
}


def write_confusion_template(path: Path | str) -> Path:
    """Save CONFUSION_COUNTS_TEMPLATE as a DVC custom template (e.g. `.dvc/plots/confusion_counts.json`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(CONFUSION_COUNTS_TEMPLATE, indent=2) + "\n")
    return path
