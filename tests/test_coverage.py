"""Static-label coverage (pipeline/evaluation/coverage.py): learnable classes and the labels reaching them."""

from pipeline.constants import CLASS_NAMES
from pipeline.evaluation.coverage import coverage_markdown, coverage_metrics, label_coverage


def static(recalls: dict[str, float]) -> dict[str, dict[str, float | None]]:
    return {name: {"precision": 50.0, "recall": recalls.get(name, 0.0)} for name in CLASS_NAMES}


def test_a_learnable_class_is_reached_from_five_percent_recall():
    oracle = {name: 0.0 for name in CLASS_NAMES} | {"road": 80.0, "car": 10.0, "sky": 9.99, "pole": None}
    coverage = label_coverage(static({"road": 30.0, "car": 4.99, "sky": 50.0, "pole": 5.0}), oracle)
    road, car, sky = (coverage["per_class"][name] for name in ("road", "car", "sky"))
    assert road["learnable"] and road["reached"]
    assert car["learnable"] and not car["reached"]  # IoU exactly 10 is learnable; recall 4.99 misses
    assert not sky["learnable"] and sky["reached"]  # 9.99: not learnable, however well labelled
    assert coverage["per_class"]["pole"]["learnable"] is False and coverage["per_class"]["pole"]["reached"]
    assert (coverage["learnable"], coverage["learnable_reached"]) == (2, 1)
    assert coverage["learnable_missed"] == ["car"] and coverage["all_learnable_reached"] is False


def test_without_an_oracle_learnability_is_unknown_not_false():
    coverage = label_coverage(static({"road": 30.0}), None)
    assert coverage["per_class"]["road"] == {"oracle_iou": None, "learnable": None, "precision": 50.0,
                                             "recall": 30.0, "reached": True}  # fmt: skip
    assert coverage["learnable"] is None and coverage["all_learnable_reached"] is None
    assert "no oracle was trained" in "\n".join(coverage_markdown(coverage))
    assert "static_labels.learnable" not in coverage_metrics(coverage)


def test_metrics_and_markdown_name_every_class_and_the_missed_ones():
    oracle = {name: 20.0 for name in CLASS_NAMES}
    coverage = label_coverage(static({name: 10.0 for name in CLASS_NAMES} | {"terrain": 0.4}), oracle)
    metrics = coverage_metrics(coverage)
    assert metrics["static_labels.recall.terrain"] == 0.4 and metrics["static_labels.learnable"] == 19.0
    assert metrics["static_labels.learnable_reached"] == 18.0
    lines = coverage_markdown(coverage)
    assert "reach 18 of the 19 learnable classes; missed: terrain." in "\n".join(lines)
    assert "| **terrain** | 20.0 | yes | 50.0 | 0.4 | no |" in lines
    assert sum(line.startswith("| ") and "---" not in line for line in lines) == len(CLASS_NAMES) + 1
