"""What every stage entry point shares: argument parsing, logging and clean error exits."""

from __future__ import annotations

import argparse
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


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    print("stopped by SIGTERM: partial outputs removed", file=sys.stderr)
    sys.exit(SIGTERM_EXIT_CODE)


def run_stage(name: str, body: Callable[..., Any], argv: list[str] | None = None,
              options: dict[str, type] | None = None) -> None:  # fmt: skip
    """Parse `--params` (and `options`, passed to `body` as keywords), load the config, run
    `body(config, **options)`; exit 1 with a one-line message on bad input."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=f"DVC stage `{name}`")
    parser.add_argument("--params", default="params.yaml", help="path of params.yaml (default: %(default)s)")
    for flag, kind in (options or {}).items():
        parser.add_argument(flag, type=kind, required=True)
    args = parser.parse_args(argv)
    keywords = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"))
                for flag in options or {}}  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # SIGTERM (a job scheduler, `kill`, DVC being stopped) would end the process without unwinding:
    # turn it into SystemExit so every atomic write and staging folder cleans up after itself.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.perf_counter()
    try:
        config = load_config(args.params)
        body(config, **keywords)
    except INPUT_ERRORS as error:
        print(f"error: stage {name}: {error}", file=sys.stderr)
        sys.exit(1)
    log.info("stage %s finished in %.1f s, driver peak RSS %.0f MB", name, time.perf_counter() - started,
             peak_rss_mb())  # fmt: skip
