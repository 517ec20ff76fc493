"""What every benchmark shares: warm-up runs, the median of N repetitions, side-by-side comparisons,
the description of the machine, the command-line flags and the printed tables.

Conventions:
- A figure is the median of `repeats` timed repetitions after `warmup` untimed ones.
- Candidates compared in one table are interleaved (each repetition runs every candidate once, in an
  order that alternates), so a change of background load during the run hits all of them alike and
  the ratios stay meaningful even on a busy machine; the absolute milliseconds do not.
- `--threads N` calls `torch.set_num_threads(N)` before anything runs; the machine line reports the
  thread count actually in use, and the 1-minute load average so a busy machine is visible.
- On CUDA every timed call is bracketed by `torch.cuda.synchronize`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = PROJECT_ROOT / "params.yaml"


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed repetition."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def ms(self) -> float:
        """Median in milliseconds."""
        return 1000.0 * self.median

    @property
    def spread(self) -> float:
        """(max − min) / median: how noisy the repetitions were."""
        return (max(self.samples) - min(self.samples)) / self.median if self.median > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"median_ms": round(self.ms, 3), "samples_ms": [round(1000 * s, 3) for s in self.samples]}


@dataclass(frozen=True)
class Budget:
    """Untimed warm-up runs and timed repetitions of every candidate."""

    warmup: int
    repeats: int


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(function: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call, with the device's queued work finished on both sides."""
    synchronize(device)
    started = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - started


def measure(function: Callable[[], object], budget: Budget, device: torch.device) -> Timing:
    """`budget.warmup` untimed calls, then `budget.repeats` timed ones."""
    for _ in range(budget.warmup):
        function()
    synchronize(device)
    return Timing(tuple(time_once(function, device) for _ in range(budget.repeats)))


def compare(
    candidates: Mapping[str, Callable[[], object]], budget: Budget, device: torch.device
) -> dict[str, Timing]:
    """Time several candidates side by side: each repetition runs every candidate once, forwards on
    even repetitions and backwards on odd ones, so drifting background load is shared between them."""
    names = list(candidates)
    for _ in range(budget.warmup):
        for name in names:
            candidates[name]()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repetition in range(budget.repeats):
        for name in names if repetition % 2 == 0 else reversed(names):
            samples[name].append(time_once(candidates[name], device))
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


# ------------------------------------------------------------------------------------------ machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(device: torch.device) -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": str(device),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_line(info: Mapping[str, Any]) -> str:
    gpu = f" ({info['gpu']})" if "gpu" in info else ""
    line = (
        f"machine: {info['cpu']}, {info['usable_cores']} usable of {info['logical_cores']} logical cores, "
        f"torch {info['torch']} with {info['torch_threads']} intra-op threads, python {info['python']}, "
        f"device {info['device']}{gpu}, load average {info['load_average_1min']} (1 min)"
    )
    load, cores = info.get("load_average_1min"), info.get("usable_cores") or 1
    if load is not None and load > 0.5 * cores:
        line += (
            "\n  note: other processes were busy when this run started; absolute times are inflated, and with"
            "\n  more intra-op threads than idle cores OpenMP stalls can slow torch 10× (use --threads 1)"
        )
    return line


# ------------------------------------------------------------------------------------ command line


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--quick", action="store_true", help="few repetitions: checks that it runs")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions (median taken)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up runs")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) first")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return parser


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the common flags, described by the first line of the benchmark's docstring."""
    description = doc.strip().splitlines()[0] if doc and doc.strip() else None
    return add_common_arguments(argparse.ArgumentParser(description=description))


def budget(args: argparse.Namespace, full: Budget, quick: Budget) -> Budget:
    chosen = quick if args.quick else full
    return Budget(
        warmup=chosen.warmup if args.warmup is None else args.warmup,
        repeats=chosen.repeats if args.repeats is None else args.repeats,
    )


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads, choose the device, seed torch; returns the device."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    torch.manual_seed(0)
    return torch.device("cuda" if use_cuda else "cpu")


def start_benchmark(args: argparse.Namespace) -> tuple[torch.device, dict[str, Any]]:
    """Every benchmark's opening: `setup`, then the machine's description, printed and returned."""
    device = setup(args)
    info = machine(device)
    print(machine_line(info))
    return device, info


# ------------------------------------------------------------------------------------------ output


def format_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with right-aligned columns (floats shown with 4 significant digits)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    text = [[cell(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in text)) for i, h in enumerate(headers)]
    lines = [title, "  ".join(str(h).rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in text]
    return "\n".join(lines)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(f"figures written to {path}")


def finish_benchmark(args: argparse.Namespace, figures: dict[str, Any]) -> dict[str, Any]:
    """Every benchmark's close: the figures written to `--json` when asked, and returned."""
    if args.json:
        write_json(args.json, figures)
    return figures
