"""Evaluation: a confusion matrix over the whole split, mIoU protocols, plots and qualitative panels."""

from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.panels import qualitative_panel, save_panel
from pipeline.evaluation.plots import (
    CONFUSION_COUNTS_TEMPLATE,
    confusion_matrix_plot,
    confusion_plot_rows,
    iou_plot_rows,
    normalized_confusion,
    per_class_iou_plot,
    write_confusion_template,
    write_plot_rows,
)
from pipeline.evaluation.protocols import PROTOCOLS, headline_protocol, protocol_metrics, to_percent

__all__ = [
    "CONFUSION_COUNTS_TEMPLATE",
    "PROTOCOLS",
    "ConfusionMatrix",
    "confusion_matrix_plot",
    "confusion_plot_rows",
    "headline_protocol",
    "iou_plot_rows",
    "normalized_confusion",
    "per_class_iou_plot",
    "protocol_metrics",
    "qualitative_panel",
    "save_panel",
    "to_percent",
    "write_confusion_template",
    "write_plot_rows",
]
