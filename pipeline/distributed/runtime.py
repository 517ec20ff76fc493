"""Connecting to Ray: a cluster when RAY_ADDRESS is set (`ray job submit`), else a local runtime."""

from __future__ import annotations

import logging
import os

import ray

log = logging.getLogger(__name__)


def init_ray(num_cpus: int | None = None) -> None:
    """Start or join Ray once per process.

    `ray.init` honours RAY_ADDRESS itself, so the same stage runs locally and under `ray job submit`.
    A local runtime binds its dashboard to 127.0.0.1 (never all interfaces) and, when `num_cpus` is
    None, uses every core of the machine.

    The dashboard stays on (about 1.5 s of start-up): Ray's state API runs in it, and Ray Train V2's
    PlacementGroupCleaner needs that API to free the workers' placement group of a run whose controller
    ended with its Tune trial. Without it, every finished sweep trial kept its CPUs and the next trials
    waited forever (seen here).
    """
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True)
    log.info("Ray resources: %s", ray.cluster_resources())
