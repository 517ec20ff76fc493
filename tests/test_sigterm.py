"""SIGTERM at any moment of a stage is a clean stop (issue 14), on a loaded machine.

Each trial starts a real stage process (in its own session) on a copy of a project whose outputs already
exist, waits for one *moment* of its run — an event seen from outside: a log line, the n-th shard
staged, the first checkpoint folder — sends SIGTERM and then checks:

- the exit status is 143 (the stage's handler unwound), 0 (the stage had finished), or, at the first
  moment only, -15 (the signal came while Python itself was starting, before any project code ran:
  nothing to clean up; later, -15 would mean another handler took the signal);
- every output is either the previous one, unchanged, or a complete new one; no staging or temporary
  name is left anywhere;
- no process of the stage is left running: nothing of its session (a local runtime's processes), and
  nothing new under the Ray head it joined (its job's workers and actors).

The moments around starting Ray use a local runtime, as `dvc repro` on one machine does; the moments
while tasks, workers and checkpoints run use a stage that joins the session's Ray head (as under `ray
job submit`), which spares each trial the seconds of CPU a local runtime costs to start. Ray's own
handlers are installed in both paths by `ray.init` (driver core worker). A CPU-burning process runs
beside every trial, so the stage unwinds on a loaded machine: that is where Ray's C++ SIGTERM handler
used to abort the driver (exit -6) before `pipeline.distributed.runtime._sigterm_deferred`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import torch
from dvc_project import set_params
from layouts import write_cityscapes, write_gta5
from ray_head import Head, alive, ray_tree

from pipeline.data.shards import verify_shards

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("source", "target_train", "target_val")
# Each test takes 2–3 minutes with the CPU burner on an idle day; at least 3× that on a slow one.
TEST_TIMEOUT_S = 1500
CLEAN_EXITS = {0, 128 + signal.SIGTERM}
# Killed by SIGTERM's default action: clean only before the stage's handler exists (Python still starting).
# At a later moment it would mean a handler other than the stage's took the signal (Abseil's re-raises it).
BEFORE_THE_HANDLER = "at_start"
TEMPORARY_MARKERS = (".tmp", ".staging", ".retired")
# Generous bounds for events that must happen (a hung stage fails instead of hanging the suite).
EVENT_TIMEOUT_S = 240
EXIT_TIMEOUT_S = 240
HEAD_CPUS = 2  # tests/ray_head.py starts the head with --num-cpus=2
CLUSTER_KEPT = {"ray::PlacementGroupCleaner", "ray::_AutoscalingCoordinatorActor"}


@dataclass
class StageRun:
    """A stage process and what it has printed so far (read by threads, checked by moments)."""

    process: subprocess.Popen
    project: Path
    started: float
    lines: list[str] = field(default_factory=list)

    def printed(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))


Moment = Callable[[StageRun], bool]


def at_start(run: StageRun) -> bool:
    return True


def on_line(text: str) -> Moment:
    return lambda run: run.printed(text)


def after_shards(count: int) -> Moment:
    """The `count`-th shard file this run has written (staged or already swapped in)."""

    def moment(run: StageRun) -> bool:
        written = 0
        for folder, _, files in os.walk(run.project / "data" / "shards"):  # tolerates folders swapped away
            written += sum(1 for name in files if name.endswith(".parquet")
                           and stat_mtime(Path(folder) / name) >= run.started)  # fmt: skip
        return written >= count

    return moment


def on_checkpoint_folder(run: StageRun) -> bool:
    return any(path.is_dir() for path in (run.project / "ray_results").glob("*/checkpoint_*"))


def stat_mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # swapped away between the listing and the stat
        return -1.0


@pytest.fixture(scope="module")
def quiet_head(ray_head, dag_build) -> Head:
    """The session's Ray head once the DAG module's background build is over: the trials count the
    processes under it, which must all be theirs."""
    if dag_build is not None:
        dag_build.wait_all()
    return ray_head


@pytest.fixture
def cpu_burner():
    """Beside each test that asks for it, and only then: the module's later tests need no load."""
    burner = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
    yield
    burner.kill()
    burner.wait()


