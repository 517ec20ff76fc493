"""What a driver's job still holds once all its Ray Train runs have ended, and its release.

A sweep's trial is a Tune trial actor that owns a Ray Train controller actor, which creates the
placement group of the trial's workers. When ASHA stops a trial, Tune kills the trial actor and Ray kills
the controller with it; Ray Train's PlacementGroupCleaner (a detached actor per run) then removes the
group it was told of and exits. Ray 2.60 leaves a group behind when the dying controller, seeing its
workers killed with it, counts that as a worker-group failure and, with a restart left
(`distributed.max_failures`), starts a new worker group: a new placement group, created after the GCS
has handled the controller's death (seen in the GCS log here, 0.18 s after), is never registered with
the cleaner (it learns of a group once its workers have started) and is never freed by the GCS (which
frees a group once both its creator job and its creator actor are dead, and marked the actor dead before
this group existed), so it stayed reserved after the job had ended, until the cluster restarted. Sweep
trials therefore run with no worker-group restart (pipeline/training/sweep.py), and once its trials are
over the sweep releases what its job still holds (`release_held_placement_groups`): nothing, unless a
trial's group outlived its trial. Ray issues: ray-project/ray#54305 (a Train V2 group of a trial Tune
stopped lives as long as the driver), #62753 (a group of a worker-group restart the cleaner misses as
the controller dies), #65881 (a group is freed only when its creator job and actor are both dead).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import ray

log = logging.getLogger(__name__)
RELEASED = "REMOVED"  # the state of a placement group that holds nothing
DEAD = "DEAD"  # the state of an actor that has ended
CONTROLLER = "TrainController"  # Ray Train V2's controller actor: creates a run's placement group
CLEANER = "PlacementGroupCleaner"  # Ray Train V2's detached actor that removes its run's group, then exits
# Bound on the wait for Ray's own cleanup (a dying controller's process to exit, a cleaner to remove its
# group and exit), which takes seconds (seen here: about 2 s with CPU burners beside a sweep); past it the
# release goes on, so a sweep always ends.
WAIT_S = 120.0
POLL_S = 0.5


def _state(listing: Callable[..., list], **equal: Any) -> list:
    """A listing of Ray's state API (the cluster's dashboard) filtered on `equal` fields."""
    return listing(address=ray.get_runtime_context().gcs_address, filters=list((key, "=", value)
                   for key, value in equal.items()), limit=10_000, detail=True,
                   raise_on_missing_output=False)  # fmt: skip


def held_placement_groups(job_id: str) -> dict[str, str]:
    """The placement groups created by `job_id` (its driver or any of its actors) not yet removed:
    id → a description (state and bundles)."""
    from ray.util.state import list_placement_groups  # the state API client: imported when asked

    return {group.placement_group_id: f"{group.state}, bundles {group.bundles}"
            for group in _state(list_placement_groups, creator_job_id=job_id)
            if group.state != RELEASED}  # fmt: skip


def live_actors(job_id: str, class_name: str) -> list[str]:
    """Ids of the actors of class `class_name` that `job_id` created and that have not ended."""
    from ray.util.state import list_actors

    return [actor.actor_id for actor in _state(list_actors, job_id=job_id, class_name=class_name)
            if actor.state != DEAD]  # fmt: skip


def controllers_running(job_id: str) -> bool:
    """Whether a Ray Train controller of `job_id` still runs. An actor Ray has marked DEAD may go on running
    Python for a moment, and create a placement group then (the leak above): only an exited process
    creates nothing more."""
    from ray.util.state import list_actors, list_workers

    controllers = _state(list_actors, job_id=job_id, class_name=CONTROLLER)
    if any(actor.state != DEAD for actor in controllers):
        return True
    processes = {(actor.node_id, actor.pid) for actor in controllers if actor.pid is not None}
    return bool(processes) and any(
        worker.is_alive and (worker.node_id, worker.pid) in processes for worker in _state(list_workers)
    )


def wait_until(done: Callable[[], bool], deadline: float) -> bool:
    """Poll `done` until it holds or the monotonic `deadline` passes; whether it held."""
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def release_held_placement_groups(owner: str, wait_s: float = WAIT_S) -> list[str]:
    """Call once every Ray Train run of this driver's job has ended (a sweep's `tuner.fit()` returned).

    Ray's own cleanup goes first, waited for by its events, not for a set time: every Ray Train controller
    process of the job has exited (none can create a group any more), then every PlacementGroupCleaner of
    the job has exited (each removes its run's group first). What the job still holds then is what Ray
    left behind: its placement groups are removed and named in a warning, with any cleaner still alive.
    Returns the removed ids; `owner` names the work in the warning. On a cluster without Ray's state API
    (no dashboard) nothing is removed, with a warning."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job_id = ray.get_runtime_context().get_job_id()
    deadline = time.monotonic() + wait_s
    try:
        settled = wait_until(lambda: not controllers_running(job_id), deadline) and wait_until(
            lambda: not live_actors(job_id, CLEANER), deadline
        )
        held = held_placement_groups(job_id)
        cleaners = live_actors(job_id, CLEANER)
    except Exception as error:  # the state API is optional on a cluster; its absence must not fail a stage
        log.warning("could not list the placement groups %s left (%s: %s); check `ray status` for CPUs "
                    "still reserved", owner, type(error).__name__, error)  # fmt: skip
        return []
    for group_id in held:
        remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(group_id)))
    if held or cleaners:
        log.warning(
            "%s left %d placement group(s) reserved after they ended (a Ray leak)%s; released: %s%s",
            owner, len(held), "" if settled else f" (Ray's own cleanup still going after {wait_s:g} s)",
            "; ".join(f"{group_id} ({what})" for group_id, what in held.items()) or "none",
            f"; {CLEANER} actors still alive: {', '.join(cleaners)}" if cleaners else "",
        )  # fmt: skip
    return list(held)
