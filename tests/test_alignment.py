"""The feature-alignment diagnostic: sums, cosines and the JSON entry against direct computation, the
evaluate-stage Ray task functions (called in-process), the plots and the report table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from test_evaluation import assert_png

from pipeline.config import Config, config_from_dict
from pipeline.constants import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from pipeline.data.images import encode_image, encode_label
from pipeline.data.shards import Manifest, shard_name, write_shard
from pipeline.evaluation.alignment import (
    ALIGNMENT_METRICS,
    AlignmentSums,
    alignment_sums,
    feature_alignment,
    merge_sums,
    zero_sums,
)
from pipeline.evaluation.evaluate import evaluate_models, source_alignment_rows
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.plots import ALIGNMENT_LABELS, feature_alignment_plot, feature_alignment_summary_plot
from pipeline.evaluation.report import NOT_ROWS, feature_alignment_markdown, feature_alignment_table, plot
from pipeline.evaluation.scoring import (
    ShardEvaluation,
    SourceAlignment,
    evaluate_shard,
    source_alignment_shard,
)
from pipeline.models.configured import build_model, load_model
from pipeline.models.pretrained import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
NAMES = ("a", "b", "c", "d", "e")  # a 5-class case
SUM_FIELDS = ("features", "unit_features", "counts")  # of AlignmentSums


def random_case(seed: int, present: list[int], shape=(2, 6, 3, 4), label_size=(6, 8)):
    """Features [N, D, h, w] and labels [N, H, W] drawn from the `present` classes and ignore."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(shape, generator=generator)
    choices = torch.tensor([*present, IGNORE_INDEX])
    labels = choices[torch.randint(0, len(choices), (shape[0], *label_size), generator=generator)]
    return features, labels


def direct_pixels(features: torch.Tensor, labels: torch.Tensor) -> dict[int, torch.Tensor]:
    """Class → its pixels' features [P, D] (float64), labels sampled at ⌊i·H/h⌋ (legacy nearest)."""
    height, width = features.shape[-2:]
    rows = torch.arange(height) * labels.shape[1] // height
    columns = torch.arange(width) * labels.shape[2] // width
    small = labels[:, rows][:, :, columns]  # [N, h, w]
    flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
    return {c: flat[small.reshape(-1) == c] for c in range(len(NAMES)) if bool((small == c).any())}


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b.expand_as(a), dim=-1)


# ------------------------------------------------------------------------------- pure functions
def test_sums_and_entry_match_a_direct_computation():
    # Class 3 only in the source, class 4 only in the target; class 2 nowhere.
    source = random_case(0, [0, 1, 3])
    target = random_case(1, [0, 1, 4])
    source_sums = alignment_sums(*source, num_classes=len(NAMES))
    target_sums = alignment_sums(*target, num_classes=len(NAMES))

    source_pixels, target_pixels = direct_pixels(*source), direct_pixels(*target)
    for c, pixels in target_pixels.items():
        assert target_sums.counts[c] == len(pixels)
        torch.testing.assert_close(target_sums.features[c], pixels.sum(dim=0))
        torch.testing.assert_close(target_sums.unit_features[c], F.normalize(pixels, dim=1).sum(dim=0))
    assert target_sums.counts.sum() == sum(len(p) for p in target_pixels.values())  # ignore skipped

    entry = feature_alignment(source_sums, target_sums, NAMES)
    assert list(entry) == ["per_class", "mean"] and list(entry["per_class"]) == list(NAMES)
    rho_source = {c: p.mean(dim=0) for c, p in source_pixels.items()}
    rho_target = {c: p.mean(dim=0) for c, p in target_pixels.items()}
    expected_cross = {}
    for c, name in enumerate(NAMES):
        values = entry["per_class"][name]
        if c in rho_source and c in rho_target:
            expected_cross[c] = float(cosine(rho_source[c][None], rho_target[c])[0])
            assert values["cross_domain"] == pytest.approx(expected_cross[c], abs=1e-4)
        else:
            assert values["cross_domain"] is None
        if c not in target_pixels:
            assert values == {"cross_domain": None, "intra": None, "inter": None, "nearest_other": None}
            continue
        pixels = target_pixels[c]
        assert values["intra"] == pytest.approx(float(cosine(pixels, rho_target[c]).mean()), abs=1e-4)
        others = {k: float(cosine(pixels, rho).mean()) for k, rho in rho_target.items() if k != c}
        nearest = max(others, key=others.get)
        assert values["inter"] == pytest.approx(others[nearest], abs=1e-4)
        assert values["nearest_other"] == NAMES[nearest]
    assert {NAMES[c] for c in expected_cross} == {"a", "b"}
    assert entry["mean"]["cross_domain"] == pytest.approx(sum(expected_cross.values()) / 2, abs=1e-4)
    intra = [entry["per_class"][NAMES[c]]["intra"] for c in target_pixels]
    assert entry["mean"]["intra"] == pytest.approx(sum(intra) / len(intra), abs=1e-4)
    json.dumps(entry, allow_nan=False)


