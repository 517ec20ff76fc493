"""Data path: rows/s of the Parquet shard loader versus a loader that decodes the original PNG folders,
and the share of a warmup step spent waiting for data (issue 6, target 3: shards ≥ 1.0 × PNG at the
same number of DataLoader workers; waiting ≤ 5 % of the step on 2 cores).

- shards: what `training.supervised.batches` builds: `read_units` (with the sha256 check) →
  `ShardStream` with `training_transform(augment_config(config))` → `make_loader`.
- PNG folders: the source dataset in its original layout (`readers.list_samples` / `load_sample`:
  PNG decode, palette label ids → train ids), resized to `preprocess.source_size` as the preprocess
  stage does (so both loaders yield the same samples: same size, same content scale), then the same
  training transform, fed through the same `make_loader` (same batch size, workers, prefetch). Rows are
  dealt to loader workers round-robin and reshuffled every epoch, like the shard stream's row groups.

Throughput: for 0, 1 and 2 loader workers, the rows/s of `batches` consecutive batches after start-up
(until every worker has delivered its first batch, which pays for starting the worker processes and,
for the shards, the sha256 check; reported separately), median over repetitions, the two loaders
interleaved. The consumer does nothing but fetch, so this is the loader's own rate.

Waiting share: a warmup-like loop (the params.yaml model, `train.batch_size` at `train.crop`, source CE,
backward, SGD) with `train.loader_workers`, timing `next(loader)` against the whole step over the steps
after a few warm-up steps.

Data: the project's synthetic benchmark under data/raw/<source> and data/shards/source when they exist
(read only); otherwise a small copy is rendered with the pipeline's own functions into a temporary
folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from benchmarks.timing import (
    PARAMS_FILE,
    Budget,
    benchmark_parser,
    budget,
    finish_benchmark,
    format_table,
    ratio,
    start_benchmark,
)
from pipeline.config import Config, load_config
from pipeline.data.images import resize_image, resize_label
from pipeline.data.loader import SampleTransform, ShardStream, make_loader, read_units, training_transform
from pipeline.data.preprocess import ShardTask, encode_options, process_shard, split_specs
from pipeline.data.readers import SampleRef, list_samples, load_sample
from pipeline.data.shards import Manifest, shard_name
from pipeline.data.transforms import image_to_tensor, label_to_tensor
from pipeline.losses.segmentation import segmentation_cross_entropy
from pipeline.models.configured import build_model
from pipeline.synthetic.samples import render_scene
from pipeline.synthetic.writers import write_gta5_sample
from pipeline.training.optim import build_optimizer
from pipeline.training.worker import augment_config

TARGET_THROUGHPUT_RATIO = 1.0
TARGET_WAIT_SHARE = 0.05
WORKER_COUNTS = (0, 1, 2)
TEMPORARY_ROWS = 60  # rows of the rendered copy when the project's data is missing


class PngFolderStream(IterableDataset):
    """Endless training samples decoded from the original dataset files."""

    def __init__(
        self,
        refs: list[SampleRef],
        size: tuple[int, int],
        interpolation: str,
        transform: SampleTransform,
        seed: int = 0,
        unknown_ids: str = "error",
    ) -> None:
        super().__init__()
        self.refs, self.size, self.interpolation = refs, size, interpolation
        self.transform, self.seed, self.unknown_ids = transform, seed, unknown_ids

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, worker])
        epoch = 0
        while True:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.refs))
            for index in order[worker::workers]:
                ref = self.refs[index]
                image, label = load_sample(ref, self.unknown_ids)
                image = resize_image(image, self.size, self.interpolation)
                label = resize_label(label, self.size)
                image, label = self.transform(image, label, rng)
                yield {"id": ref.id, "image": image_to_tensor(image), "label": label_to_tensor(label)}
            epoch += 1


# --------------------------------------------------------------------------------------------- data


def render_temporary_copy(config: Config, folder: Path, rows: int) -> tuple[Path, Path]:
    """A small source dataset in the GTA5 layout and its shards, made with the pipeline's functions."""
    synthetic = config.data.synthetic
    raw = folder / "raw" / "gta5"
    for index in range(rows):
        sample = render_scene("gta5", index, synthetic.seed, synthetic.gta5.height, synthetic.gta5.width)
        write_gta5_sample(raw, index, sample)
    spec = dataclasses.replace(split_specs(config)[0], dataset="gta5", root=raw)
    refs = list_samples("gta5", raw)
    shards = folder / "shards" / "source"
    shards.mkdir(parents=True)
    per_shard = config.preprocess.rows_per_shard
    entries = []
    for index, start in enumerate(range(0, len(refs), per_shard)):
        task = ShardTask(index, spec, tuple(refs[start : start + per_shard]), str(shards / shard_name(index)),
                         encode_options(config))  # fmt: skip
        entries.append(process_shard(task)["entry"])
    Manifest("source", "gta5", "source", len(refs), entries, {}, list(spec.image_size)).write(shards)
    return raw, shards


