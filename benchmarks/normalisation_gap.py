"""Normalisation gap of the embedded benchmark (issue 13, "benchmark realism"): how much of the source-only
→ target-oracle gap re-estimating BatchNorm statistics on target images alone (AdaBN) recovers.

On the real GTA5 → Cityscapes pair normalisation-only adaptation recovers a small part of that gap; a
generator whose shift it mostly undoes is a global colour shift, and a benchmark on which AdaBN beats the
method cannot show the method's value. Target of the issue: the share ≤ about 1/3, with source only still
clearly below the oracle.

In a scratch project folder (default /tmp/realism/<name>, its own params.yaml: the project's with the
overrides below, so relative paths resolve there and nothing of the project's data/, models/ or metrics/
is touched) this runs the DAG's own functions:
- `stages.synthesize.synthesize` (timed: the renderer's speed at these counts, Ray tasks included),
- `stages.preprocess.preprocess`,
- `stages.warmup.warmup`: the source-only model and the target oracle,
- `stages.pseudo_label.write_normalisation_only_model`: the normalisation-only model (the warmup model
  with every BatchNorm's statistics re-estimated on target-train images, no training),
- `pipeline.evaluation.evaluate.evaluate_model` + `protocol_metrics` of the three on target val,
and prints their mIoU, the share of the gap normalisation recovers, per-class IoU, and the class pixel shares
of the label shards (source, target train, target val: share of the labelled pixels of each train id).

A diagnostic beside the rows, "colour matched": the source-only model, BatchNorm untouched, on target-val
images whose RGB values are mapped by one affine colour transform that gives target-train colours the
source's mean and covariance. If it recovers as much of the gap as normalisation only, the shift that
normalisation undoes is a global colour transform of the input (what the issue suspects).

Reduced sizes (fewer images, fewer steps) keep one run within minutes on 2 cores; compare only runs made
with the same flags (the JSON records them).

`--reuse-source-only DIR` takes the source-only model of an earlier run in DIR instead of training it again,
when that run's effective params and source shards (manifest checksums) equal this run's: training is
deterministic on CPU, so the model would come out the same (a generator change that touches only the
target leaves the source shards byte-identical). Only the oracle is trained then.

`--measure-only` re-measures the scratch project of an earlier run (its params.yaml, data and models as
they are; the run's timings are kept from the figures it wrote there).

    python -m benchmarks.normalisation_gap --out /tmp/realism/before.json [--name before]
        [--warmup-steps 400] [--source-count 300] [--target-train-count 300] [--val-count 100]
        [--reuse-source-only /tmp/realism/before] [--measure-only]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import yaml

from benchmarks.timing import PARAMS_FILE, format_table, machine, write_json
from pipeline.artifacts import NORMALISATION_ONLY_MODEL, ORACLE_MODEL, SPLITS, WARMUP_MODEL
from pipeline.config import Config, flatten, load_config, set_dotted
from pipeline.constants import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from pipeline.data.images import decode_image, decode_label
from pipeline.data.shards import Manifest, shard_paths, verify_shards
from pipeline.evaluation.evaluate import evaluate_model
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.prediction import predict
from pipeline.evaluation.protocols import protocol_metrics
from pipeline.models.configured import load_model
from pipeline.tracking.mlflow_run import tracking_available
from pipeline.training.supervised import SupervisedJob, train_supervised
from stages.preprocess import preprocess
from stages.pseudo_label import write_normalisation_only_model
from stages.synthesize import synthesize
from stages.warmup import warmup

SCRATCH = Path("/tmp/realism")
# What a previous run left in a scratch project; removed first so every run starts from nothing.
RUN_OUTPUTS = ("data", "models", "metrics", "ray_results", "mlflow.db", "mlruns")
# The three reference rows, in report order: name → checkpoint in the scratch project.
ROWS = {"source_only": WARMUP_MODEL, "normalisation_only": NORMALISATION_ONLY_MODEL, "oracle": ORACLE_MODEL}
# Share of the source-only → oracle gap above which normalisation alone is "most of the shift" (the issue).
TARGET_GAP_SHARE = 1.0 / 3.0
COLOUR_IMAGES = 100  # images of source and target train whose colour statistics the diagnostic matches
FIGURES = "normalisation_gap.json"  # copy of the figures inside the scratch project (for --measure-only)
RUN_KEYS = ("overrides", "source_only_reused_from", "seconds", "synthesize_ms_per_image")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the figures")
    parser.add_argument("--name", default="current", help="run name: the scratch folder's name")
    parser.add_argument("--folder", type=Path, default=None, help=f"scratch project (default {SCRATCH}/NAME)")
    parser.add_argument("--warmup-steps", type=int, default=400, help="SGD steps of source only and oracle")
    parser.add_argument("--source-count", type=int, default=300, help="GTA5-like source images")
    parser.add_argument("--target-train-count", type=int, default=300, help="target-train images")
    parser.add_argument("--val-count", type=int, default=100, help="target-val images (the evaluation)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (data.synthetic.seed)")
    parser.add_argument(
        "--measure-only",
        action="store_true",
        help="only measure the scratch project of an earlier run (no rendering, no training)",
    )
    parser.add_argument(
        "--reuse-source-only",
        type=Path,
        default=None,
        metavar="DIR",
        help="scratch folder of an earlier run with the same params and source shards",
    )
    return parser


def scratch_config(args: argparse.Namespace, folder: Path) -> tuple[Config, dict[str, Any]]:
    """The project's params.yaml copied into `folder`, loaded with the harness's overrides."""
    if folder.resolve() == PARAMS_FILE.parent:
        raise SystemExit(f"error: --folder {folder} is the project itself; give a scratch folder")
    folder.mkdir(parents=True, exist_ok=True)
    for name in RUN_OUTPUTS:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True) if path.is_file() else None
    overrides: dict[str, Any] = {
        "data.synthetic.seed": args.seed,
        "data.synthetic.gta5.count": args.source_count,
        # The SYNTHIA-like source is not read in a gta5 → cityscapes run; a few images keep its layout valid.
        "data.synthetic.synthia.count": 2,
        "data.synthetic.cityscapes.train_count": args.target_train_count,
        "data.synthetic.cityscapes.val_count": args.val_count,
        "warmup.steps": args.warmup_steps,
        "warmup.oracle": True,
        "evaluate.alignment_source_images": 0,  # not a reference row: skip the feature diagnostic
    }
    # The effective params are written out, so the folder alone says what ran (and can be compared).
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return load_config(folder / "params.yaml"), overrides


def reuse_source_only(config: Config, earlier: Path) -> None:
    """Copy `earlier`'s source-only model after checking it was trained from the same params and source
    shards; raise SystemExit naming what differs otherwise."""
    previous = load_config(earlier / "params.yaml")
    differing = sorted(k for k, v in flatten(config).items() if flatten(previous).get(k) != v)
    if differing:
        raise SystemExit(f"error: --reuse-source-only {earlier}: params differ at {', '.join(differing)}")
    checksums = [
        [shard["sha256"] for shard in Manifest.read(c.shards_root / "source").shards]
        for c in (config, previous)
    ]
    if checksums[0] != checksums[1]:
        raise SystemExit(
            f"error: --reuse-source-only {earlier}: the source shards differ (the generator changed)"
        )
    config.resolve(WARMUP_MODEL).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(previous.resolve(WARMUP_MODEL), config.resolve(WARMUP_MODEL))


def oracle_only(config: Config) -> dict[str, Any]:
    """The oracle half of `warmup` (same job, same output file)."""
    tracking_available(config)
    job = SupervisedJob(config, "oracle", "target_train", "target", "warmup")
    return train_supervised(job, config.resolve(ORACLE_MODEL))


def class_shares(config: Config, split: str) -> list[float]:
    """Share of the labelled pixels of each train id in a split's label shards (sums to 1)."""
    folder = config.shards_root / split
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for shard in shard_paths(folder, verify_shards(folder)):
        for data in pq.read_table(shard, columns=["label"]).column("label").to_pylist():
            label = decode_label(data)
            counts += np.bincount(label[label != IGNORE_INDEX].ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    return (counts / max(int(counts.sum()), 1)).tolist()


def gap_share(source_only: float, normalisation_only: float, oracle: float) -> float:
    """(normalisation only − source only) / (oracle − source only); NaN without a gap."""
    gap = oracle - source_only
    return (normalisation_only - source_only) / gap if gap > 0 else float("nan")


def split_images(config: Config, split: str, limit: int | None = None) -> Iterator[tuple[np.ndarray, bytes]]:
    """(uint8 image [H, W, 3], encoded label) of a split's shards, in shard order, at most `limit`."""
    folder = config.shards_root / split
    count = 0
    for shard in shard_paths(folder, verify_shards(folder)):
        for row in pq.read_table(shard, columns=["image", "label"]).to_pylist():
            if limit is not None and count >= limit:
                return
            count += 1
            yield decode_image(row["image"]), row["label"]


def colour_statistics(images: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean [3] and covariance [3, 3] of the RGB values (0–1) of all pixels of `images`."""
    total, outer, pixels = np.zeros(3), np.zeros((3, 3)), 0
    for image in images:
        rgb = image.reshape(-1, 3).astype(np.float64) / 255.0
        total += rgb.sum(axis=0)
        outer += rgb.T @ rgb
        pixels += len(rgb)
    mean = total / pixels
    return mean, outer / pixels - np.outer(mean, mean)


def colour_transfer(
    source: tuple[np.ndarray, np.ndarray], target: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """[3, 4] affine map x ↦ A·x + b of RGB (0–1) that gives target-distributed colours the source's mean
    and covariance: A = C_s^½ · C_t^−½, b = μ_s − A·μ_t (whiten with the target's covariance, colour with
    the source's; symmetric square roots), so A·C_t·Aᵀ = C_s."""

    def power(covariance: np.ndarray, exponent: float) -> np.ndarray:
        values, vectors = np.linalg.eigh(covariance)
        return (vectors * np.maximum(values, 1e-12) ** exponent) @ vectors.T

    (mean_s, cov_s), (mean_t, cov_t) = source, target
    matrix = power(cov_s, 0.5) @ power(cov_t, -0.5)
    return np.column_stack([matrix, mean_s - matrix @ mean_t])


@torch.no_grad()
def colour_matched_metrics(config: Config) -> dict[str, Any]:
    """Diagnostic, not a reference row: the source-only model on target-val images whose RGB values went
    through `colour_transfer` (target-train → source statistics), BatchNorm untouched. When this recovers
    as much as normalisation only, the shift normalisation undoes is a global colour transform."""
    source = colour_statistics(image for image, _ in split_images(config, "source", COLOUR_IMAGES))
    target = colour_statistics(image for image, _ in split_images(config, "target_train", COLOUR_IMAGES))
    transfer = colour_transfer(source, target).astype(np.float32)
    model = load_model(config, config.resolve(WARMUP_MODEL))
    matrix = ConfusionMatrix(NUM_CLASSES, IGNORE_INDEX)
    for image, data in split_images(config, "target_val"):
        rgb = image.reshape(-1, 3).astype(np.float32) / 255.0 @ transfer[:, :3].T + transfer[:, 3]
        matched = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).reshape(image.shape)
        label = torch.from_numpy(decode_label(data).astype(np.int64))
        matrix.update(predict(model, matched, tuple(label.shape))[0], label)
    return protocol_metrics(matrix, config.data.source.name)


def run_stages(args: argparse.Namespace, config: Config) -> dict[str, float]:
    """Render, preprocess, train source only and the oracle, build normalisation only; seconds of each."""
    seconds: dict[str, float] = {}

    def timed(name: str, body: Callable[[Config], Any]) -> None:
        started = time.perf_counter()
        body(config)
        seconds[name] = round(time.perf_counter() - started, 1)
        print(f"{name}: {seconds[name]} s", flush=True)

    timed("synthesize", synthesize)
    timed("preprocess", preprocess)
    if args.reuse_source_only:
        reuse_source_only(config, args.reuse_source_only)
        timed("warmup", oracle_only)
    else:
        timed("warmup", warmup)
    timed("normalisation_only", write_normalisation_only_model)
    return seconds


def measure(config: Config) -> dict[str, Any]:
    """The reference rows, the colour-matched diagnostic and the class shares of a scratch project."""
    metrics = {}
    for row, path in ROWS.items():
        evaluation = evaluate_model(config, config.resolve(path), panel_images=0)
        metrics[row] = protocol_metrics(evaluation.matrix, config.data.source.name)
    colour_matched = colour_matched_metrics(config)
    miou = {row: metrics[row]["miou"] for row in ROWS}
    shares = {split: class_shares(config, split) for split in SPLITS}
    return {
        "miou": miou,
        "gap_share": round(gap_share(miou["source_only"], miou["normalisation_only"], miou["oracle"]), 4),
        "target_gap_share": round(TARGET_GAP_SHARE, 4),
        "colour_matched": {
            "miou": colour_matched["miou"],
            "gap_share": round(gap_share(miou["source_only"], colour_matched["miou"], miou["oracle"]), 4),
        },
        "per_class_iou": {row: metrics[row]["per_class_iou"] for row in ROWS}
        | {"colour_matched": colour_matched["per_class_iou"]},
        "class_shares": {split: dict(zip(CLASS_NAMES, s, strict=True)) for split, s in shares.items()},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    folder = args.folder or SCRATCH / args.name
    if args.measure_only:
        config = load_config(folder / "params.yaml")
        earlier = json.loads((folder / FIGURES).read_text()) if (folder / FIGURES).is_file() else {}
        run_info = {key: earlier.get(key) for key in RUN_KEYS}
    else:
        config, overrides = scratch_config(args, folder)
        seconds = run_stages(args, config)
        synthetic = config.data.synthetic
        images = synthetic.gta5.count + synthetic.synthia.count
        images += synthetic.cityscapes.train_count + synthetic.cityscapes.val_count
        run_info = {
            "overrides": overrides,
            "source_only_reused_from": str(args.reuse_source_only) if args.reuse_source_only else None,
            "seconds": seconds,
            "synthesize_ms_per_image": round(1000.0 * seconds["synthesize"] / images, 1),
        }
    figures = {"name": folder.name, "folder": str(folder), **run_info, **measure(config)}
    figures["machine"] = machine(torch.device("cpu"))
    print_figures(figures)
    write_json(folder / FIGURES, figures)
    write_json(args.out, figures)
    return figures


def print_figures(figures: dict[str, Any]) -> None:
    miou, iou, shares = figures["miou"], figures["per_class_iou"], figures["class_shares"]
    colour = figures["colour_matched"]
    share = figures["gap_share"]
    verdict = "no gap" if share != share else "met" if share <= TARGET_GAP_SHARE else "MISSED"  # NaN ≠ NaN
    print(format_table(
        "reference rows on target val (mIoU, 19 classes, %; gap share: of the source only → oracle gap)",
        ["source only", "normalisation only", "oracle", "gap share", f"≤ {TARGET_GAP_SHARE:.2f}",
         "colour matched (diagnostic)", "its gap share"],
        [[miou["source_only"], miou["normalisation_only"], miou["oracle"], figures["gap_share"],
          verdict, colour["miou"], colour["gap_share"]]],
    ))  # fmt: skip
    columns = [*ROWS, "colour_matched"]
    print(format_table(
        "per class: IoU of each row (%) and pixel share of each split's labels (%)",
        ["class", *columns, *(f"share {split}" for split in shares)],
        [[name, *(iou[row][name] for row in columns), *(round(100 * shares[s][name], 2) for s in shares)]
         for name in CLASS_NAMES],
    ))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
