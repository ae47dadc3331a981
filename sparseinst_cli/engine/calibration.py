"""Data-dependent scale calibration of freshly initialized layers (LSUV, Mishkin & Matas 2016).

The SPEC's initializations keep each layer's output at the scale of its input, so the decoder
inherits whatever scale the backbone's features have. ImageNet backbones without a final norm
(EfficientNet-Lite's stages end in a linear projection) hand over features with a standard
deviation of 5-10 on real photos; the encoder's sums and the decoder's stacks carry that on, and
the mask logits, a dot product of two such paths, start with a standard deviation in the
hundreds. Every mask is then saturated at 0 or 1: the dice term sits at its maximum (no overlap,
no gradient through the sigmoid) and the pixel BCE at tens per pixel until training has shrunk
the scale again, which it does in spikes.

Calibration runs one batch through the model before the first step and rescales, in forward
order, each fresh convolution and linear layer so that its output has unit standard deviation,
then the mask-kernel head so that the mask logits have unit root mean square. Every rescaling multiplies a layer's weight
and bias by one positive number, so nothing else about the model changes: ReLUs commute with it,
and the prior-probability biases of the class, objectness and IAM layers are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from components import SparseInst

TARGET_STD = 1.0  # of each calibrated layer's output
TARGET_MASK_LOGIT_RMS = 1.0  # of the initial mask logits: |logit| ~ 1, no mask saturated
MIN_STD = 1e-6  # a layer whose output is (near) constant, e.g. a zero-initialized offset conv, is left alone
# Layers whose initial output has a meaning of its own: logits with a prior-probability bias.
PRIOR_LAYERS = ("decoder.iam.conv", "decoder.cls_score", "decoder.objectness")
MASK_KERNEL = "decoder.mask_kernel"
SCALABLE = (nn.Conv2d, nn.Linear, DeformConv2d)


@dataclass(frozen=True)
class Calibration:
    """The factor applied to each layer's weight and bias, by module name."""

    factors: dict[str, float]
    mask_logit_rms_before: float
    mask_logit_rms_after: float


def calibration_layers(model: SparseInst, fresh: Iterable[str]) -> list[str]:
    """The fresh encoder and decoder layers that calibration may rescale, by module name."""
    fresh = set(fresh)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, SCALABLE) or not name.startswith(("encoder.", "decoder.")):
            continue
        if name in PRIOR_LAYERS or name == MASK_KERNEL or name.endswith(".offset"):
            continue
        if _is_fresh(name, module, fresh):
            names.append(name)
    return names


@torch.no_grad()
def calibrate(model: SparseInst, images: Tensor, fresh: Iterable[str]) -> Calibration:
    """Rescale the fresh layers of ``model`` on ``images`` (B, 3, H, W), in place.

    ``fresh`` names the parameters that were initialized here rather than loaded; only layers
    all of whose parameters are fresh are touched, and the mask-kernel head only when it is.
    """
    fresh = set(fresh)
    modules = dict(model.named_modules())
    factors: dict[str, float] = {}

    def rescale(name: str):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
            std = float(output.float().std())
            if not std > MIN_STD:
                return None
            factor = TARGET_STD / std
            _scale(module, factor)
            factors[name] = factor
            return output * factor  # what the rescaled layer would give: later layers see it at once

        return hook

    was_training = model.training
    model.eval()
    before = _rms(model(images).masks)
    handles = [modules[name].register_forward_hook(rescale(name)) for name in calibration_layers(model, fresh)]
    try:
        current = _rms(model(images).masks)
    finally:
        for handle in handles:
            handle.remove()
    kernel = modules.get(MASK_KERNEL)
    if kernel is not None and _is_fresh(MASK_KERNEL, kernel, fresh) and current > MIN_STD:
        # The kernel head's bias is 0 at initialization, so scaling it scales the logits exactly.
        factors[MASK_KERNEL] = TARGET_MASK_LOGIT_RMS / current
        _scale(kernel, factors[MASK_KERNEL])
        current = _rms(model(images).masks)
    model.train(was_training)
    return Calibration(factors, before, current)


def _is_fresh(name: str, module: nn.Module, fresh: set[str]) -> bool:
    """Whether every parameter of the layer was initialized here rather than loaded."""
    return all(f"{name}.{param}" in fresh for param, _ in module.named_parameters(recurse=False))


def _rms(tensor: Tensor) -> float:
    return float(tensor.float().square().mean().sqrt())


def _scale(module: nn.Module, factor: float) -> None:
    module.weight.mul_(factor)
    if module.bias is not None:
        module.bias.mul_(factor)
