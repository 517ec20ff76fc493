"""Releasing what a driver's job still holds once its Ray Train runs have ended (the leak that held a CPU
of the Ray head after a sweep: pipeline/distributed/placement.py). Ray Train's two actors are stood in
for by actors of the same class names, which is how the release finds them (Ray's state API)."""

from __future__ import annotations

import time

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

from pipeline.distributed.placement import (
    CLEANER,
    CONTROLLER,
    held_placement_groups,
    release_held_placement_groups,
)

WAIT_S = 120  # for Ray's own cleanup; the tests' events take seconds


def wait_released(group, cpus: float) -> None:
    deadline = time.monotonic() + WAIT_S
    while placement_group_table(group)["state"] != "REMOVED" or ray.available_resources().get("CPU") != cpus:
        assert time.monotonic() < deadline, (placement_group_table(group), ray.available_resources())
        time.sleep(0.1)


def test_a_placement_group_the_job_still_holds_is_released_and_its_cpu_freed(ray_runtime):
    cpus = ray.cluster_resources()["CPU"]
    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=WAIT_S)
    job = ray.get_runtime_context().get_job_id()
    assert group.id.hex() in held_placement_groups(job)
    assert ray.available_resources().get("CPU", 0) <= cpus - 1

    assert release_held_placement_groups("the test", wait_s=WAIT_S) == [group.id.hex()]
    wait_released(group, cpus)
    assert held_placement_groups(job) == {}
    assert release_held_placement_groups("the test", wait_s=WAIT_S) == []  # nothing held: nothing removed


@ray.remote(num_cpus=0)
class TrainController:
    """Creates a placement group, as Ray Train's controller creates its workers' group."""

    def start_workers(self) -> str:
        group = placement_group([{"CPU": 1}])
        ray.get(group.ready(), timeout=WAIT_S)
        return group.id.hex()


def test_the_group_of_a_killed_controller_is_released_once_its_process_has_exited(ray_runtime):
    """The leak: a group whose creator actor is dead, which the GCS keeps while the job lives (and, created
    after the GCS marked its creator dead, after the job too)."""
    assert TrainController.__ray_metadata__.class_name == CONTROLLER
    cpus = ray.cluster_resources()["CPU"]
    controller = TrainController.remote()
    group_id = ray.get(controller.start_workers.remote(), timeout=WAIT_S)
    ray.kill(controller)
    assert release_held_placement_groups("the test", wait_s=WAIT_S) == [group_id]
    group = next(g for g in ray.util.placement_group_table().values() if g["placement_group_id"] == group_id)
    assert group["state"] == "REMOVED"
    deadline = time.monotonic() + WAIT_S
    while ray.available_resources().get("CPU") != cpus:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.1)


@ray.remote(num_cpus=0)
class PlacementGroupCleaner:
    """Removes its run's group, then exits, as Ray Train's cleaner does once its run's controller is dead."""

    def ready(self) -> bool:
        return True

    def remove_after(self, group, seconds: float) -> None:
        time.sleep(seconds)
        remove_placement_group(group)
        ray.actor.exit_actor()


def test_a_group_ray_trains_cleaner_removes_is_waited_for_and_left_to_it(ray_runtime):
    """Ray's own cleanup comes first, waited for by its events (the cleaner has exited), not for a set
    time: a group it removes is no leak, so nothing is released or named (without the wait, the release
    would find the group still held and remove it itself)."""
    assert PlacementGroupCleaner.__ray_metadata__.class_name == CLEANER
    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=WAIT_S)
    cleaner = PlacementGroupCleaner.remote()
    ray.get(cleaner.ready.remote(), timeout=WAIT_S)
    cleaner.remove_after.remote(group, 2.0)
    assert release_held_placement_groups("the test", wait_s=WAIT_S) == []
    assert placement_group_table(group)["state"] == "REMOVED"
