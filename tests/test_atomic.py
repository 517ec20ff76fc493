"""All-or-nothing writes: a SIGTERM that lands inside their own cleanup still leaves no temporary name.

The stages' real SIGTERM handler (`pipeline.cli._exit_on_sigterm`) is installed and a real SIGTERM is
sent to this process at the moment under test; `test_sigterm.py` does the same from outside, at moments
spread over whole stage runs.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import atomic
from pipeline.cli import SIGTERM_EXIT_CODE, _exit_on_sigterm


@pytest.fixture
def stage_handler() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    yield
    signal.signal(signal.SIGTERM, previous)


def write_split(folder: Path, label: str, count: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"part-{index:05d}.parquet").write_text(f"{label} {index}")


def contents(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(folder.iterdir())}


def leftovers(root: Path) -> list[str]:
    return [path.name for path in root.iterdir() if path.name.startswith(".")]


def test_sigterm_while_the_previous_split_is_removed_finishes_the_removal(tmp_path, monkeypatch,
                                                                          stage_handler):  # fmt: skip
    """The swap is done (new split in place) and the signal arrives after the first file of the retired
    split is deleted: the new split stays, and the retired one is gone entirely (CI saw it left)."""
    final = tmp_path / "source"
    write_split(final, "previous")
    real_rmtree = shutil.rmtree
    signalled = []

    def rmtree_signalled_midway(path, *args, **kwargs):
        if path.name.endswith(".retired") and not signalled:
            next(path.iterdir()).unlink()
            signalled.append(path)
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises SystemExit at the next bytecode
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(atomic.shutil, "rmtree", rmtree_signalled_midway)
    with pytest.raises(SystemExit) as stopped, atomic.staged_directory(final) as staging:
        write_split(staging, "new")
    assert stopped.value.code == SIGTERM_EXIT_CODE and signalled
    assert contents(final) == {f"part-{index:05d}.parquet": f"new {index}" for index in range(20)}
    assert leftovers(tmp_path) == []


def test_sigterm_while_a_split_is_staged_keeps_the_previous_one(tmp_path, stage_handler):
    final = tmp_path / "source"
    write_split(final, "previous")
    previous = contents(final)
    with pytest.raises(SystemExit), atomic.staged_directory(final) as staging:
        write_split(staging, "new", count=5)
        os.kill(os.getpid(), signal.SIGTERM)
    assert contents(final) == previous
    assert leftovers(tmp_path) == []


def test_a_run_killed_between_the_two_renames_gets_its_previous_split_back(tmp_path):
    """After SIGKILL between `final → .retired` and `.staging → final`, the next run restores it first."""
    final = tmp_path / "source"
    write_split(tmp_path / ".source.retired", "previous")
    write_split(tmp_path / ".source.staging", "half", count=3)
    with pytest.raises(RuntimeError), atomic.staged_directory(final):
        assert contents(final)["part-00000.parquet"] == "previous 0"
        raise RuntimeError("this run fails too")
    assert contents(final)["part-00019.parquet"] == "previous 19"
    assert leftovers(tmp_path) == []


def test_sigterm_inside_an_atomic_file_write_keeps_the_previous_file(tmp_path, stage_handler):
    path = tmp_path / "metrics.json"
    path.write_text("previous")
    with pytest.raises(SystemExit), atomic.atomic_path(path) as temporary:
        temporary.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
    assert path.read_text() == "previous"
    assert sorted(item.name for item in tmp_path.iterdir()) == ["metrics.json"]


def test_the_temporary_files_of_writes_a_sigkill_cut_short_are_removed_and_nothing_else(tmp_path):
    """What `stages.adapt_all` clears beside a stopped cell's outputs: `atomic_path`'s temporary names of
    that output only; the output itself and its neighbours' files stay."""
    output = tmp_path / "base_seed0.pt"
    output.write_bytes(b"previous")
    left = [tmp_path / ".base_seed0.pt.k2j3h4.tmp", tmp_path / ".base_seed0.pt.zz9.tmp"]
    kept = [tmp_path / ".dass_seed0.pt.k2j3h4.tmp", tmp_path / "base_seed0.pt.tmp"]
    for path in left + kept:
        path.write_bytes(b"partial")
    assert atomic.remove_interrupted_writes(output) == sorted(left)
    assert output.read_bytes() == b"previous" and all(path.exists() for path in kept)
    assert not any(path.exists() for path in left)
    assert atomic.remove_interrupted_writes(tmp_path / "missing" / "x.pt") == []
