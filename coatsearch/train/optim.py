"""AdamW with decay only on weights, and the warm-up + cosine learning-rate schedule.

The optimiser is PyTorch's fused AdamW where the parameters' device has the kernel (CPU
and CUDA): one kernel per step instead of a dozen tensor operations per parameter, about
4x faster a step on the CPU (0.6 ms against 2.5 ms for a 1.2M-parameter C-C-T-T), with the
same update up to float rounding."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Matrices and kernels decay; biases, norm scales and relative-bias tables do not
    (decaying a bias table pulls attention toward uniform, which is no regulariser)."""
    decay: list[nn.Parameter] = []
    keep: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (keep if param.ndim <= 1 or "rel_bias" in name else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier at step ``s``: linear from 1/warmup to 1, then cosine down to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, total_steps: int, warmup_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    groups = param_groups(model, weight_decay)
    try:
        optimizer = torch.optim.AdamW(groups, lr=lr, fused=True)
    except RuntimeError:  # no fused kernel for this device or dtype
        optimizer = torch.optim.AdamW(groups, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps))
    return optimizer, schedule
