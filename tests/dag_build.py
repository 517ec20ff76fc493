"""The DAG module's projects (test_dvc_pipeline.py), `dvc repro`'d in the background while the rest of
the suite runs.

Building them is the suite's longest work: the whole DAG (11 stage processes on the session's Ray head,
about 100 s alone, much of it waiting on process and actor start-up), then, in a copy of that project,
the two-round CRST rerun (about 35 s), beside it, in another copy, two cells run side by side by
`python -m stages.adapt_all` on a local runtime of its own (no head: as a user runs it on one machine),
then one cell on two workers of the head (the two-node test's reference) and on two nodes. The runs after
the first are made only when a selected test asks for them (`@pytest.mark.dag_runs`), so `pytest -k` on
one test of the module builds what that test reads. All run in a background thread from the session's
first test;
conftest orders the DAG module and the tests that watch the head's processes (test_sigterm.py) last, and
those wait for the build. Output goes to files, never a pipe that could fill and stall a stage.

Every run has a time limit (RUN_LIMITS_S), so the build always ends: a run past its limit is stopped,
and its result carries the log, the stage's own stack (SIGUSR1, pipeline/cli.py) and the head's state
(resources, placement groups, live actors). A hang then fails its test with its cause within minutes,
instead of holding every test that waits for the build (CI, 2026-12-02: the two-worker run never ended,
and two tests waited 1100 s and 1200 s for it).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import psutil
from dvc_project import environment, make_project, set_params
from ray_head import Head, job_info, job_status, ray_cli, second_node, stop_head

# The CRST rerun: two rounds with domain-specific BatchNorm, only the last cell asked for.
CRST_PARAMS = {"adapt.rounds": 2, "adapt.bn_statistics": "per_domain"}
CRST_TARGET = "adapt@dass-0"
# A cell on two Ray Train workers (one per CPU), as the two-node test runs it, here on the head alone.
TWO_WORKER_PARAMS = {"distributed.num_workers": 2, "adapt.steps": 6, "train.checkpoint_every": 2,
                     "distributed.max_failures": 1}  # fmt: skip
TWO_WORKER_CELL = ("base", 0)
TWO_NODES_JOB = "two-nodes"  # the submission id of the two-node run's `ray job submit`
# The side-by-side run: these cells' outputs removed from a copy, then `python -m stages.adapt_all`, with
# no RAY_ADDRESS: its cells join the local runtime it starts (bound to 127.0.0.1), not the head.
PARALLEL_CELLS = (("base", 0), ("dass", 0))  # both rows of the test DAG (TINY_PARAMS)
# The runs after the first, in a copy of its project each, made only when a selected test asks for one
# (`@pytest.mark.dag_runs(...)`); "two_nodes" comes with its reference, the run "two_workers".
LATER_RUNS = frozenset({"crst", "parallel", "two_nodes"})
# Each run's limit in seconds: at least 3x its time in a full-suite run on a slow day, taken as twice a
# normal day's (2026-12-02, normal: first 205 s, crst 67, parallel 60, two_workers 30, two_nodes about 60;
# crst and parallel, side by side since, get twice their time alone).
RUN_LIMITS_S = {"first": 1260, "crst": 800, "parallel": 720, "two_workers": 240, "two_nodes": 420}
# What the diagnosis tells of each placement group and live actor (Ray's state API fields).
PLACEMENT_GROUP_FIELDS = ("placement_group_id", "state", "creator_job_id", "bundles")
ACTOR_FIELDS = ("class_name", "pid", "job_id", "required_resources")
# Ray's worker logs reach the driver's log up to 0.4 s late (conftest); the stack dump is immediate.
DIAGNOSIS_WAIT_S = 2.0


@dataclass(frozen=True)
class Repro:
    project: Path
    returncode: int
    output: str
    facts: dict[str, Any] = field(default_factory=dict)  # what the two-node run saw on the way


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.2)
    return value


def latest_checkpoint_step(storage: Path) -> int:
    """The step of the newest checkpoint Ray Train's controller registered under `storage` (-1: none)."""
    steps = [-1]
    for snapshot in storage.glob("*/checkpoint_manager_snapshot.json"):
        with suppress(ValueError, OSError):  # being rewritten
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}
            steps.append(latest.get("metrics", {}).get("step", -1))
    return max(steps)


