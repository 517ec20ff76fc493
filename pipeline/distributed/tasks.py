"""Fan a list of independent pieces of work out as Ray tasks, with a progress bar."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

import ray
from tqdm import tqdm

from pipeline.distributed.runtime import init_ray

Task = TypeVar("Task")
Result = TypeVar("Result")

# How long an interrupted run waits, by default, for the tasks already running to finish their piece.
DRAIN_TIMEOUT_SECONDS = 60.0


@ray.remote(num_cpus=0)
class StopFlag:
    """Exists (under a per-run name) once the driver stops: tasks that start afterwards skip their work."""

    def ready(self) -> bool:
        return True


def stop_requested(flag_name: str) -> bool:
    try:
        ray.get_actor(flag_name)
    except ValueError:
        return False
    return True


# The stop flag of the `run_tasks` call whose task is running here (None outside one).
_running_under: ContextVar[str | None] = ContextVar("running_under", default=None)


def task_resources(cpus: float, gpus: float) -> dict[str, Any]:
    """`ray.remote` options of a task of `cpus` CPUs and `gpus` GPUs, never retried.

    A GPU task's worker process is kept for the next task (max_calls=0, as for CPU tasks). Ray's default
    for GPU tasks, max_calls=1 (a process per task, so that a framework holding GPU memory gives it back),
    would import torch and create a CUDA context again for every shard; and such a worker was seen to abort
    while exiting after its task (abseil "Mutex corrupt", then `Fatal Python error: Aborted` in its log;
    Ray 2.60, a logical GPU on this machine). A reused worker keeps torch's cache of GPU memory, which is
    what one task of its share of the GPU needs anyway.
    """
    return {"num_cpus": cpus, "num_gpus": gpus, "max_retries": 0, "max_calls": 0}


def run_unless_stopped(function: Callable[[Task], Result], task: Task, flag_name: str) -> Result | None:
    if stop_requested(flag_name):
        return None
    token = _running_under.set(flag_name)
    try:
        return function(task)
    finally:
        _running_under.reset(token)


def stopping() -> bool:
    """Inside a task of `run_tasks`: whether its driver is stopping (SIGTERM, Ctrl-C, another task failed).

    A task whose piece of work is long and interruptible (a whole command: pipeline/distributed/commands.py)
    polls this and stops its work; the others just finish their piece, which the driver waits for.
    """
    flag_name = _running_under.get()
    return flag_name is not None and stop_requested(flag_name)


def run_tasks(
    function: Callable[[Task], Result],
    tasks: Sequence[Task],
    description: str,
    unit: str = "task",
    weights: Sequence[int] | None = None,
    cpus_per_task: float = 1,
    max_in_flight: int | None = None,
    gpus_per_task: float = 0,
    drain_timeout_s: float = DRAIN_TIMEOUT_SECONDS,
) -> list[Result]:
    """Run `function(task)` for every task as a Ray task (`cpus_per_task` CPUs and `gpus_per_task` GPUs
    each); results in task order.

    The first task to fail stops the rest and re-raises that task's own exception. `weights`
    advance the progress bar per task (e.g. rows per shard) so the bar counts samples, not tasks.
    `cpus_per_task` 0 and `max_in_flight` suit tasks that start their own Ray Train runs (which
    reserve their workers' resources): at most that many are submitted at a time, the rest wait.

    Stopping is cooperative: a named flag makes queued tasks return at once, running ones that poll
    `stopping()` stop their work, and the driver waits for the running ones (up to `drain_timeout_s`; a
    task that stops a process waits for it, so give it more than that task's own bound), so no task
    writes into a staging folder after the caller removed it. `ray.cancel` is not used: in Ray 2.60 it
    races a task's completion and can abort the driver ("Tried to complete task that was not pending").
    """
    init_ray()
    flag_name = f"pipeline-stop-{uuid.uuid4().hex}"
    remote = ray.remote(**task_resources(cpus_per_task, gpus_per_task))(run_unless_stopped)
    waiting = list(enumerate(tasks))[::-1]  # popped from the end: in task order
    limit = max_in_flight or len(tasks)
    pending: dict[Any, int] = {}

    def submit() -> None:
        while waiting and len(pending) < limit:
            index, task = waiting.pop()
            pending[remote.remote(function, task, flag_name)] = index

    results: list[Any] = [None] * len(tasks)
    total = sum(weights) if weights is not None else len(tasks)
    with tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True) as progress:
        try:
            submit()
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                results[index] = ray.get(done[0])
                progress.update(weights[index] if weights is not None else 1)
                submit()
        except ray.exceptions.RayTaskError as error:
            stop_and_drain(flag_name, pending, drain_timeout_s)
            raise task_exception(error) from None
        except BaseException:  # SIGTERM (SystemExit), Ctrl-C: stop the writers before cleaning up
            stop_and_drain(flag_name, pending, drain_timeout_s)
            raise
    return results


def task_exception(error: ray.exceptions.RayTaskError) -> Exception:
    """The task's own exception (it names the file at fault), not Ray's wrapper."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, Exception) else error


class PendingTask(Generic[Result]):
    """One function running as a Ray task while the driver does other work (`start_task`)."""

    def __init__(self, reference: ray.ObjectRef) -> None:
        self._reference = reference

    def result(self) -> Result:
        """Wait for the task; its own exception is re-raised, as `run_tasks` does."""
        try:
            return ray.get(self._reference)
        except ray.exceptions.RayTaskError as error:
            raise task_exception(error) from None

    def discard(self) -> None:
        """The driver goes on without the result (it is stopping on another error): an error the task has
        already ended with is taken here, so Ray does not print it, traceback and all, as an unhandled
        error beside the driver's own one-line message."""
        done, _ = ray.wait([self._reference], timeout=0)
        if done:
            with suppress(Exception):
                ray.get(done[0])


def start_task(
    function: Callable[[Task], Result], task: Task, cpus_per_task: float = 1, gpus_per_task: float = 0
) -> PendingTask[Result]:
    """Start `function(task)` as one Ray task (`cpus_per_task` CPUs, `gpus_per_task` GPUs) and return at once.

    Meant for work that writes nothing (its result comes back to the driver, which writes it), so an
    interrupted driver has nothing to drain: the task ends with the runtime.
    """
    init_ray()
    remote = ray.remote(**task_resources(cpus_per_task, gpus_per_task))(function)
    return PendingTask(remote.remote(task))


def stop_and_drain(flag_name: str, pending: dict, timeout_s: float = DRAIN_TIMEOUT_SECONDS) -> None:
    """Raise the stop flag, then wait until every pending task has returned (or `timeout_s` passes)."""
    flag = StopFlag.options(name=flag_name).remote()
    if pending:
        ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
    ray.kill(flag)
