"""Nothing outlives its stage on a cluster (issue 37), on the session's Ray head, as `ray job submit`
would run the stages there.

The sweep leaves nothing reserved: the sweep stage, run again and again beside two CPU burners, each run
the test DAG's sweep with four trials, two at a time, ASHA stopping the ones that fall behind
(pipeline/distributed/placement.py tells how such a stop left a placement group reserved for good in Ray
2.60). After each run, once its job has ended: no placement group its job created is still held, no actor
of its job is alive, and the stage released none itself (its log names none): no trial's group outlived
its trial. On the code before the fix this test failed (docs/decisions.md, issue 37).

`stages.adapt_all` leaves no cell running: SIGTERM while two cells train; afterwards no process of either
cell, no actor or placement group of a cell's job, no output but the previous one (here: none), no
temporary file, exit 143.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from dvc_project import dvc, make_project, set_params
from ray_head import Head, alive

RUNS = 10
# Four trials of the test DAG's sweep (TINY_PARAMS: two at a time, ASHA, 4 steps scored every 2).
SWEEP = {"sweep.space.tau": [0.1, 0.2], "sweep.space.ema_momentum": [0.5, 0.99]}
LEAK_WARNING = "(a Ray leak)"  # what the sweep logs when it had to release something its trials left
# A run takes 60–170 s with the burners (2026-12-07), and took over 600 s when other work loaded the machine
# to a load average of 128; a sweep that waits for a leaked CPU never ends.
RUN_TIMEOUT_S = 1800
JOB_END_TIMEOUT_S = 120  # for the head to record the run's job as ended once its driver has exited
ENDED = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass
class Run:
    index: int
    returncode: int | None
    job: str | None
    groups: list[dict] = field(default_factory=list)
    actors: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def clean(self) -> bool:
        return (
            self.returncode == 0
            and self.job is not None
            and not (self.groups or self.actors or self.warnings)
        )

    def describe(self) -> str:
        groups = [(group["placement_group_id"], group["state"]) for group in self.groups]
        actors = [(actor["class_name"], actor["state"]) for actor in self.actors]
        return (f"run {self.index}: exit {self.returncode}, job {self.job}, groups held {groups}, actors "
                f"alive {actors}, released {self.warnings}")  # fmt: skip


@pytest.fixture(scope="module")
def quiet_head(ray_head, dag_build) -> Head:
    """The session's head once the DAG module's background build is over: the burners and ten sweeps would
    push the build's runs past their time limits."""
    if dag_build is not None:
        dag_build.wait_all()
    return ray_head


@pytest.fixture(scope="module")
def base_project(quiet_head, tmp_path_factory) -> Path:
    """The test DAG's project, through `pseudo_label` (joined to the head): what the sweep and the cells
    start from."""
    project = make_project(tmp_path_factory.mktemp("nothing_left") / "project", SWEEP)
    dvc(project, "repro", "pseudo_label", env=quiet_head.driver_env, timeout=1200)
    return project


def driver_job(head: Head, pid: int) -> dict | None:
    """The job whose driver was process `pid` (a stage joined to the head is a driver of its own job)."""
    jobs = head.state("jobs")
    return next((job for job in jobs if str((job.get("driver_info") or {}).get("pid")) == str(pid)), None)


def sweep_once(head: Head, project: Path, index: int) -> Run:
    stage = subprocess.Popen([sys.executable, "-m", "stages.sweep"], cwd=project, env=head.driver_env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)  # fmt: skip
    try:
        output, _ = stage.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # the hang a leaked CPU causes: recorded, then stopped
        with suppress(ProcessLookupError):
            os.killpg(stage.pid, signal.SIGKILL)
        output, _ = stage.communicate()
    job = driver_job(head, stage.pid)
    run = Run(index, stage.returncode, job and job["job_id"], output=output[-4000:])
    if job is None:
        return run
    deadline = time.monotonic() + JOB_END_TIMEOUT_S
    while (driver_job(head, stage.pid) or {}).get("status") not in ENDED and time.monotonic() < deadline:
        time.sleep(0.5)
    run.groups = [group for group in head.state("placement_groups", creator_job_id=run.job)
                  if group["state"] != "REMOVED"]  # fmt: skip
    run.actors = [actor for actor in head.state("actors", job_id=run.job) if actor["state"] != "DEAD"]
    run.warnings = [line for line in output.splitlines() if LEAK_WARNING in line]
    return run


