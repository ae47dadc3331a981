"""IAM semantics: normalization, the Group-IAM channel layout for any group count, softmax bias."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from components import build


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_sigmoid_maps_are_normalized_sigmoids(kernel_size: int) -> None:
    iam = build("iam", "sigmoid", in_channels=8, num_instances=5, kernel_size=kernel_size)
    x = torch.randn(2, 8, 6, 7)
    maps, features = iam(x)
    probs = iam.conv(x).sigmoid().flatten(2)
    expected = probs / probs.sum(-1, keepdim=True)
    torch.testing.assert_close(maps.flatten(3).squeeze(2), expected)
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(2, 5, 1))
    torch.testing.assert_close(features, expected @ x.flatten(2).transpose(1, 2))


def test_sigmoid_normalizer_is_clamped() -> None:
    iam = build("iam", "sigmoid", in_channels=4, num_instances=2)
    torch.nn.init.zeros_(iam.conv.weight)
    torch.nn.init.constant_(iam.conv.bias, -200.0)  # sigmoid underflows to 0 everywhere
    maps, features = iam(torch.randn(1, 4, 3, 3))
    assert torch.isfinite(maps).all() and torch.isfinite(features).all()
    assert maps.abs().max() == 0


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_group_iam_channel_layout(groups: int, activation: str) -> None:
    """Channel c of the IAM conv is group c // N of instance c % N; an instance's features are
    its G group features concatenated group-major, then Linear + ReLU."""
    dim, n = 16, 3
    iam = build("iam", "group", in_channels=dim, num_instances=n, groups=groups, activation=activation)
    assert iam.conv.weight.shape == (n * groups, dim // groups, 3, 3)
    x = torch.randn(2, dim, 5, 4)
    maps, features = iam(x)
    assert maps.shape == (2, n, groups, 5, 4) and features.shape == (2, n, groups * dim)

    logits = iam.conv(x).flatten(2)
    if activation == "softmax":
        channel_maps = F.softmax(logits + iam.softmax_bias, dim=-1)
    else:
        channel_maps = logits.sigmoid() / logits.sigmoid().sum(-1, keepdim=True)
    flat_x = x.flatten(2)
    for b in range(2):
        for i in range(n):
            parts = []
            for g in range(groups):
                c = g * n + i
                torch.testing.assert_close(maps[b, i, g].flatten(), channel_maps[b, c])
                parts.append(flat_x[b] @ channel_maps[b, c])
            expected = F.relu(iam.group_fc(torch.cat(parts)))
            torch.testing.assert_close(features[b, i], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [2, 4, 8])
def test_group_conv_sees_only_its_channel_slice(groups: int) -> None:
    dim, n = 16, 3
    iam = build("iam", "group", in_channels=dim, num_instances=n, groups=groups)
    x = torch.randn(1, dim, 4, 4)
    changed = x.clone()
    width = dim // groups
    changed[:, width : 2 * width] += 1.0  # only the input slice of group 1
    delta = (iam.conv(changed) - iam.conv(x)).abs().amax((0, 2, 3))
    moved = (delta > 0).nonzero().flatten().tolist()
    assert moved == list(range(n, 2 * n))  # exactly the channels of group 1


def test_group_count_must_divide_width() -> None:
    with pytest.raises(ValueError, match="must divide"):
        build("iam", "group", in_channels=10, num_instances=2, groups=4)


def test_softmax_bias() -> None:
    iam = build("iam", "softmax", in_channels=8, num_instances=4)
    assert iam.softmax_bias.shape == (1,) and iam.softmax_bias.item() == 1.0
    x = torch.randn(1, 8, 5, 5)
    maps, _ = iam(x)
    expected = F.softmax(iam.conv(x).flatten(2) + 1.0, dim=-1)  # (1, N, HW)
    torch.testing.assert_close(maps[:, :, 0].flatten(2), expected)
    # Softmax is shift-invariant: the bias changes nothing, and gets no gradient.
    with torch.no_grad():
        iam.softmax_bias.fill_(-3.0)
    shifted, _ = iam(x)
    torch.testing.assert_close(shifted, maps)
    shifted.sum().backward()
    assert abs(iam.softmax_bias.grad.item()) < 1e-4


def test_cross_attention_maps_are_attention_weights() -> None:
    iam = build("iam", "cross_attention", in_channels=16, num_instances=6, num_heads=4)
    x = torch.randn(2, 16, 3, 5)
    maps, features = iam(x)
    tokens = x.flatten(2).transpose(1, 2)
    queries = iam.queries.unsqueeze(0).expand(2, -1, -1)
    expected, weights = iam.attention(queries, tokens, tokens, need_weights=True, average_attn_weights=True)
    torch.testing.assert_close(features, expected)
    torch.testing.assert_close(maps.flatten(2), weights)
    assert iam.attention.num_heads == 4 and iam.queries.shape == (6, 16)
