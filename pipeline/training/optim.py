"""SGD with a 10× head learning rate and the poly schedule, as DeepLabV2 and the official code train."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config import OptimConfig

BACKBONE_MODULES = ("backbone", "target_stem")


def backbone_parameter_ids(model: nn.Module) -> set[int]:
    """Ids of the parameters of every submodule named `backbone` or `target_stem`, at any depth.

    Found by module, not by a parameter-name prefix: wrappers prefix the names (DDP `module.`, the
    adaptation's two-domain wrapper `segmentor.`, torch.compile `_orig_mod.`), and a prefix test put
    every adaptation parameter in the head group, at 10× `adapt.lr` (fixed 2026-12-01).
    """
    ids: set[int] = set()
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in BACKBONE_MODULES:
            ids.update(id(parameter) for parameter in module.parameters())
    return ids


def parameter_groups(model: nn.Module, optim: OptimConfig) -> list[dict]:
    """Backbone parameters at lr, head parameters (ASPP classifier, projection) at lr × multiplier."""
    in_backbone = backbone_parameter_ids(model)
    backbone, head = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (backbone if id(parameter) in in_backbone else head).append(parameter)
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