class DagBuild:
    """`start` returns at once; `first()` and `crst()` wait for their repro and return it."""

    def __init__(self, root: Path, head: Head, wanted: set[str] | frozenset[str] = LATER_RUNS) -> None:
        unknown = set(wanted) - set(LATER_RUNS)
        assert not unknown, f"no such run of the DAG build: {unknown}"
        self.root, self.head, self.wanted = root, head, frozenset(wanted)
        self.project = root / "project"
        self.crst_project = root / "crst"
        self.parallel_project = root / "parallel"
        self.two_worker_project = root / "two_workers"
        self.env = head.driver_env
        self._results: dict[str, Repro] = {}
        self._running: list[subprocess.Popen] = []  # two at once while `parallel` runs beside `crst`
        self._stopped = False
        self._errors: list[str] = []  # tracebacks of the build's own threads (not of the commands they run)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._build, name="dag-build", daemon=True)

    def start(self) -> DagBuild:
        make_project(self.project)
        self._thread.start()
        return self

    def first(self) -> Repro:
        return self._wait("first")

    def crst(self) -> Repro:
        return self._wait("crst")

    def parallel(self) -> Repro:
        return self._wait("parallel")

    def two_workers(self) -> Repro:
        return self._wait("two_workers")

    def two_nodes(self) -> Repro:
        return self._wait("two_nodes")

    def wait_all(self) -> None:
        """Until the build has ended; it always does, each run within its limit (a safety margin here
        only guards against a bug in the build itself)."""
        limit = sum(RUN_LIMITS_S.values()) + 300
        assert self._done.wait(limit), f"the DAG build still running after {limit} s"

    def stop(self) -> None:
        """At the session's end: a repro still running (the session was cut short) is killed whole."""
        self._stopped = True
        for running in list(self._running):
            if running.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(running.pid, signal.SIGKILL)
        self._thread.join(timeout=60)

    def _wait(self, name: str) -> Repro:
        """The run's result, once the build has it: bounded by the limits of the runs before it."""
        made = {"first", *self.wanted} | ({"two_workers"} if "two_nodes" in self.wanted else set())
        assert name in made, f"the {name} run was not asked of this build (conftest: dag_runs markers)"
        while name not in self._results:
            assert not self._done.is_set(), (
                f"the DAG build ended before its {name} run: {self._results}\n{''.join(self._errors)}"
            )
            time.sleep(0.2)
        result = self._results[name]
        assert result.returncode == 0, (
            f"the {name} run failed ({result.returncode}):\n{result.output[-12000:]}"
        )
        return result

    def _build(self) -> None:
        try:
            first = self._repro("first", self.project)
            if first.returncode != 0 or self._stopped:
                return
            # Copies, so the tests reading the first repro's outputs never see the later runs'.
            parallel = None
            if "parallel" in self.wanted:
                shutil.copytree(self.project, self.parallel_project, symlinks=True)
                for row, seed in PARALLEL_CELLS:
                    (self.parallel_project / f"models/adapt/{row}_seed{seed}.pt").unlink()
                    (self.parallel_project / f"metrics/adapt/{row}_seed{seed}.json").unlink()
                # `parallel` runs on a local runtime of its own, so it goes beside `crst` (on the head): one
                # stage process alone leaves part of the CPU idle.
                parallel = threading.Thread(
                    target=self._reporting_errors(self._run),
                    name="dag-build-parallel",
                    args=("parallel", self.parallel_project, ["python", "-m", "stages.adapt_all"],
                          environment()),
                )  # fmt: skip
                parallel.start()
            try:
                if "crst" in self.wanted:
                    shutil.copytree(self.project, self.crst_project, symlinks=True)
                    set_params(self.crst_project / "params.yaml", CRST_PARAMS)
                    self._repro("crst", self.crst_project, CRST_TARGET)
            finally:
                if parallel is not None:
                    parallel.join()
            if self._stopped or "two_nodes" not in self.wanted:
                return
            shutil.copytree(self.project, self.two_worker_project, symlinks=True)
            set_params(self.two_worker_project / "params.yaml", TWO_WORKER_PARAMS)
            row, seed = TWO_WORKER_CELL
            self._run("two_workers", self.two_worker_project,
                      ["python", "-m", "stages.adapt", "--row", row, "--seed", str(seed)])  # fmt: skip
            if self._stopped:
                return
            try:
                self._results["two_nodes"] = self._two_nodes()
            except Exception as error:  # the test reports it, with the head's state
                # A job still running would hold the head's CPUs from the tests after this one.
                with suppress(subprocess.TimeoutExpired):
                    ray_cli(self.head.env, "job", "stop", "--address", self.head.dashboard, TWO_NODES_JOB)
                self._results["two_nodes"] = Repro(
                    self.root / "two_nodes", 1, f"{type(error).__name__}: {error}\n{self._head_state()}"
                )
        except Exception:
            self._errors.append(traceback.format_exc())
        finally:
            self._done.set()

    def _reporting_errors(self, target: Callable[..., Any]) -> Callable[..., None]:
        """`target` for a thread of the build: an exception it raises is kept for the tests that wait."""

        def run(*args: Any) -> None:
            try:
                target(*args)
            except Exception:
                self._errors.append(traceback.format_exc())

        return run

    def _two_nodes(self) -> Repro:
        """The cell TWO_WORKER_CELL on two nodes: a second node joins the head, the cell is submitted with
        `ray job submit` (SPREAD: one worker per node), and after its first checkpoint the second node's
        processes are killed; the job then ends on the head (test_dvc_pipeline reads what happened)."""
        project, storage = self.root / "two_nodes", self.root / "two_nodes_storage"
        shutil.copytree(self.project, project, symlinks=True)
        spread = {"distributed.placement_strategy": "SPREAD", "distributed.storage": str(storage)}
        set_params(project / "params.yaml", TWO_WORKER_PARAMS | spread)
        head, (row, seed) = self.head, TWO_WORKER_CELL
        deadline = time.monotonic() + RUN_LIMITS_S["two_nodes"]
        facts: dict[str, Any] = {
            "head_node": next(n["node_id"] for n in head.state("nodes", state="ALIVE") if n["is_head_node"])
        }
        with second_node(head, self.root) as node:
            facts["second_node"] = node.node_id
            script = f"cd {shlex.quote(str(project))} && python -m stages.adapt --row {row} --seed {seed}"
            submitted = ray_cli(head.env, "job", "submit", "--address", head.dashboard, "--no-wait",
                                "--submission-id", TWO_NODES_JOB, "--", "sh", "-c", script)  # fmt: skip
            assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-2000:]
            # The job's own workers: tests beside the build start Ray Train workers on the head too.
            job_id = wait_for(lambda: job_info(head, TWO_NODES_JOB).get("job_id"), left(deadline),
                              "the job's driver")  # fmt: skip
            workers = wait_for(lambda: len(found := train_workers(head, job_id)) == 2 and found,
                               left(deadline), "two Ray Train workers")  # fmt: skip
            facts["worker_nodes"] = sorted(worker["node_id"] for worker in workers)
            wait_for(lambda: latest_checkpoint_step(storage) >= 2, left(deadline), "the first checkpoint")
            facts["left_after_kill"] = [str(p) for p in stop_head(node.process)]  # by pid, not `ray stop`
        status = wait_for(lambda: job_ended(head, TWO_NODES_JOB), left(deadline), "the job")
        logs = ray_cli(head.env, "job", "logs", "--address", head.dashboard, TWO_NODES_JOB).stdout
        return Repro(project, 0 if status == "SUCCEEDED" else 1, logs, facts)

    def _repro(self, name: str, project: Path, *targets: str) -> Repro:
        return self._run(name, project, ["dvc", "repro", *targets])

    def _run(self, name: str, project: Path, command: list[str], env: dict[str, str] | None = None) -> Repro:
        """`command` in `project`, joined to the head unless `env` is given."""
        log = project.parent / f"{name}.log"
        with log.open("w") as output:
            running = subprocess.Popen(command, cwd=project, env=env or self.env, stdout=output,
                                       stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            self._running.append(running)
            try:
                returncode, diagnosis = running.wait(timeout=RUN_LIMITS_S[name]), ""
            except subprocess.TimeoutExpired:
                diagnosis = self._stop_hung(running, RUN_LIMITS_S[name])
                returncode = running.returncode
        self._results[name] = Repro(project, returncode, log.read_text() + diagnosis)
        return self._results[name]

    def _stop_hung(self, running: subprocess.Popen, limit: float) -> str:
        """A run past its limit: its stage processes print their stacks (SIGUSR1) into the log, the head's
        state is read, then the whole session is killed. Returns what the log does not hold."""
        for pid in stage_processes(running.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
        time.sleep(DIAGNOSIS_WAIT_S)
        state = self._head_state()
        with suppress(ProcessLookupError):
            os.killpg(running.pid, signal.SIGKILL)
        running.wait()
        return f"\n--- stopped: still running after its limit of {limit} s ---\n{state}"

    def _head_state(self) -> str:
        """What holds the head when a run cannot go on: `ray status` (resources used and pending) and the
        placement groups and live actors with their jobs, pids and resources."""
        lines = []
        # A head that does not answer is part of the diagnosis, never a reason to leave the run running.
        try:
            status = ray_cli(self.head.env, "status", "--address", f"127.0.0.1:{self.head.gcs_port}")
            lines.append(f"$ ray status\n{status.stdout[-4000:]}{status.stderr[-1000:]}")
        except Exception as error:
            lines.append(f"ray status: {type(error).__name__}: {error}")
        try:
            for group in self.head.state("placement_groups"):
                lines.append(described("placement group", group, PLACEMENT_GROUP_FIELDS))
            for actor in self.head.state("actors", state="ALIVE"):
                lines.append(described("actor", actor, ACTOR_FIELDS))
        except Exception as error:
            lines.append(f"state API: {type(error).__name__}: {error}")
        return "\n".join(lines)


def described(kind: str, entry: dict, fields: tuple[str, ...]) -> str:
    return kind + "".join(f" {name}={entry.get(name)}" for name in fields)


def left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def stage_processes(pid: int) -> list[int]:
    """`pid` and its descendants that are stage processes (`python -m stages.<name>`): only those dump
    their stacks on SIGUSR1; to dvc, or any other process, the signal would be fatal."""
    pids = []
    with suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                command = process.cmdline()
                if any(flag == "-m" and module.startswith("stages.") for flag, module in pairwise(command)):
                    pids.append(process.pid)
    return pids


def train_workers(head: Head, job_id: str) -> list[dict]:
    """The live Ray Train workers of job `job_id` (hex) on the head's cluster."""
    alive = head.state("actors", class_name="RayTrainWorker", state="ALIVE")
    return [actor for actor in alive if actor["job_id"] == job_id]


def job_ended(head: Head, submission_id: str) -> str | None:
    status = job_status(head, submission_id)
    return status if status in ("SUCCEEDED", "FAILED", "STOPPED") else None
