"""SGD with a 10× head learning rate and the poly schedule, as DeepLabV2 and the official code train."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config import OptimConfig

BACKBONE_PREFIXES = ("backbone.", "target_stem.")


def parameter_groups(model: nn.Module, optim: OptimConfig) -> list[dict]:
    """Backbone parameters at lr, head parameters (ASPP classifier, projection) at lr × multiplier."""
    backbone, head = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (backbone if name.removeprefix("module.").startswith(BACKBONE_PREFIXES) else head).append(parameter)
    return [
        {"params": backbone, "lr": optim.lr, "initial_lr": optim.lr},
        {
            "params": head,
            "lr": optim.lr * optim.head_lr_multiplier,
            "initial_lr": optim.lr * optim.head_lr_multiplier,
        },
    ]


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        parameter_groups(model, optim), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
    )


def poly_factor(step: int, total_steps: int, power: float) -> float:
    """(1 − step/total)^power: the DeepLabV2 poly schedule's multiplier at `step` (0-based)."""
    return (1.0 - min(step, total_steps) / total_steps) ** power


def apply_poly_schedule(optimizer: torch.optim.Optimizer, step: int, total_steps: int, power: float) -> float:
    """Set every group's lr for `step`; returns the backbone lr (for logging)."""
    factor = poly_factor(step, total_steps, power)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    return optimizer.param_groups[0]["lr"]
