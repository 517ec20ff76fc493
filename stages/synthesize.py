"""DVC stage `synthesize`: the embedded benchmark under `data.synthetic.root`, in the real GTA5 / SYNTHIA /
Cityscapes layouts (pipeline/synthetic/), or only a marker when real data is used.

Rendering runs as Ray tasks (pipeline/synthetic/jobs.py). The whole tree is built in a staging folder
and swapped in at the end, so an interrupted run leaves no partial dataset.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

from pipeline.atomic import staged_directory, write_json_atomic
from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.distributed.tasks import run_tasks
from pipeline.synthetic.jobs import render_job, render_jobs

MARKER = "benchmark.json"


def synthesize(config: Config) -> dict:
    """Write `data.synthetic.root` (the benchmark, or only a marker when it is disabled)."""
    synthetic = config.data.synthetic
    out = config.resolve(synthetic.root)
    summary = {"enabled": synthetic.enabled}
    if not synthetic.enabled:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        summary["note"] = "synthetic benchmark disabled: readers use data.source.root and data.target.root"
        write_json_atomic(out / MARKER, summary)
        return summary
    with staged_directory(out) as staging:
        jobs = render_jobs(config, staging)
        run_tasks(render_job, jobs, "synthesize", unit="img", weights=[len(job.indices) for job in jobs])
        summary |= {"seed": synthetic.seed, "datasets": json.loads(json.dumps(asdict(synthetic)))}
        write_json_atomic(staging / MARKER, summary)
    return summary


if __name__ == "__main__":
    run_stage("synthesize", synthesize)
