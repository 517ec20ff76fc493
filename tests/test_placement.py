"""Releasing the placement groups a driver's job still holds once its runs have ended (the leak that
held a CPU of the Ray head after a sweep: pipeline/distributed/placement.py)."""

from __future__ import annotations

import threading
import time

from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

from pipeline.distributed.placement import held_placement_groups, release_held_placement_groups


def test_a_placement_group_the_job_still_holds_is_released_and_its_cpu_freed(ray_runtime):
    ray = ray_runtime
    cpus = ray.cluster_resources()["CPU"]
    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=120)
    job = ray.get_runtime_context().get_job_id()
    assert group.id.hex() in held_placement_groups(job)
    assert ray.available_resources().get("CPU", 0) <= cpus - 1

    assert release_held_placement_groups("the test", grace_s=0) == [group.id.hex()]
    deadline = time.monotonic() + 60
    while placement_group_table(group)["state"] != "REMOVED" or ray.available_resources().get("CPU") != cpus:
        assert time.monotonic() < deadline, (placement_group_table(group), ray.available_resources())
        time.sleep(0.1)
    assert held_placement_groups(job) == {}
    assert release_held_placement_groups("the test", grace_s=0) == []  # nothing held: nothing removed


def test_a_group_its_owner_removes_within_the_grace_is_left_to_it(ray_runtime):
    """Ray Train removes a stopped run's group a few seconds after its controller died: that is not a leak."""
    ray = ray_runtime
    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=120)
    owner = threading.Timer(1.0, remove_placement_group, args=(group,))
    owner.start()
    try:
        assert release_held_placement_groups("the test", grace_s=60) == []
    finally:
        owner.join()
    assert placement_group_table(group)["state"] == "REMOVED"
