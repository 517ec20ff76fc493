"""Placement groups a driver's job still holds once all its runs have ended, and their release.

Ray 2.60 sometimes leaves one reserved after a sweep whose trials run side by side and are stopped by
ASHA (the default sweep): state CREATED after the sweep's job had SUCCEEDED, every actor of the job DEAD.
Its CPUs are then missing from every later run on the cluster, and a run that needs them all (two
workers on a two-CPU head) waits for them forever. Seen here in 1 sweep of 5 with CPU burners beside it
(docs/performance.md); the sweep therefore releases what its job still holds when its trials are over.

Groups of a trial stopped just before the end are still going when `tuner.fit()` returns: Ray Train's
PlacementGroupCleaner removes its run's group once it sees the run's controller dead (it checks every
second, through the state API). Seen here with CPU burners beside the sweep: two groups of the job held at
that moment, gone a few seconds later. So Ray is given a grace period first; only what outlives it is
removed, and named.
"""

from __future__ import annotations

import logging
import time

import ray

log = logging.getLogger(__name__)
RELEASED = "REMOVED"  # the state of a placement group that holds nothing
# How long Ray's own cleanup may take before a group still held counts as left behind (seconds); at least
# 3x the slowest seen here, a few seconds with CPU burners beside the sweep.
GRACE_S = 20.0
POLL_S = 0.5


def held_placement_groups(job_id: str) -> dict[str, str]:
    """The placement groups created by `job_id` (its driver or any of its actors) not yet removed, from
    Ray's state API (the cluster's dashboard): id → a description (state and bundles)."""
    from ray.util.state import list_placement_groups  # the state API client: imported when asked

    groups = list_placement_groups(address=ray.get_runtime_context().gcs_address,
                                   filters=[("creator_job_id", "=", job_id)], limit=10_000, detail=True,
                                   raise_on_missing_output=False)  # fmt: skip
    return {group.placement_group_id: f"{group.state}, bundles {group.bundles}"
            for group in groups if group.state != RELEASED}  # fmt: skip


def release_held_placement_groups(owner: str, grace_s: float = GRACE_S) -> list[str]:
    """Remove every placement group this driver's job still holds `grace_s` seconds after the call (Ray's
    own cleanup goes first); call it only when nothing of the job can still need one (all its runs have
    ended). Returns the removed ids; `owner` names the work in the warning. On a cluster without Ray's
    state API (no dashboard) nothing is removed, with a warning."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job_id = ray.get_runtime_context().get_job_id()
    deadline = time.monotonic() + grace_s
    try:
        held = held_placement_groups(job_id)
        while held and time.monotonic() < deadline:
            time.sleep(POLL_S)
            held = held_placement_groups(job_id)
    except Exception as error:  # the state API is optional on a cluster; its absence must not fail a stage
        log.warning("could not list the placement groups %s left (%s: %s); check `ray status` for CPUs "
                    "still reserved", owner, type(error).__name__, error)  # fmt: skip
        return []
    for group_id in held:
        remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(group_id)))
    if held:
        log.warning("%s left %d placement group(s) reserved %g s after they ended (a Ray leak); released: %s",
                    owner, len(held), grace_s,
                    "; ".join(f"{group_id} ({what})" for group_id, what in held.items()))  # fmt: skip
    return list(held)
