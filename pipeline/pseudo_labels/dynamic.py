"""Dynamic pseudo labels of DASS (Lee et al., ECCV 2022, Sec. 3.3): non-parametric label transfer from
source prototypes to target pixels, with calibration of the class-wise domain bias.

Memory of prototypes (exponential moving averages over training, λ the momentum):

    μ_S(c) ← λ μ_S(c) + (1 − λ) ρ_S(c),      μ_T(c) ← λ μ_T(c) + (1 − λ) ρ_T(c)

Calibration (domain bias of class c) and calibrated source prototypes:

    ξ(c) = μ_T(c) − μ_S(c),      ρ_{S→T}(c) = ρ_S(c) + ξ(c)

Dynamic labels: with c' = argmax_c s(f_T(p), ρ_{S→T}(c)),

    y_D(p, c) = 1  if s(f_T(p), ρ_{S→T}(c)) > 𝒯 and c = c',  else 0.

Nothing here carries gradients: the memory stores detached prototypes and the labels are targets.
"""

from __future__ import annotations

import math

import torch

from pipeline.constants import IGNORE_INDEX
from pipeline.losses.contrastive import pixel_prototype_similarity


class PrototypeMemory:
    """EMA memory μ_S, μ_T [C, D] of source and target prototypes, and the bias ξ = μ_T − μ_S.

    `init` says where μ starts; it has no default, so a caller states it (the pipeline passes params.yaml's
    `adapt.memory_init`, "zero"). "first": a class's first observation initialises μ(c) = ρ(c), so ξ has
    full strength from a class's second step. "zero": μ starts at 0 and every observation averages in,
    so μ(c) = (1 − λᵗ)·(a weighted mean of ρ) after t observations and ξ grows gradually. Afterwards
    μ(c) ← λ μ(c) + (1 − λ) ρ(c), only for the classes present in that update; the others keep their μ.
    `seen_source` / `seen_target` [C] bool record which classes were ever observed.

    Device: with `device=None` the memory is created on the CPU and moves, once, to the device of the
    first update's inputs; with an explicit `device` (or after `.to(device)`) it stays there and inputs
    are moved to it. `state_dict` / `load_state_dict` round-trip it exactly.

    In distributed training, update it from the prototypes of the global batch (all-reduced sums and
    counts) so it is identical on every worker.
    """

    STATE_KEYS = ("mu_source", "mu_target", "seen_source", "seen_target")

    def __init__(
        self,
        num_classes: int,
        dim: int,
        momentum: float,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        init: str,
    ) -> None:
        if init not in ("first", "zero"):
            raise ValueError(f"prototype memory init must be 'first' or 'zero', got {init!r}")
        if num_classes < 1 or dim < 1:
            raise ValueError(f"num_classes and dim must be ≥ 1, got {num_classes}, {dim}")
        if not (isinstance(momentum, int | float) and 0 <= momentum < 1):
            raise ValueError(f"prototype EMA momentum λ must be in [0, 1), got {momentum!r}")
        self.num_classes = num_classes
        self.dim = dim
        self.momentum = float(momentum)
        self.init = init
        self._device_fixed = device is not None
        target = torch.device(device) if device is not None else torch.device("cpu")
        self.mu_source = torch.zeros(num_classes, dim, dtype=dtype, device=target)
        self.mu_target = torch.zeros(num_classes, dim, dtype=dtype, device=target)
        self.seen_source = torch.zeros(num_classes, dtype=torch.bool, device=target)
        self.seen_target = torch.zeros(num_classes, dtype=torch.bool, device=target)

    @property
    def device(self) -> torch.device:
        return self.mu_source.device

    def to(self, device: torch.device | str) -> PrototypeMemory:
        """Move the memory to `device` (in place) and keep it there; returns self."""
        for key in self.STATE_KEYS:
            setattr(self, key, getattr(self, key).to(device))
        self._device_fixed = True
        return self

    def _ema(
        self, memory: torch.Tensor, seen: torch.Tensor, prototypes: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if prototypes.shape != memory.shape or present.shape != seen.shape or present.dtype != torch.bool:
            raise ValueError(
                f"expected prototypes {tuple(memory.shape)} and bool present {tuple(seen.shape)}, got "
                f"{tuple(prototypes.shape)} and {present.dtype} {tuple(present.shape)}"
            )
        prototypes = prototypes.detach().to(device=memory.device, dtype=memory.dtype)
        present = present.to(memory.device)
        averaged = self.momentum * memory + (1 - self.momentum) * prototypes
        updated = torch.where(present.unsqueeze(1), averaged, memory)
        if self.init == "first":
            updated = torch.where((present & ~seen).unsqueeze(1), prototypes, updated)  # first observation
        return updated, seen | present

    @torch.no_grad()
    def update(
        self,
        source_prototypes: torch.Tensor,
        source_present: torch.Tensor,
        target_prototypes: torch.Tensor,
        target_present: torch.Tensor,
    ) -> None:
        """Fold one step's prototypes ρ_S, ρ_T [C, D] (with present [C] bool) into μ_S, μ_T."""
        if not self._device_fixed:
            self.to(source_prototypes.device)
        self.mu_source, self.seen_source = self._ema(
            self.mu_source, self.seen_source, source_prototypes, source_present
        )
        self.mu_target, self.seen_target = self._ema(
            self.mu_target, self.seen_target, target_prototypes, target_present
        )

    def bias(self) -> torch.Tensor:
        """ξ = μ_T − μ_S [C, D]; zero rows for classes not yet observed on both sides."""
        both = (self.seen_source & self.seen_target).unsqueeze(1)
        return torch.where(both, self.mu_target - self.mu_source, torch.zeros_like(self.mu_source))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of mu_source, mu_target [C, D] and seen_source, seen_target [C]."""
        return {key: getattr(self, key).detach().clone() for key in self.STATE_KEYS}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a `state_dict` exactly (values copied onto this memory's device and dtype)."""
        if set(state) != set(self.STATE_KEYS):
            raise ValueError(f"PrototypeMemory state must have keys {self.STATE_KEYS}, got {sorted(state)}")
        for key in self.STATE_KEYS:
            current = getattr(self, key)
            value = torch.as_tensor(state[key])
            if value.shape != current.shape:
                raise ValueError(
                    f"PrototypeMemory state {key!r} has shape {tuple(value.shape)}, expected "
                    f"{tuple(current.shape)} (num_classes={self.num_classes}, dim={self.dim})"
                )
            setattr(self, key, value.detach().to(device=current.device, dtype=current.dtype).clone())


def _check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, int | float) and math.isfinite(threshold) and -1 <= threshold <= 1):
        raise ValueError(
            f"dynamic pseudo-label threshold 𝒯 is a cosine similarity in [-1, 1], got {threshold!r}"
        )


