"""Weight initializations used by the authors' release (named as in detectron2)."""

from __future__ import annotations

import math

from torch import nn

PRIOR_PROB = 0.01  # initial foreground probability of the IAM and class logits


def prior_bias(prior_prob: float = PRIOR_PROB) -> float:
    """Bias giving ``sigmoid(bias) == prior_prob``: -log((1 - pi) / pi)."""
    return -math.log((1 - prior_prob) / prior_prob)


def c2_xavier_fill(module: nn.Conv2d | nn.Linear) -> None:
    """Kaiming-uniform with a=1 (Caffe2's "xavier"), zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def c2_msra_fill(module: nn.Conv2d | nn.Linear) -> None:
    """Kaiming-normal, fan_out, ReLU gain (Caffe2's "msra"), zero bias."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def normal_fill(module: nn.Conv2d | nn.Linear, std: float, bias: float = 0.0) -> None:
    nn.init.normal_(module.weight, std=std)
    if module.bias is not None:
        nn.init.constant_(module.bias, bias)
