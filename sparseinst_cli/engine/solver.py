"""AdamW with a backbone learning-rate factor, the warm-up + decay schedule (SPEC 2), and the
resolution of a recipe's batch-relative learning rate and epoch-based length into concrete steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..recipe import SolverSection


@dataclass(frozen=True)
class SolverResolution:
    """How the recipe's solver became the run's: what was scaled, and by how much."""

    lr: float  # the recipe's, for reference_batch_size
    reference_batch_size: int
    batch_size: int
    lr_scaling: str
    lr_factor: float
    schedule_factor: float  # step counts multiplied by this (1 unless scale_schedule)
    epochs: float | None
    steps_per_epoch: float
    resolved: SolverSection

    def summary(self) -> str:
        run = self.resolved
        parts = [f"lr {run.lr:.4g}"]
        if self.lr_factor != 1:
            parts[0] += (f" ({self.lr:.4g} for batch {self.reference_batch_size}, {self.lr_scaling} scaling "
                         f"to batch {self.batch_size})")
        length = f"{run.max_iter} steps"
        if self.epochs is not None:
            length += f" ({self.epochs:g} epochs of {self.steps_per_epoch:.4g} steps)"
        elif self.schedule_factor != 1:
            length += f" (scaled x{self.schedule_factor:.4g} with the batch)"
        parts.append(length)
        parts.append(f"warm-up {run.warmup_iters}")
        if run.schedule == "multistep":
            parts.append(f"lr x{run.lr_gamma:g} at {list(run.lr_steps)}")
        else:
            parts.append("cosine decay")
        return ", ".join(parts)


def lr_scale(batch_size: int, reference_batch_size: int, rule: str) -> float:
    """The factor on a learning rate tuned for ``reference_batch_size`` when training with ``batch_size``."""
    ratio = batch_size / reference_batch_size
    return {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[rule]


def resolve_solver(solver: SolverSection, dataset_size: int) -> SolverResolution:
    """The solver with the learning rate for the actual batch and every length in steps.

    The result needs no further resolution (batch = reference, no scaling, no epochs), so it can
    be stored with the run and read back by ``--resume`` unchanged.
    """
    lr_factor = lr_scale(solver.batch_size, solver.reference_batch_size, solver.lr_scaling)
    schedule_factor = solver.reference_batch_size / solver.batch_size if solver.scale_schedule else 1.0
    steps_per_epoch = dataset_size / solver.batch_size
    if solver.epochs is not None:
        max_iter = max(1, math.ceil(solver.epochs * steps_per_epoch))
        lr_steps = tuple(max(1, round(epoch * steps_per_epoch)) for epoch in solver.lr_step_epochs)
    else:
        max_iter = max(1, round(solver.max_iter * schedule_factor))
        lr_steps = tuple(max(1, round(step * schedule_factor)) for step in solver.lr_steps)
    resolved = solver.model_copy(update={
        "lr": solver.lr * lr_factor,
        "reference_batch_size": solver.batch_size,
        "lr_scaling": "none",
        "scale_schedule": False,
        "max_iter": max_iter,
        "epochs": None,
        "lr_steps": lr_steps,
        "lr_step_epochs": (),
        "warmup_iters": round(solver.warmup_iters * schedule_factor),
    })
    return SolverResolution(solver.lr, solver.reference_batch_size, solver.batch_size, solver.lr_scaling,
                            lr_factor, schedule_factor, solver.epochs, steps_per_epoch, resolved)


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
