"""The one training loop: a step returns named losses; the loop sums, checks, steps, logs, checkpoints.

Everything distributed or tracked is injected as callbacks, so the loop itself is plain PyTorch and
the same for warmup, oracle and every adaptation row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from pipeline.errors import InputError
from pipeline.training.optim import apply_poly_schedule

StepFunction = Callable[[int], Mapping[str, torch.Tensor]]


class NonFiniteLossError(InputError, FloatingPointError):
    """A loss went NaN/inf: training stops; the last checkpoint is the last good state."""

    def __init__(self, step: int, losses: Mapping[str, float]) -> None:
        terms = ", ".join(f"{name}={value:.4g}" for name, value in losses.items())
        super().__init__(
            f"non-finite loss at step {step}: {terms} (the last good checkpoint is kept; "
            "a lower learning rate or loss weight usually helps)"
        )
        self.step, self.losses = step, dict(losses)

    def __reduce__(self) -> tuple:  # survive pickling across Ray processes
        return (type(self), (self.step, self.losses))


@dataclass
class LoopHooks:
    """Side effects of the loop; each receives the 1-based number of completed steps."""

    log: Callable[[int, dict[str, float]], None] = lambda step, metrics: None
    checkpoint: Callable[[int, dict[str, float]], None] = lambda step, metrics: None
    log_every: int = 25
    checkpoint_every: int = 500


class ProgressLine:
    """A periodic log line from rank 0: step, losses, lr, seconds per step and time left."""

    def __init__(self, name: str, total_steps: int, start_step: int, active: bool) -> None:
        self.name, self.total, self.active = name, total_steps, active
        self.last_step, self.last_time = start_step, time.perf_counter()

    def show(self, step: int, metrics: dict[str, float]) -> None:
        if not self.active:
            return
        now = time.perf_counter()
        per_step = (now - self.last_time) / max(step - self.last_step, 1)
        self.last_step, self.last_time = step, now
        values = " ".join(f"{key}={value:.4g}" for key, value in metrics.items())
        left = per_step * (self.total - step)
        timing = f"{per_step:.2f} s/step, ~{left / 60:.1f} min left"
        print(f"[{self.name}] step {step}/{self.total} {values} | {timing}", flush=True)


@dataclass
class LoopResult:
    steps: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    data_wait_seconds: float = 0.0


def train(
    step_losses: StepFunction,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    poly_power: float,
    start_step: int = 0,
    hooks: LoopHooks | None = None,
) -> LoopResult:
    """Run steps `start_step … total_steps − 1`.

    `step_losses(step)` fetches its batch, runs the model and returns named scalar losses; their sum is
    minimised. Logged metrics are the detached losses, `loss` (their sum) and `lr`.
    """
    hooks = hooks or LoopHooks()
    started = time.perf_counter()
    metrics: dict[str, float] = {}
    for step in range(start_step, total_steps):
        lr = apply_poly_schedule(optimizer, step, total_steps, poly_power)
        losses = step_losses(step)
        total = sum(losses.values())
        values = {name: float(value.detach()) for name, value in losses.items()}
        if not math.isfinite(float(total.detach())):
            raise NonFiniteLossError(step, values)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        done = step + 1
        metrics = {**values, "loss": float(total.detach()), "lr": lr}
        if done % hooks.log_every == 0 or done == total_steps:
            hooks.log(done, metrics)
        if done % hooks.checkpoint_every == 0 or done == total_steps:
            hooks.checkpoint(done, metrics)
    return LoopResult(total_steps - start_step, metrics, time.perf_counter() - started)