def test_merge_of_two_partial_sums_equals_the_sums_of_the_whole():
    features, labels = random_case(2, [0, 1, 2, 3, 4], shape=(3, 4, 3, 4))
    whole = alignment_sums(features, labels, num_classes=len(NAMES))
    first = alignment_sums(features[:1], labels[:1], num_classes=len(NAMES))
    second = alignment_sums(features[1:], labels[1:], num_classes=len(NAMES))
    merged = merge_sums([zero_sums(4, len(NAMES)), first, second])
    for field in ("features", "unit_features", "counts"):
        torch.testing.assert_close(getattr(merged, field), getattr(whole, field))
    assert merged.features.dtype == torch.float64
    with pytest.raises(ValueError, match="at least one"):
        merge_sums([])


def directional_sums(directions: dict[int, int], seed: int) -> AlignmentSums:
    """Pixels of class c: random positive multiples of the unit vector e_{directions[c]}."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor(list(directions)).repeat_interleave(4).reshape(1, 1, -1)  # [1, 1, 4·classes]
    axes = torch.tensor([directions[int(c)] for c in labels.flatten()])
    scale = 0.5 + torch.rand(len(axes), generator=generator)
    features = (F.one_hot(axes, len(NAMES)).double() * scale[:, None]).T.reshape(1, len(NAMES), 1, -1)
    return alignment_sums(features, labels, num_classes=len(NAMES))


def test_perfectly_aligned_features():
    directions = {c: c for c in range(len(NAMES))}  # each class its own axis in both domains
    entry = feature_alignment(directional_sums(directions, 0), directional_sums(directions, 1), NAMES)
    for values in entry["per_class"].values():
        assert values["cross_domain"] == 1.0 and values["intra"] == 1.0
        assert values["inter"] == 0.0  # orthogonal prototypes
    assert entry["mean"] == {"cross_domain": 1.0, "intra": 1.0, "inter": 0.0}


def test_two_classes_sharing_a_direction_are_each_others_nearest():
    target = directional_sums({0: 0, 1: 0, 2: 2}, 0)  # a and b point the same way
    source = directional_sums({0: 1, 1: 0, 2: 2}, 1)  # a points elsewhere in the source
    entry = feature_alignment(source, target, NAMES)
    a, b, c = (entry["per_class"][name] for name in "abc")
    assert a["inter"] == 1.0 and a["nearest_other"] == "b"
    assert b["inter"] == 1.0 and b["nearest_other"] == "a"
    assert c["inter"] == 0.0 and c["intra"] == 1.0
    assert a["cross_domain"] == 0.0 and b["cross_domain"] == 1.0
    assert entry["mean"]["inter"] == pytest.approx(2 / 3, abs=1e-4)


def test_a_single_target_class_has_no_inter_class_value():
    entry = feature_alignment(directional_sums({0: 0}, 0), directional_sums({0: 0}, 1), NAMES)
    assert entry["per_class"]["a"] == {
        "cross_domain": 1.0,
        "intra": 1.0,
        "inter": None,
        "nearest_other": None,
    }
    assert entry["mean"] == {"cross_domain": 1.0, "intra": 1.0, "inter": None}


# ------------------------------------------------------------------------------- evaluate stage
IMAGE_SIZE = (32, 48)
LABEL_SCALE = 2  # labels at twice the image size, as full-resolution target-val labels are


def tiny_config(root: Path, **sections: dict) -> Config:
    """The project's params with a CPU-size model; `sections` update params sections (evaluate={...})."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"]["width"] = 0.125
    for section, values in sections.items():
        raw[section] |= values
    return config_from_dict(raw, project_root=root)


