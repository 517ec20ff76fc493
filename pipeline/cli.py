"""What every stage entry point shares: argument parsing, logging and clean error exits."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from pipeline.config import load_config
from pipeline.errors import InputError
from pipeline.memory import peak_rss_mb

# Errors caused by the user's inputs: printed as one clear line instead of a traceback.
INPUT_ERRORS = (
    InputError,  # params, dataset layout, corrupt files, shards, checkpoints, missing GPU
    FileNotFoundError,  # a stage run before the one that writes its input (names the file)
)

log = logging.getLogger("pipeline")
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


# Set by the SIGTERM handler: whatever exception then reaches `run_stage`, the stage was stopped.
_stop = {"requested": False}


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # A second SIGTERM (a scheduler repeating itself) must not interrupt the cleanup the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _stop["requested"] = True
    sys.exit(SIGTERM_EXIT_CODE)


def run_stage(name: str, body: Callable[..., Any], argv: list[str] | None = None,
              options: dict[str, type] | None = None,
              arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> None:  # fmt: skip
    """Parse `--params` and the stage's own arguments (`options`: required flags of these types, and/or
    whatever `arguments` adds to the parser), load the config, run `body(config, **those arguments)`;
    exit 1 with a one-line message on bad input."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=f"stage `{name}`")
    parser.add_argument("--params", default="params.yaml", help="path of params.yaml (default: %(default)s)")
    for flag, kind in (options or {}).items():
        parser.add_argument(flag, type=kind, required=True)
    if arguments is not None:
        arguments(parser)
    args = parser.parse_args(argv)
    keywords = {key: value for key, value in vars(args).items() if key != "params"}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # A crash (SIGSEGV, SIGABRT) prints every thread's Python stack: the report Abseil's handler gave,
    # which stage processes go without (stages/__init__.py).
    if not faulthandler.is_enabled():
        faulthandler.enable()
    # `kill -USR1 <pid>` prints every thread's stack and the stage goes on: where a stage that seems stuck
    # is waiting (tests/dag_build.py asks a run past its time limit so). To the process's own stderr: a
    # caller may have replaced sys.stderr with a stream that has no file descriptor.
    if sys.__stderr__ is not None:
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    # SIGTERM (a job scheduler, `kill`, DVC being stopped) would end the process without unwinding:
    # turn it into SystemExit so every atomic write and staging folder cleans up after itself.
    _stop["requested"] = False
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.perf_counter()
    try:
        config = load_config(args.params)
        body(config, **keywords)
    except BaseException as error:
        if _stop["requested"]:
            # The cleanup has run. The exception is not always the handler's SystemExit(143): a SIGTERM
            # that lands in `ray.get` comes out of Ray's C++ wait as SystemExit(1) (ray._raylet
            # check_status → raise_sys_exit_with_custom_error_message), and Ray may raise its own errors
            # while the stage unwinds. The exit status says what happened: stopped by SIGTERM.
            print(f"stage {name} stopped by SIGTERM: partial outputs removed", file=sys.stderr)
            sys.exit(SIGTERM_EXIT_CODE)
        if isinstance(error, INPUT_ERRORS):
            print(f"error: stage {name}: {error}", file=sys.stderr)
            sys.exit(1)
        raise
    finally:
        # Done, stopped or failed: what remains is Ray's own shutdown at exit (atexit). A SIGTERM that
        # raises SystemExit inside it left a half-shut-down driver that segfaulted (exit -11, seen here),
        # so from now on SIGTERM is ignored; the shutdown takes a second or two.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log.info("stage %s finished in %.1f s, driver peak RSS %.0f MB", name, time.perf_counter() - started,
             peak_rss_mb())  # fmt: skip
