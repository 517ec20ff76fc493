"""`python -m stages.adapt_all`: every pending ablation cell at once, then `dvc commit` (not a DVC stage).

`dvc repro` runs the matrix's cells one after another: its repository lock makes parallel `dvc repro`
of cells fail ("Unable to acquire lock", treeverse/dvc#9805, #10465). On a cluster that can hold
several cells, this command runs every pending cell (`adapt@<row>-<seed>` changed in `dvc status`)
as the very command its DVC cell declares (`python -m stages.adapt --row <row> --seed <seed>`), each in
a Ray task that joins the same cluster and starts its own Ray Train run; as many run at a time as the
cluster's GPUs (or CPUs) fit, the rest are queued. Then `dvc commit` records the cells in dvc.lock, so
a later `dvc repro` finds them up to date and goes on with evaluate, report and sweep. A cell that fails,
or SIGTERM or Ctrl-C to this command, stops every cell still running (its process group gets SIGTERM, the
cell unwinds, leaving its previous outputs, and SIGKILL ends what is left of the group after 30 s), waits
until none of them is left, and commits nothing; the exit status is then 143 (SIGTERM):

    dvc repro pseudo_label        # everything the cells need
    python -m stages.adapt_all    # the cells, side by side
    dvc repro                     # evaluate, report, sweep
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys

from pipeline import artifacts
from pipeline.atomic import remove_interrupted_writes
from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.distributed.commands import COMMAND_DRAIN_SECONDS, CommandJob, cells_that_fit, run_command
from pipeline.distributed.tasks import run_tasks
from pipeline.errors import InputError

log = logging.getLogger("stages.adapt_all")
STAGE = "adapt"
UPSTREAM = ("synthesize", "preprocess", "warmup", "pseudo_label")


class UpstreamChangedError(InputError, RuntimeError):
    """A stage the cells depend on is not up to date."""


def dvc(config: Config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=config.project_root, capture_output=True,
                          text=True, check=False)  # fmt: skip


def cell_key(row: str, seed: int) -> str:
    """The DVC name of a matrix cell (dvc.yaml `adapt`, matrix row × seed)."""
    return f"{STAGE}@{row}-{seed}"


def pending_cells(config: Config) -> list[tuple[str, int]]:
    """The params' cells that `dvc status` reports changed; an error if a stage before them changed."""
    status = dvc(config, "status", "--json")
    if status.returncode != 0:
        raise InputError(f"dvc status failed in {config.project_root}: {status.stderr.strip()[-500:]}")
    changed = set(json.loads(status.stdout or "{}"))
    upstream = sorted(changed & set(UPSTREAM))
    if upstream:
        raise UpstreamChangedError(f"stages the cells depend on are not up to date ({', '.join(upstream)}): "
                                   "run `dvc repro pseudo_label` first")  # fmt: skip
    cells = [(row, seed) for row in config.ablation.rows for seed in config.ablation.seeds]
    return [(row, seed) for row, seed in cells if cell_key(row, seed) in changed]


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=0,
        help="cells at a time (default: as many as the cluster's GPUs or CPUs fit)",
    )


def adapt_all(config: Config, max_parallel: int) -> list[tuple[str, int]]:
    cells = pending_cells(config)
    if not cells:
        print("every ablation cell is up to date")
        return []
    at_once = max_parallel or cells_that_fit(config)
    log.info("%d pending cells, %d at a time: %s", len(cells), at_once,
             ", ".join(artifacts.cell_name(row, seed) for row, seed in cells))  # fmt: skip
    jobs = [CommandJob(artifacts.cell_name(row, seed), str(config.project_root),
                       ("python", "-m", f"stages.{STAGE}", "--row", row, "--seed", str(seed)))
            for row, seed in cells]  # fmt: skip
    try:
        run_tasks(run_command, jobs, "adapt cells", unit="cell", cpus_per_task=0, max_in_flight=at_once,
                  drain_timeout_s=COMMAND_DRAIN_SECONDS)  # fmt: skip
    except BaseException:
        # A cell killed mid-write (SIGKILL after its grace) leaves the temporary file of that write beside
        # the output it was replacing; the output itself is the previous one (pipeline/atomic.py).
        for row, seed in cells:
            remove_interrupted_writes(config.resolve(artifacts.cell_model(row, seed)))
            remove_interrupted_writes(config.resolve(artifacts.cell_metrics(row, seed)))
        raise
    committed = dvc(config, "commit", "--force", *(cell_key(row, seed) for row, seed in cells))
    if committed.returncode != 0:
        raise RuntimeError(f"the cells ran, but `dvc commit` failed: {committed.stderr.strip()[-800:]}")
    print(f"{len(cells)} cells trained and committed to dvc.lock: {', '.join(job.name for job in jobs)}")
    return cells


if __name__ == "__main__":
    run_stage("adapt_all", adapt_all, arguments=arguments)
