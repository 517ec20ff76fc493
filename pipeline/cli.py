"""What every stage entry point shares: argument parsing, logging and clean error exits."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from pipeline.config import Config, ConfigError, load_config
from pipeline.data.images import CorruptImageError
from pipeline.data.preprocess import EmptySplitError
from pipeline.data.readers import DatasetLayoutError
from pipeline.data.shards import ShardIntegrityError

# Errors caused by the user's inputs: printed as one clear line instead of a traceback.
INPUT_ERRORS = (ConfigError, DatasetLayoutError, CorruptImageError, EmptySplitError, ShardIntegrityError)

log = logging.getLogger("pipeline")


def run_stage(name: str, body: Callable[[Config], Any], argv: list[str] | None = None) -> None:
    """Parse `--params`, load the config, run `body(config)`; exit 1 with the message on bad input."""
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=f"DVC stage `{name}`")
    parser.add_argument("--params", default="params.yaml", help="path of params.yaml (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        config = load_config(args.params)
        body(config)
    except INPUT_ERRORS as error:
        print(f"error: stage {name}: {error}", file=sys.stderr)
        sys.exit(1)
    log.info("stage %s finished in %.1f s", name, time.perf_counter() - started)
