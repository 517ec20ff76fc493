"""The DAG module's projects (test_dvc_pipeline.py), `dvc repro`'d in the background while the rest of
the suite runs.

Building them is the suite's longest work: the whole DAG (11 stage processes on the session's Ray head,
about 100 s alone, much of it waiting on process and actor start-up), then, in a copy of that project,
the two-round CRST rerun (about 35 s), and in another copy two cells run side by side by
`python -m stages.adapt_all`, and one cell on two workers of the head (the two-node test's reference). All
run in a background thread from the session's first test;
conftest orders the DAG module and the tests that watch the head's processes (test_sigterm.py) last, and
those wait for the build. Output goes to files, never a pipe that could fill and stall a stage.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from dvc_project import make_project, set_params

# The CRST rerun: two rounds with domain-specific BatchNorm, only the last cell asked for.
CRST_PARAMS = {"adapt.rounds": 2, "adapt.bn_statistics": "per_domain"}
CRST_TARGET = "adapt@dass-0"
# A cell on two Ray Train workers (one per CPU), as the two-node test runs it, here on the head alone.
TWO_WORKER_PARAMS = {"distributed.num_workers": 2, "adapt.steps": 6, "train.checkpoint_every": 2,
                     "distributed.max_failures": 1}  # fmt: skip
TWO_WORKER_CELL = ("base", 0)
# The side-by-side run: these cells' outputs removed from a copy, then `python -m stages.adapt_all`.
PARALLEL_CELLS = (("base", 0), ("dass", 0))  # both rows of the test DAG (TINY_PARAMS)


@dataclass(frozen=True)
class Repro:
    project: Path
    returncode: int
    output: str


class DagBuild:
    """`start` returns at once; `first()` and `crst()` wait for their repro and return it."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.project = root / "project"
        self.crst_project = root / "crst"
        self.parallel_project = root / "parallel"
        self.two_worker_project = root / "two_workers"
        self.env = env
        self._results: dict[str, Repro] = {}
        self._running: subprocess.Popen | None = None
        self._stopped = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._build, name="dag-build", daemon=True)

    def start(self) -> DagBuild:
        make_project(self.project)
        self._thread.start()
        return self

    def first(self, timeout: float) -> Repro:
        return self._wait("first", timeout)

    def crst(self, timeout: float) -> Repro:
        return self._wait("crst", timeout)

    def parallel(self, timeout: float) -> Repro:
        return self._wait("parallel", timeout)

    def two_workers(self, timeout: float) -> Repro:
        return self._wait("two_workers", timeout)

    def wait_all(self, timeout: float) -> None:
        assert self._done.wait(timeout), f"the DAG build still running after {timeout} s"

    def stop(self) -> None:
        """At the session's end: a repro still running (the session was cut short) is killed whole."""
        self._stopped = True
        running = self._running
        if running is not None and running.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(running.pid, signal.SIGKILL)
        self._thread.join(timeout=60)

    def _wait(self, name: str, timeout: float) -> Repro:
        deadline = time.monotonic() + timeout
        while name not in self._results:
            assert not self._done.is_set(), f"the DAG build ended before its {name} repro: {self._results}"
            assert time.monotonic() < deadline, (
                f"the DAG build's {name} repro still running after {timeout} s"
            )
            time.sleep(0.2)
        result = self._results[name]
        assert result.returncode == 0, (
            f"dvc repro ({name}) failed ({result.returncode}):\n{result.output[-6000:]}"
        )
        return result

    def _build(self) -> None:
        try:
            first = self._repro("first", self.project)
            if first.returncode != 0 or self._stopped:
                return
            # A copy, so the tests reading the first repro's outputs never see the rerun's.
            shutil.copytree(self.project, self.crst_project, symlinks=True)
            shutil.copytree(self.project, self.parallel_project, symlinks=True)
            shutil.copytree(self.project, self.two_worker_project, symlinks=True)
            set_params(self.crst_project / "params.yaml", CRST_PARAMS)
            self._repro("crst", self.crst_project, CRST_TARGET)
            if self._stopped:
                return
            for row, seed in PARALLEL_CELLS:
                (self.parallel_project / f"models/adapt/{row}_seed{seed}.pt").unlink()
                (self.parallel_project / f"metrics/adapt/{row}_seed{seed}.json").unlink()
            self._run("parallel", self.parallel_project, ["python", "-m", "stages.adapt_all"])
            if self._stopped:
                return
            set_params(self.two_worker_project / "params.yaml", TWO_WORKER_PARAMS)
            row, seed = TWO_WORKER_CELL
            self._run("two_workers", self.two_worker_project,
                      ["python", "-m", "stages.adapt", "--row", row, "--seed", str(seed)])  # fmt: skip
        finally:
            self._done.set()

    def _repro(self, name: str, project: Path, *targets: str) -> Repro:
        return self._run(name, project, ["dvc", "repro", *targets])

    def _run(self, name: str, project: Path, command: list[str]) -> Repro:
        log = project.parent / f"{name}.log"
        with log.open("w") as output:
            self._running = subprocess.Popen(command, cwd=project, env=self.env,
                                             stdout=output, stderr=subprocess.STDOUT,
                                             start_new_session=True)  # fmt: skip
            returncode = self._running.wait()
        self._results[name] = Repro(project, returncode, log.read_text())
        return self._results[name]