def locate_data(config: Config, scratch: Path) -> tuple[str, Path, Path, str]:
    """(dataset name, raw folder, shards folder, where they come from)."""
    dataset = config.data.source.name
    raw, shards = config.source_root, config.shards_root / "source"
    if raw.is_dir() and (shards / "manifest.json").is_file():
        return dataset, raw, shards, "the project's data (data/raw, data/shards; read only)"
    raw, shards = render_temporary_copy(config, scratch, TEMPORARY_ROWS)
    return "gta5", raw, shards, f"a temporary rendered copy of {TEMPORARY_ROWS} rows"


# ------------------------------------------------------------------------------------------ loaders


def shard_loader(config: Config, shards: Path, workers: int, seed: int = 0) -> DataLoader:
    """As `training.supervised.batches` builds it (one rank)."""
    stream = ShardStream(read_units(shards), seed=seed, transform=training_transform(augment_config(config)))
    return make_loader(stream, batch_size=config.train.batch_size, num_workers=workers)


def png_loader(config: Config, dataset: str, raw: Path, workers: int, seed: int = 0) -> DataLoader:
    refs = list_samples(dataset, raw)
    stream = PngFolderStream(
        refs,
        config.preprocess.source_size.as_tuple(),
        config.preprocess.image_interpolation,
        training_transform(augment_config(config)),
        seed,
        config.preprocess.unknown_label_ids,
    )
    return make_loader(stream, batch_size=config.train.batch_size, num_workers=workers)


def throughput(make: Callable[[], DataLoader], batches: int) -> tuple[float, float]:
    """(start-up seconds, rows/s of the next `batches` batches).

    Start-up lasts until each worker has delivered its first batch (one batch with 0 workers): the
    workers decode their first batches in parallel while the first is awaited, so counting those in
    the rate would flatter it.
    """
    started = time.perf_counter()
    loader = make()
    iterator = iter(loader)
    for _ in range(max(1, loader.num_workers)):
        next(iterator)
    first = time.perf_counter() - started
    rows = 0
    started = time.perf_counter()
    for _ in range(batches):
        rows += len(next(iterator)["id"])
    seconds = time.perf_counter() - started
    del iterator  # stops the worker processes before the next measurement
    return first, rows / seconds


def compare_throughput(
    loaders: dict[str, Callable[[], DataLoader]], batches: int, repeats: int
) -> dict[str, dict[str, float | list[float]]]:
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in loaders}
    names = list(loaders)
    for repetition in range(repeats):
        for name in names if repetition % 2 == 0 else reversed(names):
            samples[name].append(throughput(loaders[name], batches))
    return {
        name: {
            "rows_per_s": statistics.median(rate for _, rate in values),
            "startup_s": statistics.median(first for first, _ in values),
            "samples_rows_per_s": [round(rate, 2) for _, rate in values],
        }
        for name, values in samples.items()
    }


# ------------------------------------------------------------------------------------- waiting share