@pytest.fixture(scope="module")
def base_project(tmp_path_factory, ray_runtime):
    """Real-layout datasets, params and the outputs of a complete `preprocess` (the previous outputs)."""
    from pipeline.config import load_config
    from stages.preprocess import preprocess

    root = tmp_path_factory.mktemp("sigterm")
    write_gta5(root / "datasets" / "gta5", count=24, size=(64, 112))
    write_cityscapes(root / "datasets" / "cityscapes", {"train": 12, "val": 4},
                     {"train": ["aa"], "val": ["bb"]}, size=(64, 112))  # fmt: skip
    project = root / "project"
    project.mkdir()
    params = project / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", params)
    set_params(params, {
        "data.synthetic.enabled": False,
        "data.source.root": str(root / "datasets" / "gta5"),
        "data.target.root": str(root / "datasets" / "cityscapes"),
        "preprocess.source_size": {"height": 40, "width": 64},
        "preprocess.target_size": {"height": 40, "width": 64},
        "preprocess.rows_per_shard": 1,
        "preprocess.rows_per_row_group": 1,
        "model.width": 0.125,
        "train.batch_size": 2,
        "train.crop": {"height": 32, "width": 48},
        "train.checkpoint_every": 2,
        "train.log_every": 1,
        "train.loader_workers": 0,
        "warmup.steps": 8,
        "warmup.oracle": False,
        "distributed.cpus_per_worker": 1,
        "tracking.required": False,
    })  # fmt: skip
    preprocess(load_config(params))
    return project


def trial_copy(base: Path, destination: Path, previous_model: bytes | None = None) -> Path:
    """A copy of the project's params and outputs; `previous_model` stands for an earlier warmup model."""
    destination.mkdir(parents=True)
    shutil.copyfile(base / "params.yaml", destination / "params.yaml")
    shutil.copytree(base / "data", destination / "data")
    if previous_model is not None:
        (destination / "models").mkdir()
        (destination / "models" / "warmup.pt").write_bytes(previous_model)
    return destination


