"""The `warmup` stage: source-only training (→ models/warmup.pt) and the target oracle (upper bound)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.atomic import write_json_atomic
from pipeline.config import Config
from pipeline.distributed.train import require_gpus
from pipeline.tracking.mlflow_run import tracking_available
from pipeline.training.supervised import SupervisedJob, train_supervised

log = logging.getLogger(__name__)

WARMUP_MODEL = "models/warmup.pt"
ORACLE_FOLDER = "models/oracle"
ORACLE_MODEL = "models/oracle/oracle.pt"
METRICS = "metrics/warmup.json"


def warmup(config: Config) -> dict:
    tracking_available(config)  # fail fast, before any training, if the store is required and down
    require_gpus(config)
    jobs = [(SupervisedJob(config, "source_only", "source", "source", "warmup"), WARMUP_MODEL)]
    oracle_folder = config.resolve(ORACLE_FOLDER)
    oracle_folder.mkdir(parents=True, exist_ok=True)
    if config.warmup.oracle:
        jobs.append((SupervisedJob(config, "oracle", "target_train", "target", "warmup"), ORACLE_MODEL))
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
        stale = oracle_folder / "disabled.json"
        stale.unlink(missing_ok=True)
    Path(config.resolve(METRICS)).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config.resolve(METRICS), summary)
    return summary
