"""A module-scoped torch thread count for test modules whose numbers or speed depend on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch


def module_torch_threads(count: int) -> Callable[[], Iterator[None]]:
    """An autouse fixture that runs its module's tests on `count` torch threads and restores the count after
    the module; assign it to a name in the test module (`_threads = module_torch_threads(1)`)."""

    @pytest.fixture(autouse=True, scope="module")
    def _threads() -> Iterator[None]:
        threads = torch.get_num_threads()
        torch.set_num_threads(count)
        yield
        torch.set_num_threads(threads)

    return _threads