def fingerprint(folder: Path) -> dict[str, str]:
    """Relative path → md5 of every file under `folder` (Ray Train's own storage left out)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and relative.parts[0] not in ("ray_results", "mlflow.db"):
            found[str(relative)] = hashlib.md5(path.read_bytes()).hexdigest()
    return found


def start_stage(stage: str, project: Path, env: dict[str, str] | None) -> StageRun:
    environment = (env or dict(os.environ)) | {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", f"stages.{stage}", "--params", str(project / "params.yaml")],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its session id is its pid: every process it starts can be found
    )  # fmt: skip
    run = StageRun(process, project, time.time())
    threading.Thread(target=lambda: run.lines.extend(process.stdout), daemon=True).start()
    return run


def session_processes(session_id: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if os.getsid(process.pid) == session_id and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.01)


@dataclass(frozen=True)
class Outcome:
    moment: str
    returncode: int
    output: str
    leftovers: list[str]


def signal_at(stage: str, project: Path, name: str, moment: Moment, head: Head | None) -> Outcome:
    """Run `stage` on `project` (joining `head`, else on a local runtime), SIGTERM it at `moment`, wait
    for it, its session and (joining) the processes it caused under the head to end."""
    before = {process.pid for process in ray_tree(head.process)} if head else set()
    run = start_stage(stage, project, head.driver_env if head else None)
    try:
        wait_for(lambda: moment(run) or run.process.poll() is not None, EVENT_TIMEOUT_S, f"moment {name}")
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGTERM)
        returncode = run.process.wait(timeout=EXIT_TIMEOUT_S)

        def remaining() -> list[psutil.Process]:
            return session_processes(run.process.pid) + (new_under(head, before) if head else [])

        leftovers: list[str] = []
        try:
            wait_for(lambda: not remaining(), 60, "the stage's processes to end")
            if head:
                wait_for(lambda: not reserved_placement_groups(head), 60, "its placement group to go")
        except AssertionError:
            leftovers = [describe(process) for process in remaining()]
            leftovers += [f"placement group {pg}" for pg in reserved_placement_groups(head)] if head else []
        return Outcome(name, returncode, "".join(run.lines)[-3000:], leftovers)
    finally:
        for process in session_processes(run.process.pid):  # never leave a hung trial behind
            process.kill()


def new_under(head: Head, before: set[int]) -> list[psutil.Process]:
    """Processes under the head that were not there before the trial, except those the cluster keeps by
    design: idle pool workers (the raylet keeps up to its CPU count of `ray::IDLE` workers after a job
    ends; seen here: two stay) and Ray Train's detached actors, which outlive a driver on purpose (the
    PlacementGroupCleaner frees a run's placement group when its controller dies, checked by
    `reserved_placement_groups`; the AutoscalingCoordinator is one named actor per cluster)."""
    new = [process for process in alive(ray_tree(head.process)) if process.pid not in before]
    names = {process.pid: describe(process).strip() for process in new}
    idle = [process for process in new if names[process.pid] == "ray::IDLE"]
    own = [process for process in new if names[process.pid] not in CLUSTER_KEPT and process not in idle]
    return own + idle[HEAD_CPUS:]


def reserved_placement_groups(head: Head) -> list[str]:
    """Placement groups still holding resources on the head (a stopped Ray Train run must leave none)."""
    return [group["placement_group_id"] for group in head.state("placement_groups", state="CREATED")]


def describe(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline() or [process.name()])[:120]
    except psutil.Error:
        return f"pid {process.pid} (gone)"


def temporary_names(project: Path) -> list[str]:
    return [str(path.relative_to(project)) for path in project.rglob("*")
            if any(marker in part for part in path.relative_to(project).parts
                   for marker in TEMPORARY_MARKERS)]  # fmt: skip


def run_trials(stage: str, base: Path, root: Path, moments: dict[str, Moment], head: Head | None,
               **copy) -> list[Outcome]:  # fmt: skip
    """One trial per moment, one after another (Ray's start-up is CPU-bound: trials side by side on two
    cores would only slow each other down)."""
    return [signal_at(stage, trial_copy(base, root / name, **copy), name, moment, head)
            for name, moment in moments.items()]  # fmt: skip


def check_clean(outcome: Outcome) -> None:
    clean = CLEAN_EXITS | ({-signal.SIGTERM} if outcome.moment == BEFORE_THE_HANDLER else set())
    assert outcome.returncode in clean, f"{outcome.moment}: exit {outcome.returncode}\n{outcome.output}"
    assert not outcome.leftovers, f"{outcome.moment}: processes left running: {outcome.leftovers}"


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_sigterm_at_any_moment_of_a_ray_task_stage(quiet_head, base_project, tmp_path, cpu_burner):
    """`preprocess` (Ray tasks writing shards into staging folders), signalled at 10 moments."""
    local: dict[str, Moment] = {
        "at_start": at_start,
        "local_ray_starting": on_line("starting a local Ray runtime"),
        "local_driver_connecting": on_line("Started a local Ray instance"),
    }
    joined: dict[str, Moment] = {
        "joining_the_head": on_line("joining the Ray cluster"),
        "runtime_ready": on_line("Ray resources:"),
        **{f"shard_{count}": after_shards(count) for count in (1, 10, 25, 39)},
        "stage_finishing": on_line("stage preprocess finished"),
    }
    previous = fingerprint(base_project / "data")
    outcomes = run_trials("preprocess", base_project, tmp_path, local, head=None)
    outcomes += run_trials("preprocess", base_project, tmp_path, joined, head=quiet_head)
    for outcome in outcomes:
        check_clean(outcome)
        project = tmp_path / outcome.moment
        assert not temporary_names(project), f"{outcome.moment}: {temporary_names(project)}"
        for split in SPLITS:  # each split the previous one or a complete new one (identical: deterministic)
            verify_shards(project / "data" / "shards" / split)
        assert fingerprint(project / "data") == previous, outcome.moment
    # The last two moments race the stage's end (the 40th shard and the swap take milliseconds): exit 0
    # is as clean there as 143. Every earlier moment leaves the stage work to do, so it must stop it.
    stopped = [outcome.moment for outcome in outcomes if outcome.returncode != 0]
    racing_the_end = {"shard_39", "stage_finishing"}
    assert (set(local) | set(joined)) - racing_the_end <= set(stopped), f"only {stopped} were stopped"


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_sigterm_at_any_moment_of_a_ray_train_stage(quiet_head, base_project, tmp_path, cpu_burner):
    """`warmup` (one Ray Train worker, checkpoints every 2 steps), signalled at 3 moments."""
    previous_model = b"the previous warmup model"
    moments: dict[str, Moment] = {
        "workers_starting": on_line("Attempting to start training worker group"),
        "training": on_line("step 1/8"),
        "checkpoint_writing": on_checkpoint_folder,
    }
    outcomes = run_trials(
        "warmup", base_project, tmp_path, moments, quiet_head, previous_model=previous_model
    )
    for outcome in outcomes:
        check_clean(outcome)
        project = tmp_path / outcome.moment
        assert not temporary_names(project), f"{outcome.moment}: {temporary_names(project)}"
        written = (project / "models" / "warmup.pt").read_bytes()
        if outcome.returncode == 0:  # finished first: a complete new model replaced the previous one
            torch.load(project / "models" / "warmup.pt", weights_only=True)
        else:
            assert written == previous_model, f"{outcome.moment}: the previous model was touched"
            assert not (project / "metrics" / "warmup.json").exists()
    stopped = [outcome.moment for outcome in outcomes if outcome.returncode != 0]
    assert len(stopped) >= 3, f"only {stopped} were stopped before the stage finished"


# Runs as a stage process joining the head: SIGTERM reaches the driver right after its core worker exists,
# still inside `ray.init`, while the main thread is held in C for 5 s (as the rest of `ray.init` can be
# on a loaded machine), so no Python code can run meanwhile. The signal is sent to a thread of its own,
# leaving the main thread's C call uninterrupted.
SIGTERM_WHILE_RAY_INIT_IS_IN_C = r"""
import ctypes, signal, sys, threading
from pathlib import Path

