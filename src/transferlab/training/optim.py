"""Optimizers, parameter groups and learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UserError

SCHEDULES = ("linear", "cosine", "constant")


def param_groups(module: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """Decay matrices; leave biases, LayerNorm and other 1-D parameters undecayed (BERT's recipe)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if lr is not None:
        for g in groups:
            g["lr"] = lr
    return [g for g in groups if g["params"]]


def build_optimizer(module: nn.Module, lr: float, weight_decay: float = 0.01, betas=(0.9, 0.999), eps: float = 1e-8,
                    name: str = "adamw") -> torch.optim.Optimizer:
    groups = param_groups(module, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    raise UserError(f"unknown optimizer '{name}'; choose adamw, adam or sgd.")


def lr_lambda(schedule: str, total_steps: int, warmup_steps: int):
    """Multiplier of the base LR at each step: linear warm-up, then linear decay to 0, cosine to 0, or constant."""
    if schedule not in SCHEDULES:
        raise UserError(f"unknown --schedule '{schedule}'; choose one of {', '.join(SCHEDULES)}.")
    total_steps = max(1, total_steps)

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup: float):
    """``warmup`` below 1 is a fraction of ``total_steps``, otherwise a number of steps."""
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(schedule, total_steps, warmup_steps))
