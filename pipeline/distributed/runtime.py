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
    """
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, dashboard_host="127.0.0.1", log_to_driver=True)
    log.info("Ray resources: %s", ray.cluster_resources())