def waiting_share(config: Config, loader: DataLoader, warmup: int, steps: int, device: torch.device) -> dict:
    """Seconds in `next(loader)` versus whole steps of a warmup-like loop."""
    torch.manual_seed(0)
    model = build_model(config).to(device).train()
    optimizer = build_optimizer(model, config.train.optim)
    data = iter(loader)
    waits, totals = [], []
    for step in range(warmup + steps):
        started = time.perf_counter()
        batch = next(data)
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        fetched = time.perf_counter()
        loss = segmentation_cross_entropy(model(images, domain="source").logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss.detach())  # the loop reads every loss (finiteness check, logging)
        if step >= warmup:
            waits.append(fetched - started)
            totals.append(time.perf_counter() - started)
    del data
    return {
        "share": ratio(sum(waits), sum(totals)),
        "wait_ms_per_step": 1000 * sum(waits) / len(waits),
        "step_ms": 1000 * sum(totals) / len(totals),
        "steps": steps,
    }


# ---------------------------------------------------------------------------------------------- run


def build_parser() -> argparse.ArgumentParser:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--batches", type=int, default=None, help="timed batches per throughput sample")
    parser.add_argument("--steps", type=int, default=None, help="timed steps of the waiting-share loop")
    return parser


def run(args: argparse.Namespace) -> dict:
    device, info = start_benchmark(args)
    config = load_config(PARAMS_FILE)
    chosen = budget(args, full=Budget(warmup=5, repeats=3), quick=Budget(warmup=2, repeats=1))
    batches = args.batches or (4 if args.quick else 20)
    steps = args.steps or (5 if args.quick else 30)
    figures: dict = {"machine": info}
    with tempfile.TemporaryDirectory(prefix="dass-bench-data-") as scratch:
        dataset, raw, shards, origin = locate_data(config, Path(scratch))
        size = config.preprocess.source_size.as_tuple()
        print(
            f"data: {origin}; PNG folder {raw} ({dataset}), shards {shards}; both yield "
            f"{size[0]}×{size[1]} samples cropped to {config.train.crop.height}×{config.train.crop.width}, "
            f"batch {config.train.batch_size}"
        )
        rows = []
        figures["throughput"] = {}
        for workers in WORKER_COUNTS:
            result = compare_throughput(
                {
                    "shards": lambda w=workers: shard_loader(config, shards, w),
                    "png": lambda w=workers: png_loader(config, dataset, raw, w),
                },
                batches,
                chosen.repeats,
            )
            speedup = ratio(result["shards"]["rows_per_s"], result["png"]["rows_per_s"])
            figures["throughput"][f"workers_{workers}"] = {**result, "shards_over_png": speedup}
            verdict = "met" if speedup >= TARGET_THROUGHPUT_RATIO else "MISSED"
            shard, png = result["shards"], result["png"]
            rows.append([workers, shard["rows_per_s"], png["rows_per_s"], f"{speedup:.2f}×", verdict,
                         shard["startup_s"], png["startup_s"]])  # fmt: skip
        print()
        print(format_table(
            f"loader throughput ({batches} batches after the first, median of {chosen.repeats})",
            ["workers", "shards rows/s", "PNG rows/s", "shards / PNG", f"≥ {TARGET_THROUGHPUT_RATIO}",
             "shards start-up s", "PNG start-up s"],
            rows,
        ))  # fmt: skip

        workers = config.train.loader_workers
        shares = {
            "shards": waiting_share(
                config, shard_loader(config, shards, workers), chosen.warmup, steps, device
            ),
            "png": waiting_share(
                config, png_loader(config, dataset, raw, workers), chosen.warmup, steps, device
            ),
        }
        figures["waiting"] = {"loader_workers": workers, **shares}
        print()
        print(format_table(
            f"warmup-like loop: time waiting for data ({steps} steps after {chosen.warmup}, "
            f"train.loader_workers = {workers})",
            ["loader", "wait ms / step", "step ms", "wait share", f"≤ {TARGET_WAIT_SHARE:.0%}"],
            [[name, s["wait_ms_per_step"], s["step_ms"], f"{s['share']:.1%}",
              "met" if s["share"] <= TARGET_WAIT_SHARE else "MISSED"] for name, s in shares.items()],
        ))  # fmt: skip
    return finish_benchmark(args, figures)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
