"""Fan a list of independent pieces of work out as Ray tasks, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import ray
from tqdm import tqdm

from pipeline.distributed.runtime import init_ray

Task = TypeVar("Task")
Result = TypeVar("Result")


def run_tasks(
    function: Callable[[Task], Result],
    tasks: Sequence[Task],
    description: str,
    unit: str = "task",
    weights: Sequence[int] | None = None,
) -> list[Result]:
    """Run `function(task)` for every task as a Ray task (one CPU each); results in task order.

    The first task to fail cancels the rest and re-raises that task's own exception. `weights`
    advance the progress bar per task (e.g. rows per shard) so the bar counts samples, not tasks.
    """
    init_ray()
    remote = ray.remote(num_cpus=1, max_retries=0)(function)
    pending = {remote.remote(task): index for index, task in enumerate(tasks)}
    results: list[Any] = [None] * len(tasks)
    total = sum(weights) if weights is not None else len(tasks)
    with tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True) as progress:
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                results[index] = ray.get(done[0])
                progress.update(weights[index] if weights is not None else 1)
        except ray.exceptions.RayTaskError as error:
            cancel_all(pending)
            # Re-raise the task's own exception (it names the file at fault), not Ray's wrapper.
            cause = getattr(error, "cause", None)
            raise (cause if isinstance(cause, Exception) else error) from None
        except BaseException:  # SIGTERM (SystemExit), Ctrl-C: stop the writers before cleaning up
            cancel_all(pending)
            raise
    return results


def cancel_all(pending: dict) -> None:
    """Cancel every pending task and let them end before the caller removes what they were writing."""
    for ref in pending:
        ray.cancel(ref, force=True)
    ray.wait(list(pending), num_returns=len(pending), timeout=30)
