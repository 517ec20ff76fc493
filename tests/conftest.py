"""Shared fixtures: one real local Ray runtime for the session, test helpers on sys.path."""

import faulthandler
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import stop_on_sigterm  # from tests/, put on sys.path just above

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# Ray Train's controller polls its workers every 2 s by default; at test sizes that wait is much of a
# run's end. The session runtime, the head and every stage process the tests start inherit this.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Ray's log monitor re-lists its log folder every 0.1 s until the folder holds 1000 files, then every 0.5 s
# (ray/_private/log_monitor.py). The session's head collects hundreds of worker logs: with 456 files it
# used 3.5 CPU-s a minute, 1.5 with the 0.5 s listing (measured 2026-12-01). New workers' first lines
# reach their driver up to 0.4 s later.
os.environ.setdefault("RAY_LOG_MONITOR_MANY_FILES_THRESHOLD", "0")

EXIT_HANG_REPORT_S = 300


def pytest_configure(config):
    stop_on_sigterm.install()  # SIGTERM tears the session's fixtures down, as Ctrl-C does


def pytest_unconfigure(config):
    """After the last fixture is torn down, pytest-timeout no longer watches: a process that then hangs at
    exit (seen 2026-12-01 under load: all tests passed, then over 10 min idle at exit) prints every
    thread's stack every 5 min, so the log shows where. Diagnostic only: it neither kills nor fails."""
    faulthandler.dump_traceback_later(EXIT_HANG_REPORT_S, repeat=True, file=sys.__stderr__)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """The code under test sets torch's thread count for its process (evaluate, predict and labelling
    tasks use 1), and in-process tests run it in pytest's: restored after each test, so a numeric test's
    threads do not depend on which tests ran before it."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_runtime():
    """A real local Ray runtime on 2 CPUs, started once (start-up costs seconds) the way the stages start
    theirs: on 127.0.0.1 only, with the dashboard that Ray Train's placement-group cleanup needs."""
    import ray

    from pipeline.distributed.runtime import init_ray

    # No log thread: on a loaded machine its blocking poll of the GCS once kept `ray.shutdown()` at the
    # session's end waiting for more than 10 minutes (2026-11-30); tests read results, not worker logs.
    init_ray(num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """A real `ray start --head` on 127.0.0.1 with token authentication (tests/ray_head.py), started once:
    `ray job submit` goes to it, and stage processes of the end-to-end tests join it through RAY_ADDRESS
    (`head.driver_env`) instead of each starting a local runtime (seconds of CPU each)."""
    from ray_head import running_head

    with running_head(tmp_path_factory.mktemp("ray_head")) as head:
        yield head


DAG_MODULE = "test_dvc_pipeline.py"
# Run last, in this order: the DAG module, whose project builds in the background meanwhile
# (tests/dag_build.py), then the tests that count the processes under the session's Ray head, which
# must not see the build's, then the repeated sweeps beside CPU burners, which would slow the build down.
LAST_MODULES = (DAG_MODULE, "test_sigterm.py", "test_nothing_left.py")


def pytest_collection_modifyitems(session, config, items):
    def position(item) -> int:
        name = item.path.name
        return LAST_MODULES.index(name) + 1 if name in LAST_MODULES else 0

    items.sort(key=position)  # stable: file order otherwise kept


@pytest.fixture(scope="session", autouse=True)
def dag_build(request, tmp_path_factory):
    """The DAG module's projects, building in the background from the session's first test when that
    module is selected (tests/dag_build.py): the first `dvc repro`, and the later runs only the selected
    tests name (`@pytest.mark.dag_runs`). None when the module is not selected."""
    if not any(item.path.name == DAG_MODULE for item in request.session.items):
        yield None
        return
    from dag_build import DagBuild

    head = request.getfixturevalue("ray_head")
    wanted = {run for item in request.session.items for marker in item.iter_markers("dag_runs")
              for run in marker.args}  # fmt: skip
    build = DagBuild(tmp_path_factory.mktemp("dag"), head, wanted).start()
    yield build
    build.stop()
