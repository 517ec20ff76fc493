"""The mIoU protocols a benchmark reports, and the `metrics/evaluate.json` entry of one model.

GTA5→Cityscapes papers report the 19-class mIoU; SYNTHIA→Cityscapes papers report 16 classes (no
terrain, truck, train: SYNTHIA has no such pixels) and 13 classes (mIoU*, also no wall, fence, pole).
design.md §2 fixes the entry: `miou` is the headline protocol of the source dataset, every number is a
percentage (0–100) as the papers print them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pipeline.constants import CLASS_NAMES, PROTOCOL_13, PROTOCOL_16, PROTOCOL_19

if TYPE_CHECKING:  # not imported at run time: it loads torch, which the `report` stage needs none of
    from pipeline.evaluation.miou import ConfusionMatrix

# Number of classes → the train ids averaged by that protocol.
PROTOCOLS: dict[int, tuple[int, ...]] = {19: PROTOCOL_19, 16: PROTOCOL_16, 13: PROTOCOL_13}

# Source dataset (params `data.source.name`) → the protocol its papers headline.
HEADLINE_PROTOCOL: dict[str, int] = {"gta5": 19, "synthia": 16}

# Decimals kept in the metric files (papers print one; two keep the ablation deltas readable).
PERCENT_DECIMALS = 2


def headline_protocol(source_name: str) -> int:
    """19 for "gta5", 16 for "synthia"."""
    try:
        return HEADLINE_PROTOCOL[source_name]
    except KeyError:
        raise ValueError(
            f"unknown source dataset {source_name!r}; expected one of {sorted(HEADLINE_PROTOCOL)}"
        ) from None


def to_percent(fraction: float) -> float | None:
    """A fraction as a percentage rounded to PERCENT_DECIMALS; None for NaN (JSON has no NaN)."""
    return None if math.isnan(fraction) else round(100.0 * fraction, PERCENT_DECIMALS)


def protocol_metrics(cm: ConfusionMatrix, source_name: str) -> dict[str, Any]:
    """The evaluate.json entry of one model, every value in percent (None where undefined):

    {"miou": headline, "miou19": …, "miou16": …, "miou13": …, "per_class_iou": {class name: …}}
    """
    if cm.num_classes != len(CLASS_NAMES):
        raise ValueError(
            f"protocol metrics need the {len(CLASS_NAMES)} Cityscapes train ids, "
            f"got a {cm.num_classes}-class confusion matrix"
        )
    headline = headline_protocol(source_name)
    by_protocol = {f"miou{n}": to_percent(cm.miou(classes)) for n, classes in PROTOCOLS.items()}
    iou = cm.iou().tolist()
    return {
        "miou": by_protocol[f"miou{headline}"],
        **by_protocol,
        "per_class_iou": {name: to_percent(value) for name, value in zip(CLASS_NAMES, iou, strict=True)},
    }
