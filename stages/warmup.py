"""DVC stage `warmup`: source-only training (→ models/warmup.pt) and the target oracle (the upper bound),
each a Ray Train run of the supervised worker (pipeline/training/supervised.py)."""

from __future__ import annotations

import logging
import time

from pipeline import artifacts
from pipeline.atomic import write_json_atomic
from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.distributed.train import require_resources
from pipeline.tracking.mlflow_run import tracking_available
from pipeline.training.supervised import SupervisedJob, train_supervised

log = logging.getLogger("stages.warmup")


def warmup(config: Config) -> dict:
    tracking_available(config)  # fail fast, before any training, if the store is required and down
    require_resources(config)
    source_only = SupervisedJob(config, "source_only", artifacts.SOURCE, "source", "warmup")
    jobs = [(source_only, artifacts.WARMUP_MODEL)]
    oracle_folder = config.resolve(artifacts.ORACLE_FOLDER)
    oracle_folder.mkdir(parents=True, exist_ok=True)
    if config.warmup.oracle:
        oracle = SupervisedJob(config, "oracle", artifacts.TARGET_TRAIN, "target", "warmup")
        jobs.append((oracle, artifacts.ORACLE_MODEL))
    else:
        # The folder stays a (nearly empty) DVC output so the DAG shape does not depend on the switch.
        write_json_atomic(
            oracle_folder / "disabled.json", {"oracle": False, "reason": "warmup.oracle is false"}
        )
    summary = {}
    for job, output in jobs:
        started = time.perf_counter()
        log.info("training %s on %s for %d steps", job.model_name, job.split, config.warmup.steps)
        summary[job.model_name] = train_supervised(job, config.resolve(output))
        summary[job.model_name]["seconds"] = round(time.perf_counter() - started, 1)
    if config.warmup.oracle:
        (oracle_folder / "disabled.json").unlink(missing_ok=True)
    metrics = config.resolve(artifacts.WARMUP_METRICS)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(metrics, summary)
    return summary


if __name__ == "__main__":
    run_stage("warmup", warmup)
