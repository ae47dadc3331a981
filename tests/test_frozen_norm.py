"""Training runs a convolution and its frozen batch norm as one convolution; evaluation keeps
them apart. Both must be the same function with the same gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from components.backbones import ConvNorm
from components.efficientnet import ConvNormAct
from components.frozen_norm import frozen_norm_affine


def _randomize_norm(module: nn.Module) -> None:
    norm = module.norm
    norm.weight.uniform_(0.5, 2.0)
    norm.bias.normal_()
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.1, 3.0)


def _outputs_and_weight_grads(module: nn.Module, x: torch.Tensor, training: bool, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    module.train(training)
    module.zero_grad()
    out = module(x, **kwargs)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    weight = module.weight if isinstance(module, nn.Conv2d) else module.conv.weight
    return out.detach(), weight.grad.clone()


def test_affine_is_the_norm() -> None:
    torch.manual_seed(0)
    module = ConvNorm(3, 8, 3)
    _randomize_norm(module)
    x = torch.randn(2, 8, 5, 7)
    scale, shift = frozen_norm_affine(module.norm)
    torch.testing.assert_close(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1), module.norm(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "make, kwargs",
    [
        (lambda: ConvNorm(6, 10, 3, stride=2), {}),
        (lambda: ConvNorm(6, 10, 1), {}),
        (lambda: ConvNormAct(6, 10, 1), {}),
        (lambda: ConvNormAct(10, 10, 5, stride=2, groups=10), {}),
        (lambda: ConvNormAct(6, 10, 3, activation=False), {}),
    ],
)
@torch.no_grad()
def test_training_and_evaluation_compute_the_same_function(make, kwargs) -> None:
    torch.manual_seed(1)
    module = make()
    _randomize_norm(module)
    in_channels = module.in_channels if isinstance(module, nn.Conv2d) else module.conv.in_channels
    x = torch.randn(2, in_channels, 13, 17) * 3
    norm_calls = []
    module.norm.register_forward_hook(lambda *_: norm_calls.append(module.training))
    with torch.enable_grad():
        train_out, train_grad = _outputs_and_weight_grads(module, x, training=True, **kwargs)
        eval_out, eval_grad = _outputs_and_weight_grads(module, x, training=False, **kwargs)
    assert train_out.shape == eval_out.shape
    assert (train_out - eval_out).abs().max() <= 1e-5 * eval_out.abs().max()
    assert (train_grad - eval_grad).abs().max() <= 1e-5 * eval_grad.abs().max()
    assert eval_grad.abs().max() > 0
    assert norm_calls == [False]  # training ran the one folded convolution, evaluation the norm


@torch.no_grad()
def test_deformable_convolution_folds_too() -> None:
    torch.manual_seed(2)
    module = ConvNorm(4, 6, 3)
    _randomize_norm(module)
    x = torch.randn(1, 4, 9, 11)
    offset = torch.randn(1, 18, 9, 11)
    with torch.enable_grad():
        train_out, train_grad = _outputs_and_weight_grads(module, x, training=True, offset=offset)
        eval_out, eval_grad = _outputs_and_weight_grads(module, x, training=False, offset=offset)
    assert (train_out - eval_out).abs().max() <= 1e-5 * eval_out.abs().max()
    assert (train_grad - eval_grad).abs().max() <= 1e-5 * eval_grad.abs().max()


@pytest.mark.parametrize("groups, trained_dtype", [(10, torch.float32), (1, torch.bfloat16)])
def test_cpu_autocast_trains_depthwise_convolutions_in_fp32(groups, trained_dtype) -> None:
    """bf16 depthwise backward is slow on CPU: under autocast those convolutions train in fp32
    (the same output and weight gradient as without autocast); dense ones stay in bf16; and a
    depthwise convolution that nothing trains (a frozen stage) runs its forward in bf16."""
    torch.manual_seed(3)
    module = ConvNormAct(10, 10, 5, stride=2, groups=groups)
    _randomize_norm(module)
    x = torch.randn(2, 10, 13, 17)
    plain_out, plain_grad = _outputs_and_weight_grads(module, x, training=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_out, autocast_grad = _outputs_and_weight_grads(module, x, training=True)
        module.conv.weight.requires_grad_(False)
        frozen_out = module(x)
    assert autocast_out.dtype == trained_dtype
    assert frozen_out.dtype == torch.bfloat16
    if trained_dtype == torch.float32:
        torch.testing.assert_close(autocast_out, plain_out, rtol=0, atol=0)
        torch.testing.assert_close(autocast_grad, plain_grad, rtol=0, atol=0)
    else:  # bf16 keeps 8 bits of mantissa
        assert (autocast_out.float() - plain_out).abs().max() > 0
        assert (autocast_out.float() - plain_out).abs().max() <= 0.02 * plain_out.abs().max()
