"""Where a command's CPU goes, by kind of process: every process of the machine is polled while the command
runs, and each one's CPU time is charged to what it is (a stage, a Ray Train actor, a Ray daemon, DVC …).

    python -m benchmarks.process_cpu -- python -m pytest -p no:cacheprovider
    python -m benchmarks.process_cpu -- dvc repro

Made for the suite's time (issue 14): on 2 cores the suite is CPU-bound, so its wall time is about its
CPU time over 2, and what can be cut is what this table shows. A Ray worker process changes its title
as it takes work (`ray::IDLE`, then `ray::TrainController.run`): it is charged to the last title other
than IDLE it was seen with. A process that lives less than one poll is missed, so the table is a lower
bound; the machine's own total (`psutil.cpu_times`) is printed beside it, and so is the poller's own CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import psutil

POLL_S = 0.25
# Substrings of a command line → the kind it is charged to (first match wins).
KINDS = (
    ("gcs_server", "Ray daemon: gcs_server"),
    ("raylet/raylet", "Ray daemon: raylet"),  # before default_worker.py, which its command line names
    ("default_worker.py", "ray::IDLE"),  # a Ray worker before it sets its title
    ("while 1: pass", "CPU burner (test_sigterm.py)"),
    ("dashboard/agent.py", "Ray daemon: dashboard agent"),
    ("dashboard/dashboard.py", "Ray daemon: dashboard"),
    ("log_monitor.py", "Ray daemon: log monitor"),
    ("runtime_env/agent", "Ray daemon: runtime env agent"),
    ("autoscaler/_private/monitor.py", "Ray daemon: autoscaler monitor"),
    ("ray.util.client.server", "Ray daemon: client server"),
    ("multiprocessing.forkserver", "multiprocessing forkserver children (Ray dashboard modules)"),
    ("multiprocessing.spawn", "multiprocessing spawn children (torch / DataLoader)"),
    ("ray start", "`ray start` (head and second node)"),
    ("mlflow server", "`mlflow server`"),
    ("uvicorn", "`mlflow server`"),
    ("/dvc", "dvc"),
    # Not "pytest" alone: helper scripts get paths under /tmp/pytest-of-… on their command lines.
    ("-m pytest", "pytest (in-process tests)"),
)


def kind_of(command: list[str]) -> str:
    """What a process is, from its command line (a Ray worker's is its title, e.g. `ray::RayTrainWorker`)."""
    if not command:
        return "other"
    first = command[0]
    if first.startswith("ray::"):
        return first.split(".")[0].split(" ")[0]
    line = " ".join(command)
    if "stages." in line and " -m " in f" {line} ":
        return "stage " + line.split("stages.", 1)[1].split()[0]
    for needle, kind in KINDS:
        if needle in line:
            return kind
    return "other: " + os.path.basename(first)[:40]


@dataclass
class Ledger:
    """CPU seconds of every process seen, and the kind each is charged to."""

    start_cpu: dict[int, float] = field(default_factory=dict)
    last_cpu: dict[int, float] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)

    def poll(self, skip: int) -> None:
        for process in psutil.process_iter(["pid", "cmdline"]):
            pid = process.info["pid"]
            if pid == skip:
                continue
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            self.last_cpu[pid] = times.user + times.system
            command = process.info["cmdline"]
            if not command:  # a zombie's (its CPU time is final): keep what it was seen as alive
                continue
            kind = kind_of(command)
            if kind != "ray::IDLE" or pid not in self.kinds:  # keep the last title that was not IDLE
                self.kinds[pid] = kind

    def by_kind(self) -> tuple[Counter, Counter]:
        seconds, count = Counter(), Counter()
        for pid, cpu in self.last_cpu.items():
            used = cpu - self.start_cpu.get(pid, 0.0)
            if used > 0.01:
                seconds[self.kinds.get(pid, "other")] += used
                count[self.kinds.get(pid, "other")] += 1
        return seconds, count


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every core, every process)."""
    total = psutil.cpu_times()
    return total.user + total.nice + total.system + total.irq + total.softirq + total.steal


@dataclass(frozen=True)
class Measurement:
    returncode: int
    wall_s: float
    machine_cpu_s: float  # every process of the machine (`machine_busy_s`), the poller's included
    poller_cpu_s: float
    cpu_s: Counter  # kind → CPU seconds of the processes seen
    processes: Counter  # kind → how many processes


def measure(command: list[str]) -> Measurement:
    """Run `command`, polling every process of the machine until it ends."""
    me = os.getpid()
    own_before = sum(os.times()[:2])
    ledger = Ledger()
    ledger.poll(me)
    ledger.start_cpu = dict(ledger.last_cpu)
    busy, started = machine_busy_s(), time.monotonic()
    child = subprocess.Popen(command)
    while child.poll() is None:
        ledger.poll(me)
        time.sleep(POLL_S)
    ledger.poll(me)
    wall, machine = time.monotonic() - started, machine_busy_s() - busy
    seconds, count = ledger.by_kind()
    return Measurement(child.returncode, wall, machine, sum(os.times()[:2]) - own_before, seconds, count)


def report(command: list[str], measured: Measurement) -> str:
    lines = [
        f"{' '.join(command)}: exit {measured.returncode}, {measured.wall_s:.1f} s wall, machine CPU "
        f"{measured.machine_cpu_s:.1f} s ({measured.machine_cpu_s / measured.wall_s:.2f} cores), seen in "
        f"processes {sum(measured.cpu_s.values()):.1f} s, this poller {measured.poller_cpu_s:.1f} s",
        f"{'CPU s':>8} {'share':>6} {'procs':>6}  kind",
    ]
    for kind, used in measured.cpu_s.most_common():
        share = used / max(measured.machine_cpu_s, 1e-9)
        lines.append(f"{used:8.1f} {share:6.1%} {measured.processes[kind]:6d}  {kind}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after `--`")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given: python -m benchmarks.process_cpu -- <command>")
    measured = measure(command)
    print("\n" + report(command, measured))
    sys.exit(measured.returncode)


if __name__ == "__main__":
    main()