import stages  # first, as in `python -m stages.<name>`
import ray
from pipeline.atomic import staged_directory
from pipeline.cli import run_stage
from pipeline.distributed.runtime import init_ray

real_init = ray.init


def init_then_sigterm_while_in_c(*args, **kwargs):
    real_init(*args, **kwargs)
    sender = threading.Thread(target=lambda: signal.pthread_kill(threading.get_ident(), signal.SIGTERM))
    sender.start()
    sender.join()
    ctypes.CDLL(None).sleep(5)


ray.init = init_then_sigterm_while_in_c


def body(config):
    with staged_directory(Path(sys.argv[2]) / "split"):
        init_ray()
        raise AssertionError("init_ray returned: the SIGTERM was lost")


run_stage("probe", body, ["--params", sys.argv[1]])
"""


@pytest.mark.slow
def test_sigterm_inside_ray_init_while_it_runs_c_code_for_seconds_unwinds(ray_head, tmp_path):
    """Abseil's failure-signal handler, which Ray's core worker installs inside `ray.init`, aborts the
    process 3 s after it sees a SIGTERM unless Python code cancels its alarm first: exit -6 and the
    staging folder left behind (seen once beside the DAG build; this test got -6 before the fix). A
    stage's driver has no such handler now (stages/__init__.py), so the held SIGTERM reaches the stage's
    own handler once `ray.init` is done, and the stage unwinds."""
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_WHILE_RAY_INIT_IS_IN_C, str(ROOT / "params.yaml"), str(tmp_path)],
        cwd=ROOT, env=ray_head.driver_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "SIGTERM received" not in result.stderr, f"Abseil's handler saw it:\n{result.stderr[-3000:]}"
    assert "stage probe stopped by SIGTERM" in result.stderr
    assert not list(tmp_path.iterdir()), "the staging folder was left behind"


# A driver as `stages.adapt_all` is one: its commands (here stand-ins for two cells' stage processes, each
# recording the SIGTERM it gets and leaving a child of its own running, as a stage's DataLoader workers
# or any subprocess it starts) run in Ray tasks of `run_tasks` on the head, side by side.
COMMAND_DRIVER = r"""
import sys

