"""AdamW parameter groups and the warm-up + cosine learning-rate schedule shared by all stages."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

NO_DECAY_MARKERS = ("bias", "norm", "LayerNorm", "temperature", "type_embedding", "class_embedding")


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, lr_new: float | None = None,
    pretrained_prefixes: Iterable[str] = (),
) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms and temperatures; ``lr_new`` for modules outside
    ``pretrained_prefixes`` when given."""
    prefixes = tuple(pretrained_prefixes)
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and not any(m in name for m in NO_DECAY_MARKERS)
        new = lr_new is not None and not name.startswith(prefixes)
        groups.setdefault((decay, new), []).append(p)
    return [
        {"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr": lr_new if new else lr}
        for (decay, new), ps in groups.items()
    ]


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float, min_lr: float):
    """LambdaLR: linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to ``min_lr``."""
    total = max(1, int(total_steps))
    warm = int(total * warmup_fraction)
    base = [g["lr"] for g in optimizer.param_groups]

    def factor(i: int, base_lr: float):
        def f(step: int) -> float:
            if step < warm:
                return (step + 1) / (warm + 1)
            progress = min(1.0, (step - warm) / max(1, total - warm))
            floor = min_lr / base_lr if base_lr > 0 else 0.0
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(i, b) for i, b in enumerate(base)])


def adamw(groups: list[dict], lr: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one kernel over all parameters) where the device has one."""
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