REMOVE_GROUPS = r"""
import sys

import ray
from ray._raylet import PlacementGroupID
from ray.util.placement_group import PlacementGroup, remove_placement_group

ray.init(log_to_driver=False)  # the head RAY_ADDRESS names
for group_id in sys.argv[1:]:
    remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(group_id)))
"""


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.timeout(RUNS * RUN_TIMEOUT_S + 1800)
def test_repeated_sweeps_under_load_leave_no_placement_group_and_no_actor(quiet_head, base_project):
    head, project = quiet_head, base_project
    burners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(2)]
    runs: list[Run] = []
    try:
        for index in range(RUNS):  # up to the first run that leaves something
            runs.append(sweep_once(head, project, index))
            if not runs[-1].clean:
                break
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
        # A leak must not hold the head's CPUs from the tests after this one.
        leaked = [group["placement_group_id"] for run in runs for group in run.groups]
        if leaked:
            subprocess.run([sys.executable, "-c", REMOVE_GROUPS, *leaked], env=head.driver_env,
                           capture_output=True, timeout=300)  # fmt: skip
    last = runs[-1]
    assert last.clean, (
        f"run {last.index + 1} of {RUNS} left something (the runs before it, nothing): {last.describe()}\n"
        f"{last.output[-3000:] if last.returncode != 0 else ''}"
    )
    assert len(runs) == RUNS


# Cells long enough to be signalled while both train (a 2-step cell ends within seconds).
LONG_CELLS = {"adapt.steps": 400}
CELL_OUTPUTS = ("models/adapt", "metrics/adapt")
TEMPORARY_MARKERS = (".tmp", ".staging", ".retired")
EVENT_TIMEOUT_S = 600  # two cells' Ray Train runs starting beside each other on a loaded machine
EXIT_TIMEOUT_S = 300  # adapt_all stopping: each cell gets 30 s to unwind, then SIGKILL


def cell_processes(project: Path) -> list[psutil.Process]:
    """The `python -m stages.adapt` processes running in `project` (other projects' cells on this machine
    are not this test's)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        with suppress(psutil.Error):
            if "-m" in command and "stages.adapt" in command and Path(process.cwd()) == project:
                found.append(process)
    return found


def cell_jobs(head: Head, pids: set[int]) -> list[str]:
    return [
        job["job_id"]
        for job in head.state("jobs")
        if int((job.get("driver_info") or {}).get("pid") or 0) in pids
    ]


def training_jobs(head: Head) -> set[str]:
    """Jobs with a Ray Train worker alive on the head."""
    return {actor["job_id"] for actor in head.state("actors", class_name="RayTrainWorker", state="ALIVE")}


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.timeout(1800)
def test_sigterm_to_adapt_all_while_two_cells_train_leaves_no_cell_and_no_partial_output(
    quiet_head, base_project, tmp_path
):
    head = quiet_head
    project = tmp_path / "project"
    shutil.copytree(base_project, project, symlinks=True)
    set_params(project / "params.yaml", LONG_CELLS)
    lock = (project / "dvc.lock").read_text()
    before = training_jobs(head)
    stage = subprocess.Popen([sys.executable, "-m", "stages.adapt_all"], cwd=project, env=head.driver_env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)  # fmt: skip
    cells: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while len(training_jobs(head) - before) < 2:  # both cells' Ray Train runs have started
            assert stage.poll() is None, stage.communicate()[0][-4000:]
            assert time.monotonic() < deadline, f"two cells never trained side by side: {training_jobs(head)}"
            time.sleep(0.5)
        cells = cell_processes(project)
        assert len(cells) == 2, cells
        jobs = cell_jobs(head, {cell.pid for cell in cells})
        stage.send_signal(signal.SIGTERM)
        output, _ = stage.communicate(timeout=EXIT_TIMEOUT_S)
        assert stage.returncode == 128 + signal.SIGTERM, output[-4000:]
        # Right as adapt_all has exited: no cell process, and nothing of their process groups.
        assert not alive(cells), f"cells still running after adapt_all exited: {alive(cells)}"
        assert not cell_processes(project), cell_processes(project)
        for cell in cells:
            with pytest.raises(ProcessLookupError):
                os.killpg(cell.pid, 0)
        # On the head: once the cells' jobs have ended, none of their actors or placement groups.
        assert len(jobs) == 2, jobs
        deadline = time.monotonic() + JOB_END_TIMEOUT_S
        while any(job["status"] not in ENDED for job in head.state("jobs") if job["job_id"] in jobs):
            assert time.monotonic() < deadline, [job for job in head.state("jobs") if job["job_id"] in jobs]
            time.sleep(0.5)
        for job in jobs:
            assert not [actor for actor in head.state("actors", job_id=job) if actor["state"] != "DEAD"]
            assert not [group for group in head.state("placement_groups", creator_job_id=job)
                        if group["state"] != "REMOVED"]  # fmt: skip
        # No output but the previous one (none here), nothing half-written, nothing committed.
        for folder in CELL_OUTPUTS:
            assert not list((project / folder).glob("*")), list((project / folder).glob("*"))
        written = [path for folder in ("models", "metrics", "data") for path in (project / folder).rglob("*")]
        leftovers = [
            str(path) for path in written if any(marker in path.name for marker in TEMPORARY_MARKERS)
        ]
        assert not leftovers, leftovers
        assert (project / "dvc.lock").read_text() == lock
    finally:
        if stage.poll() is None:
            os.killpg(stage.pid, signal.SIGKILL)
            stage.wait()
        for cell in alive(cells):
            cell.kill()
