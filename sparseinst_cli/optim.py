"""AdamW with a backbone learning-rate factor, and the warm-up + decay schedule (SPEC 2)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .recipe import SolverSection


def build_optimizer(model: nn.Module, solver: SolverSection) -> torch.optim.AdamW:
    """Trainable parameters in two groups: the backbone's at ``lr * backbone_lr_factor``."""
    backbone, rest = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (backbone if name.startswith("backbone.") else rest).append(parameter)
    groups = [{"params": rest, "lr": solver.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": solver.lr * solver.backbone_lr_factor})
    return torch.optim.AdamW(groups, lr=solver.lr, weight_decay=solver.weight_decay)


def lr_factor(step: int, solver: SolverSection) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Linear warm-up from ``warmup_factor`` over ``warmup_iters`` steps, multiplied by the decay:
    ``lr_gamma`` per milestone passed (``multistep``) or a half cosine to 0 (``cosine``).
    """
    if solver.schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * min(step, solver.max_iter) / solver.max_iter))
    else:
        decay = solver.lr_gamma ** sum(step >= milestone for milestone in solver.lr_steps)
    if step < solver.warmup_iters:
        alpha = step / solver.warmup_iters
        return decay * (solver.warmup_factor * (1 - alpha) + alpha)
    return decay


def build_scheduler(optimizer: torch.optim.Optimizer, solver: SolverSection) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, solver))