@torch.no_grad()
def best_prototype_match(
    features: torch.Tensor,
    source_prototypes: torch.Tensor,
    present: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best calibrated prototype of every target pixel: max_c and argmax_c of s(f_T(p), ρ_S(c) + ξ(c)).

    Args:
        features: [N, D, h, w] target embedding f_T; source_prototypes: [C, D] ρ_S; present: [C] bool
            (only these classes compete); bias: [C, D] ξ, or None for ξ = 0 (no calibration).

    Returns:
        similarity [N, h, w] (compute dtype ≥ float32; −inf where no class is present) and class
        [N, h, w] int64 (ignore_index where no class is present).
    """
    num_classes = source_prototypes.shape[0]
    if present.shape != (num_classes,) or present.dtype != torch.bool:
        raise ValueError(f"present must be bool [{num_classes}], got {present.dtype} {tuple(present.shape)}")
    prototypes = source_prototypes.detach()
    if bias is not None:
        if bias.shape != prototypes.shape:
            raise ValueError(f"bias {tuple(bias.shape)} must match prototypes {tuple(prototypes.shape)}")
        prototypes = prototypes + bias.detach().to(prototypes.device)  # ρ_{S→T} = ρ_S + ξ
    similarity = pixel_prototype_similarity(features.detach(), prototypes)  # [N, C, h, w]
    absent = ~present.to(similarity.device).view(1, num_classes, 1, 1)
    best, classes = similarity.masked_fill(absent, float("-inf")).max(dim=1)
    classes = torch.where(torch.isneginf(best), torch.full_like(classes, ignore_index), classes)
    return best, classes


@torch.no_grad()
def best_prototype_similarity(
    features: torch.Tensor,
    source_prototypes: torch.Tensor,
    present: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """max_c s(f_T(p), ρ_{S→T}(c)) over present classes, [N, h, w]; −inf where none is present.

    Log its distribution to choose 𝒯 (filter with `torch.isfinite`).
    """
    return best_prototype_match(features, source_prototypes, present, bias)[0]


@torch.no_grad()
def dynamic_pseudo_labels(
    features: torch.Tensor,
    source_prototypes: torch.Tensor,
    present: torch.Tensor,
    bias: torch.Tensor | None,
    threshold: float,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Dynamic pseudo labels y_D (Sec. 3.3): c' = argmax over present c of s(f_T(p), ρ_S(c) + ξ(c)),
    kept where that similarity is strictly greater than 𝒯.

    Args:
        features: [N, D, h, w] target embedding f_T; source_prototypes: [C, D] ρ_S; present: [C] bool;
        bias: [C, D] ξ (`PrototypeMemory.bias()`), or None for no calibration; threshold: 𝒯 in [-1, 1].

    Returns:
        labels [N, h, w] int64: c' where s > 𝒯, else ignore_index (all ignore_index when no class is
        present). No gradient. 𝒯 is compared in the similarity's dtype (float32 for float32 features),
        as torch compares a tensor with a Python scalar.
    """
    best, classes = best_prototype_match(features, source_prototypes, present, bias, ignore_index)
    return labels_above_threshold(best, classes, threshold, ignore_index)


def labels_above_threshold(
    best: torch.Tensor, classes: torch.Tensor, threshold: float, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """y_D from a `best_prototype_match`: the best class where its cosine is strictly above 𝒯."""
    _check_threshold(threshold)
    return torch.where(best > threshold, classes, torch.full_like(classes, ignore_index))
