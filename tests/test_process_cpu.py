"""benchmarks/process_cpu.py: a command's CPU, charged to the kinds of processes that used it."""

from __future__ import annotations

import sys

from benchmarks.process_cpu import kind_of, measure, report

# Uses one CPU second, however fast the machine: the bound below holds on any day.
# Then idle for more than two polls, so that a poll sees the burn's whole CPU time however late it comes.
BURN_ONE_CPU_SECOND = "import time\nwhile time.process_time() < 1.0: pass\ntime.sleep(0.6)"


def test_processes_are_charged_to_what_they_are():
    python = "/venv/bin/python"
    assert kind_of(["ray::RayTrainWorker.train_fn_with_final_checkpoint_flush"]) == "ray::RayTrainWorker"
    assert kind_of(["ray::IDLE"]) == "ray::IDLE"
    assert kind_of([python, "/venv/lib/ray/_private/workers/default_worker.py", "--node-ip-address=x"]) == (
        "ray::IDLE"
    )
    raylet = ["/venv/lib/ray/core/src/ray/raylet/raylet", "--python_worker_command=python default_worker.py"]
    assert kind_of(raylet) == "Ray daemon: raylet"
    assert kind_of([python, "-m", "stages.adapt", "--row", "base", "--seed", "0"]) == "stage adapt"
    assert kind_of([python, "/venv/bin/dvc", "repro"]) == "dvc"
    assert kind_of([python, "-c", "while 1: pass"]) == "CPU burner (test_sigterm.py)"
    assert kind_of([python, "-m", "pytest", "--durations=15"]) == "pytest (in-process tests)"
    assert kind_of([python, "-c", "print()", "/tmp/pytest-of-root/pytest-1/params.yaml"]) == "other: python"


def test_a_command_and_the_process_it_starts_are_both_counted():
    """The command burns a CPU second in a child it starts, then one of its own; both are seen."""
    burn = repr(BURN_ONE_CPU_SECOND)
    script = "\n".join(
        [
            "import subprocess, sys",
            f"subprocess.run([sys.executable, '-c', {burn}])",
            f"exec({burn})",
            "sys.exit(3)",
        ]
    )
    measured = measure([sys.executable, "-c", script])
    assert measured.returncode == 3
    # Each process is polled every 0.25 s while it runs, and idles 0.6 s after its burn: the bound allows
    # for a poll delayed by a loaded machine.
    assert measured.cpu_s["other: python"] >= 2 * (1.0 - 0.25), measured.cpu_s
    assert measured.processes["other: python"] >= 2
    assert measured.machine_cpu_s >= measured.cpu_s["other: python"] - 0.5
    assert "other: python" in report(["x"], measured)
