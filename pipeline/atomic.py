"""Writes that are all-or-nothing: a reader (or DVC) never sees a half-written file or folder."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The folder must exist: creating it here could resurrect a staging folder that was just removed.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        _remove(Path(temporary))


def remove_interrupted_writes(path: Path) -> list[Path]:
    """Remove the temporary files `atomic_path` left beside `path` in writes that a SIGKILL interrupted (a
    SIGTERM or an error removes its own); returns them. Only for a caller that knows no write of `path` is
    under way."""
    leftovers = sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")) if path.parent.is_dir() else []
    _remove(*leftovers)
    return leftovers


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_json_atomic(path: Path, payload: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


@contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Build a directory beside `final` and swap it in only when the block completes.

    An interrupted run leaves the previous `final` (or nothing): a SystemExit (SIGTERM) or error during
    the block or the swap removes the staging folder and puts the previous `final` back; after a
    SIGKILL, the next run clears the `.staging` folder and restores a `.retired` one left mid-swap.
    No reader ever sees a mix of old and new shards.
    """
    staging = final.with_name(f".{final.name}.staging")
    retired = final.with_name(f".{final.name}.retired")
    if retired.exists() and not final.exists():
        os.replace(retired, final)  # a run killed mid-swap: its previous output is the one to keep
    _remove(staging, retired)
    staging.mkdir(parents=True)
    try:
        yield staging
        _swap_in(staging, final, retired)
    finally:
        _remove(staging, retired)


def _swap_in(staging: Path, final: Path, retired: Path) -> None:
    """Two renames: `final` → `retired`, `staging` → `final`; interrupted between them, undo the first."""
    try:
        if final.exists():
            os.replace(final, retired)
        os.replace(staging, final)
    except BaseException:
        if retired.exists() and not final.exists():
            os.replace(retired, final)
        raise


def _remove(*paths: Path) -> None:
    """Delete files or folders that may exist, even when a SIGTERM lands in the middle.

    The stage's handler (`pipeline.cli`) raises SystemExit once and ignores every later SIGTERM, so a
    removal it interrupts is finished by the second pass before the exit goes on: a cleanup that the
    signal cut short left a half-deleted `.retired` folder beside a complete new output (seen in CI).
    """
    try:
        _remove_now(paths)
    except BaseException:
        _remove_now(paths)
        raise


def _remove_now(paths: tuple[Path, ...]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            path.unlink(missing_ok=True)