import stages  # first, as in `python -m stages.<name>`
from pipeline.cli import run_stage
from pipeline.distributed.commands import COMMAND_DRAIN_SECONDS, CommandJob, run_command
from pipeline.distributed.tasks import run_tasks

COMMAND = '''
import os, signal, subprocess, sys, time
from pathlib import Path

def stop(signum, frame):
    Path("stopped").write_text("SIGTERM")
    sys.exit(143)

# The command's child: records the SIGTERM it gets, then exits.
CHILD = (
    "import pathlib, signal, sys, time; "
    "record = lambda *_: (pathlib.Path('child_stopped').write_text('SIGTERM'), sys.exit(143)); "
    "signal.signal(signal.SIGTERM, record); time.sleep(600)"
)

signal.signal(signal.SIGTERM, stop)
child = subprocess.Popen([sys.executable, "-c", CHILD])
Path("pids").write_text(f"{os.getpid()} {child.pid}")
time.sleep(600)
'''


def body(config):
    folders = sys.argv[2:]
    jobs = [CommandJob(f"cell{i}", folder, ("python", "-c", COMMAND)) for i, folder in enumerate(folders)]
    run_tasks(run_command, jobs, "commands", cpus_per_task=0, drain_timeout_s=COMMAND_DRAIN_SECONDS)
    raise AssertionError("the commands ended by themselves")


run_stage("probe", body, ["--params", sys.argv[1]])
"""


def group_left(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_sigterm_to_a_driver_of_commands_stops_the_running_commands_and_their_process_groups(
    ray_head, tmp_path
):
    """`stages.adapt_all` runs each cell's command in a Ray task; SIGTERM to it must reach the commands
    still running, which unwind (a stage leaves its previous outputs), and what they started, instead of
    leaving any of it running after the driver has exited (on a cluster, a cell would go on training).
    Before issue 37 the command alone got SIGTERM: its child never did, and held the task (and the driver,
    its 60 s) until Ray's worker went and killed it with SIGKILL."""
    folders = [tmp_path / f"cell{i}" for i in range(2)]
    for folder in folders:
        folder.mkdir()
    driver = subprocess.Popen(
        [sys.executable, "-c", COMMAND_DRIVER, str(ROOT / "params.yaml"), *map(str, folders)],
        cwd=ROOT, env=ray_head.driver_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    pids: list[int] = []
    try:
        wait_for(lambda: all((f / "pids").is_file() for f in folders) or driver.poll() is not None,
                 EVENT_TIMEOUT_S, "both commands and their children to start")  # fmt: skip
        assert driver.poll() is None, driver.communicate()[0][-3000:]
        pids = [int(pid) for folder in folders for pid in (folder / "pids").read_text().split()]
        processes = [psutil.Process(pid) for pid in pids]
        driver.send_signal(signal.SIGTERM)
        output = driver.communicate(timeout=EXIT_TIMEOUT_S)[0]
        assert driver.returncode == 128 + signal.SIGTERM, output[-3000:]
        for folder in folders:
            assert (folder / "stopped").is_file(), f"{folder.name} never got SIGTERM:\n{output[-3000:]}"
            assert (folder / "child_stopped").is_file(), f"{folder.name}'s child never got SIGTERM"
        assert not alive(processes), f"left running after the driver exited: {alive(processes)}"
        commands = pids[::2]  # each command leads its own process group
        assert not [group for group in commands if group_left(group)]
    finally:
        driver.kill()
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
