"""Run every issue-6 benchmark, print each one's tables and a summary of the figures against the
targets; `--json PATH` writes all figures (with the machine they ran on) to one file.

    python -m benchmarks.run_all [--quick] [--threads N] [--device auto|cpu|cuda] [--json PATH]
                                 [--only contrast_kernel step_overhead data_path gpu_speed]

--quick, --repeats, --warmup, --threads and --device are passed on to every benchmark. gpu_speed skips
(one line) without a CUDA device unless --device cpu.
"""

from __future__ import annotations

import argparse
import time

from benchmarks import contrast_kernel, data_path, gpu_speed, step_overhead
from benchmarks.timing import add_common_arguments, format_table, machine, machine_line, setup, write_json

BENCHMARKS = {
    "contrast_kernel": contrast_kernel,
    "step_overhead": step_overhead,
    "data_path": data_path,
    "gpu_speed": gpu_speed,
}


def forwarded_arguments(args: argparse.Namespace) -> list[str]:
    forwarded = ["--quick"] if args.quick else []
    for flag in ("repeats", "warmup", "threads"):
        value = getattr(args, flag)
        if value is not None:
            forwarded += [f"--{flag}", str(value)]
    return [*forwarded, "--device", args.device]


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def summary_rows(results: dict) -> list[list[object]]:
    rows: list[list[object]] = []
    if "contrast_kernel" in results:
        speedup = results["contrast_kernel"]["speedup"]
        target = contrast_kernel.TARGET_SPEEDUP
        rows.append(
            [
                "contrast kernel: naive / ours",
                f"{speedup:.1f}×",
                f"≥ {target:.0f}×",
                verdict(speedup >= target),
            ]
        )
    if "step_overhead" in results:
        target = step_overhead.TARGET_RATIO
        for size in ("default", "paper_shapes"):
            if size in results["step_overhead"]:
                value = results["step_overhead"][size]["ratios"]["dass / base"]
                label = f"step: dass / base, {size.replace('_', ' ')}"
                rows.append([label, f"{value:.3f}", f"≤ {target}", verdict(value <= target)])
    if "data_path" in results:
        figures = results["data_path"]
        for key, value in figures["throughput"].items():
            speedup = value["shards_over_png"]
            rows.append([f"data: shards / PNG rows/s, {key.replace('_', ' ')}", f"{speedup:.2f}×",
                         f"≥ {data_path.TARGET_THROUGHPUT_RATIO}",
                         verdict(speedup >= data_path.TARGET_THROUGHPUT_RATIO)])  # fmt: skip
        share, limit = figures["waiting"]["shards"]["share"], data_path.TARGET_WAIT_SHARE
        rows.append(["data: wait share of a warmup step (shards)", f"{share:.1%}", f"≤ {limit:.0%}",
                     verdict(share <= limit)])  # fmt: skip
    if "gpu_speed" in results:  # no target in the issue: the speed-ups are reported, not judged
        figures = results["gpu_speed"]
        if "skipped" in figures:
            rows.append(["gpu: speed-ups over fp32", f"skipped ({figures['skipped']})", "—", ""])
        for name, value in figures.get("variants", {}).items():
            if name != "fp32":
                rows.append([f"{figures['device']}: {name} / fp32 images/s",
                             f"{value['speedup_over_fp32']:.2f}×", "—", ""])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    args = add_common_arguments(parser).parse_args(argv)
    device = setup(args)
    forwarded = forwarded_arguments(args)
    results: dict = {}
    seconds: dict[str, float] = {}
    for name in args.only:
        module = BENCHMARKS[name]
        print(f"\n=== {name} ({module.__doc__.splitlines()[0].split(':')[0]}) ===")
        started = time.perf_counter()
        results[name] = module.run(module.build_parser().parse_args(forwarded))
        seconds[name] = time.perf_counter() - started
    info = machine(device)
    print("\n=== summary ===")
    print(machine_line(info))
    print(format_table("figures against the issue-6 targets", ["figure", "value", "target", ""],
                       summary_rows(results)))  # fmt: skip
    print("wall time: " + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items()))
    if args.json:
        write_json(args.json, {"machine": info, "seconds": seconds, "benchmarks": results})


if __name__ == "__main__":
    main()
