"""SIGTERM to pytest tears the session's fixtures down (tests/stop_on_sigterm.py): what they started in
sessions of their own (the Ray head, a second node, the DAG build) does not outlive a stopped test run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import stop_on_sigterm

TESTS = Path(__file__).resolve().parent
# A session fixture that starts a process in a session of its own, as `ray start --head` is started, and a
# test that waits until it is stopped.
INNER_TESTS = """
import subprocess, sys, time
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def daemon():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    (HERE / "daemon.pid").write_text(str(process.pid))
    yield
    process.kill()
    process.wait()
    (HERE / "torn_down").write_text("")


def test_runs_until_stopped(daemon):
    (HERE / "running").write_text("")
    time.sleep(600)
"""
WAIT_S = 60


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT_S} s for {what}"
        time.sleep(0.05)


def test_the_suite_itself_runs_with_the_handler():
    assert signal.getsignal(signal.SIGTERM) is stop_on_sigterm._interrupt


def test_sigterm_to_pytest_tears_down_the_session_fixtures(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "stop_on_sigterm"]
    pytest_run = subprocess.Popen(
        [*command, "test_inner.py"], cwd=tmp_path, env=dict(os.environ) | {"PYTHONPATH": str(TESTS)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: (tmp_path / "running").exists() or pytest_run.poll() is not None, "the inner test")
        daemon = int((tmp_path / "daemon.pid").read_text())
        assert psutil.pid_exists(daemon)
        pytest_run.send_signal(signal.SIGTERM)
        output, _ = pytest_run.communicate(timeout=WAIT_S)
    finally:
        pytest_run.kill()
    assert pytest_run.returncode == 2, output  # pytest's "interrupted"
    assert "KeyboardInterrupt" in output and "signal SIGTERM" in output, output
    assert (tmp_path / "torn_down").exists(), output
    assert not psutil.pid_exists(daemon) or psutil.Process(daemon).status() == psutil.STATUS_ZOMBIE