def write_rows(folder: Path, index: int, labels: list[np.ndarray], domain: str, seed: int) -> dict:
    """One shard of random images with the given labels; returns its manifest entry."""
    rng = np.random.default_rng(seed)
    rows = [
        {
            "id": f"{domain}_{index}_{i}",
            "image": encode_image(rng.integers(0, 256, (*IMAGE_SIZE, 3), dtype=np.uint8), "png"),
            "label": encode_label(label),
            "height": IMAGE_SIZE[0],
            "width": IMAGE_SIZE[1],
            "domain": domain,
            "split": "val" if domain == "target" else "train",
        }
        for i, label in enumerate(labels)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    return write_shard(rows, folder / shard_name(index), rows_per_row_group=1)


def block_label(rng: np.random.Generator, block: int) -> np.ndarray:
    """A label constant over block × block squares: nearest resizing to feature resolution (one pixel per
    block) keeps each block's class, so feature-resolution counts × block² are the full-resolution counts."""
    height, width = (LABEL_SCALE * size // block for size in IMAGE_SIZE)
    small = rng.choice([0, 2, 8, 13, IGNORE_INDEX], size=(height, width)).astype(np.uint8)
    return np.kron(small, np.ones((block, block), dtype=np.uint8))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> tuple[Config, Path]:
    root = tmp_path_factory.mktemp("alignment")
    config = tiny_config(root)
    path = root / "models" / "model.pt"
    path.parent.mkdir()
    write_checkpoint(build_model(config).state_dict(), path)
    return config, path


def test_evaluate_shard_returns_target_sums_consistent_with_its_confusion_matrix(model_file, tmp_path):
    config, path = model_file
    model = load_model(config, path)
    with torch.no_grad():
        embedding = model(torch.zeros(1, 3, *IMAGE_SIZE), domain="target").embedding
    feature_size = tuple(embedding.shape[-2:])
    block = LABEL_SCALE * IMAGE_SIZE[0] // feature_size[0]
    assert feature_size == tuple(size * LABEL_SCALE // block for size in IMAGE_SIZE)
    rng = np.random.default_rng(0)
    shard = tmp_path / shard_name(0)
    write_rows(tmp_path, 0, [block_label(rng, block) for _ in range(2)], "target", seed=1)

    result = evaluate_shard(ShardEvaluation(config, str(path), str(shard), keep_predictions=1), CPU, 1)
    matrix = ConfusionMatrix.from_dict(result["matrix"])
    sums = result["alignment"]
    assert sums.features.shape == (NUM_CLASSES, model.embedding_dim)
    label_pixels = matrix.matrix.sum(dim=1).double()  # ground-truth pixels per class, full resolution
    torch.testing.assert_close(sums.counts * block**2, label_pixels)
    assert set(torch.nonzero(sums.counts).flatten().tolist()) <= {0, 2, 8, 13}
    assert len(result["predictions"]) == 1

    off = tiny_config(config.project_root, evaluate={"alignment_source_images": 0})
    assert (
        evaluate_shard(ShardEvaluation(off, str(path), str(shard), keep_predictions=0), CPU, 1)["alignment"]
        is None
    )


def test_source_sums_cover_the_first_rows_in_shard_order(model_file, tmp_path):
    config, path = model_file
    config = tiny_config(tmp_path, evaluate={"alignment_source_images": 4})
    folder = config.shards_root / "source"
    rng = np.random.default_rng(2)
    labels = [rng.choice([1, 5, IGNORE_INDEX], size=IMAGE_SIZE).astype(np.uint8) for _ in range(6)]
    entries = [write_rows(folder, index, labels[3 * index : 3 * index + 3], "source", seed=index)
               for index in range(2)]  # fmt: skip
    Manifest("source", "gta5", "source", 6, entries, {}, list(IMAGE_SIZE)).write(folder)

    plan = source_alignment_rows(config)
    assert plan == [(folder / shard_name(0), 3), (folder / shard_name(1), 1)]
    parts = [
        source_alignment_shard(SourceAlignment(config, str(path), str(shard), rows), CPU, 1)
        for shard, rows in plan
    ]
    one_row = source_alignment_shard(SourceAlignment(config, str(path), str(plan[1][0]), 1), CPU, 1)
    torch.testing.assert_close(parts[1].features, one_row.features)
    counts = merge_sums(parts).counts
    stride = config.model.output_stride  # labels at image size: pixel (s·i, s·j) lands on feature (i, j)
    assert counts.sum() == sum(int((label[::stride, ::stride] != IGNORE_INDEX).sum()) for label in labels[:4])
    assert set(torch.nonzero(counts).flatten().tolist()) <= {1, 5}


def test_models_evaluated_as_one_set_of_tasks_equal_each_model_alone(tmp_path, ray_runtime):
    # Two different models, uneven target-val shards and a source plan over two shards: the stage's one
    # set of Ray tasks must give each model exactly what its own tasks give, not a neighbour's parts.
    config = tiny_config(tmp_path, evaluate={"alignment_source_images": 4})
    rng = np.random.default_rng(3)
    block = 2 * LABEL_SCALE
    val = config.shards_root / "target_val"
    entries = [write_rows(val, i, [block_label(rng, block) for _ in range(n)], "target", seed=10 + i)
               for i, n in enumerate((3, 1))]  # fmt: skip
    Manifest("target_val", "cityscapes", "target", 4, entries, {}, list(IMAGE_SIZE)).write(val)
    source = config.shards_root / "source"
    labels = [rng.choice([1, 5, IGNORE_INDEX], size=IMAGE_SIZE).astype(np.uint8) for _ in range(6)]
    entries = [write_rows(source, i, labels[3 * i : 3 * i + 3], "source", seed=20 + i) for i in range(2)]
    Manifest("source", "gta5", "source", 6, entries, {}, list(IMAGE_SIZE)).write(source)
    paths = {}
    for name, seed in (("first", 0), ("second", 1)):
        torch.manual_seed(seed)
        paths[name] = tmp_path / f"{name}.pt"
        write_checkpoint(build_model(config).state_dict(), paths[name])
    plan = source_alignment_rows(config)

    together = evaluate_models(config, paths, panel_images=2, alignment_plan=plan)

    assert list(together) == ["first", "second"]
    for name, path in paths.items():
        tasks = [
            ShardEvaluation(config, str(path), str(val / shard_name(i)), 2 if i == 0 else 0) for i in range(2)
        ]
        shards = [evaluate_shard(task, CPU, 1) for task in tasks]
        alone = ConfusionMatrix.merge_all(ConfusionMatrix.from_dict(shard["matrix"]) for shard in shards)
        assert torch.equal(together[name].matrix.matrix, alone.matrix)
        assert [row_id for row_id, _ in together[name].predictions] == ["target_0_0", "target_0_1"]
        for (_, mine), (_, own) in zip(together[name].predictions, shards[0]["predictions"], strict=True):
            np.testing.assert_array_equal(mine, own)
        own_sums = merge_sums([shard["alignment"] for shard in shards])
        own_source = merge_sums(
            [
                source_alignment_shard(SourceAlignment(config, str(path), str(s), rows), CPU, 1)
                for s, rows in plan
            ]
        )
        for mine, own in (
            (together[name].alignment, own_sums),
            (together[name].source_alignment, own_source),
        ):
            assert all(torch.equal(getattr(mine, field), getattr(own, field)) for field in SUM_FIELDS)
    # The two models differ, so a mix-up of their parts could not pass unseen.
    assert not torch.equal(
        together["first"].source_alignment.features, together["second"].source_alignment.features
    )
    assert evaluate_models(config, paths, panel_images=0)["first"].source_alignment is None


# ------------------------------------------------------------------------------- plots and report
def alignment_entry(value: float, nearest: str = "road") -> dict:
    per_class = {
        name: dict.fromkeys(ALIGNMENT_METRICS, value) | {"nearest_other": nearest} for name in CLASS_NAMES
    }
    per_class["train"] = dict.fromkeys([*ALIGNMENT_METRICS, "nearest_other"])  # no pixels
    return {"per_class": per_class, "mean": dict.fromkeys(ALIGNMENT_METRICS, value)}


def test_plots_are_written(tmp_path):
    assert tuple(ALIGNMENT_LABELS) == ALIGNMENT_METRICS
    entry = alignment_entry(0.5)
    assert_png(
        feature_alignment_plot(entry["per_class"], tmp_path / "feature_alignment_dass.png", title="dass")
    )
    means = {"source_only": entry["mean"], "dass": alignment_entry(-0.25)["mean"] | {"inter": None}}
    assert_png(feature_alignment_summary_plot(means, tmp_path / "feature_alignment.png"))


def test_report_table_averages_seeds_and_is_not_a_row(tmp_path):
    config = tiny_config(tmp_path, ablation={"rows": ["base", "dass"], "seeds": [0, 1, 2]})
    evaluation = {"source_only": {"feature_alignment": alignment_entry(0.2)}, "oracle": {}}
    for row in ("base", "dass"):  # seed means 0.2; nearest other class: sky twice, road once
        evaluation |= {f"{row}_seed0": {"feature_alignment": alignment_entry(0.1, "road")}}
        evaluation |= {
            f"{row}_seed{seed}": {"feature_alignment": alignment_entry(0.25, "sky")} for seed in (1, 2)
        }
    table = feature_alignment_table(config, evaluation)
    assert list(table) == ["source_only", "base", "dass"]  # oracle was evaluated without the diagnostic
    assert table["dass"]["seeds"] == 3
    assert table["dass"]["mean"] == dict.fromkeys(ALIGNMENT_METRICS, 0.2)
    assert table["dass"]["per_class"]["road"] == dict.fromkeys(ALIGNMENT_METRICS, 0.2) | {
        "nearest_other": "sky"
    }
    assert table["dass"]["per_class"]["train"] == dict.fromkeys([*ALIGNMENT_METRICS, "nearest_other"])
    lines = feature_alignment_markdown(table)
    assert "## Feature alignment on target val" in lines
    assert "| source only | 0.200 | 0.200 | 0.200 |" in lines
    assert feature_alignment_markdown({}) == []

    assert {"pseudo_labels", "feature_alignment"} <= set(NOT_ROWS)
    ablation = {"source_only": {"miou": 30.0, "miou_std": 0.0}, "dass": {"miou": 40.0, "miou_std": 1.0}}
    plot(ablation | {"pseudo_labels": {}, "feature_alignment": table}, tmp_path / "ablation.png")
    assert_png(tmp_path / "ablation.png", min_bytes=1_000)
