"""A pytest plugin: SIGTERM ends the run as Ctrl-C does, so the session's fixtures are torn down.

A CI runner, a job scheduler or `kill` stops a test run with SIGTERM. Python's default action kills pytest
at once, and what its fixtures started in sessions of their own keeps running: the `ray start --head` of
tests/ray_head.py with its daemons, a second node, the DAG build's `dvc repro`. Raised as
KeyboardInterrupt instead, the signal makes pytest stop after the running test's own teardown and then
tear down the session's fixtures, which stop all of those. tests/conftest.py installs it.
"""

from __future__ import annotations

import os
import signal
import threading

_PYTEST_PID = os.getpid()


def _interrupt(signum: int, frame: object) -> None:
    if os.getpid() != _PYTEST_PID:  # a forked child: the signal's default action, as without the plugin
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def install() -> None:
    # Python handlers are set from the main thread only (pytest runs its hooks there).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_configure(config) -> None:  # as a plugin of its own: `pytest -p stop_on_sigterm`
    install()
