"""An exponential moving average of a model's weights, for validation and the written checkpoint.

After update ``t`` (1, 2, ...) every floating-point parameter and buffer is
``ema = d_t * ema + (1 - d_t) * weight`` with ``d_t = decay * (1 - exp(-t / warmup))``: the
average starts close to the live weights and lengthens its memory to ``1 / (1 - decay)`` steps
as training settles. Non-float buffers are copied.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


def ema_decay(updates: int, decay: float, warmup: float) -> float:
    """The decay applied at update number ``updates`` (counted from 1)."""
    return decay * (1.0 - math.exp(-updates / warmup))


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float, warmup: float) -> None:
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = ema_decay(self.updates, self.decay, self.warmup)
        live = model.state_dict()
        for name, average in self.module.state_dict().items():
            value = live[name].detach()
            if average.is_floating_point():
                average.lerp_(value.to(average.dtype), 1.0 - d)
            else:
                average.copy_(value)

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Start the average again from ``model``'s weights (after they were changed outside training)."""
        self.module.load_state_dict(model.state_dict())
        self.updates = 0

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
