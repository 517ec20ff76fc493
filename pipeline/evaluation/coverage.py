"""Static-label coverage: which classes the CBST labels reach, judged against what is learnable at all.

A class is *learnable* on a benchmark when the target oracle (the same network trained on target-train
ground truth) reaches an IoU of at least `LEARNABLE_IOU` on target val: below it, no adaptation method
can be expected to learn the class at this model size and length. The static labels *reach* a class when
their recall on it (share of its target-train pixels that carry a correct static label) is at least
`MIN_RECALL`: a class they never reach gives self-training nothing to learn from. Both thresholds are
issue 36's criterion for choosing the embedded default. Diagnostic only: ground truth judges the labels,
it never makes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.constants import CLASS_NAMES

LEARNABLE_IOU = 10.0  # oracle IoU (%) on target val from which a class counts as learnable
MIN_RECALL = 5.0  # static-label recall (%) on target train from which a class counts as reached


def label_coverage(
    static_per_class: Mapping[str, Mapping[str, float | None]],
    oracle_iou: Mapping[str, float | None] | None,
) -> dict[str, Any]:
    """Per class and in summary, whether the static labels reach each learnable class.

    static_per_class: metrics/pseudo_static.json's "per_class" ({class: {"precision", "recall"}}, %).
    oracle_iou: the oracle's per-class IoU (%) from metrics/evaluate.json; None without an oracle
    (warmup.oracle: false), when learnability is unknown and the summary says so with nulls.
    """
    classes: dict[str, dict[str, Any]] = {}
    for name in CLASS_NAMES:
        labels = static_per_class.get(name, {})
        recall = labels.get("recall")
        iou = None if oracle_iou is None else oracle_iou.get(name)
        classes[name] = {
            "oracle_iou": iou,
            "learnable": None if oracle_iou is None else iou is not None and iou >= LEARNABLE_IOU,
            "precision": labels.get("precision"),
            "recall": recall,
            "reached": recall is not None and recall >= MIN_RECALL,
        }
    learnable = [name for name, entry in classes.items() if entry["learnable"]]
    missed = [name for name in learnable if not classes[name]["reached"]]
    known = oracle_iou is not None
    return {
        "learnable_iou": LEARNABLE_IOU,
        "min_recall": MIN_RECALL,
        "learnable": len(learnable) if known else None,
        "learnable_reached": len(learnable) - len(missed) if known else None,
        "learnable_missed": missed if known else None,
        "all_learnable_reached": not missed if known else None,
        "per_class": classes,
    }


def coverage_metrics(coverage: Mapping[str, Any]) -> dict[str, float]:
    """MLflow metrics: `static_labels.{precision,recall}.<class>` and the learnable counts."""
    flat = {}
    for name, entry in coverage["per_class"].items():
        for key in ("precision", "recall"):
            if entry[key] is not None:
                flat[f"static_labels.{key}.{name}"] = float(entry[key])
    for key in ("learnable", "learnable_reached"):
        if coverage[key] is not None:
            flat[f"static_labels.{key}"] = float(coverage[key])
    return flat


def coverage_markdown(coverage: Mapping[str, Any]) -> list[str]:
    """The report's section: one row per class, learnable classes the labels miss in bold."""
    if coverage["learnable"] is None:
        verdict = "no oracle was trained (warmup.oracle: false), so which classes are learnable is unknown."
    else:
        missed = ", ".join(coverage["learnable_missed"]) or "none"
        verdict = (f"the static labels reach {coverage['learnable_reached']} of the {coverage['learnable']} "
                   f"learnable classes; missed: {missed}.")  # fmt: skip
    lines = [
        "",
        "## Static-label coverage (CBST labels on all of target train)",
        "",
        f"A class is learnable when the oracle's IoU on it is ≥ {coverage['learnable_iou']:g}; the labels "
        f"reach it when their recall is ≥ {coverage['min_recall']:g} %: {verdict}",
        "",
        "| class | oracle IoU | learnable | precision (%) | recall (%) | reached |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in coverage["per_class"].items():
        cells = [_number(entry["oracle_iou"]), _flag(entry["learnable"]), _number(entry["precision"]),
                 _number(entry["recall"]), _flag(entry["reached"])]  # fmt: skip
        title = f"**{name}**" if entry["learnable"] and not entry["reached"] else name
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _flag(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")
