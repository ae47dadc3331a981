"""Every registered component: output shapes at several input sizes (tiny ones and sizes that
are not multiples of 32 included) and a backward pass."""

from __future__ import annotations

import inspect
from functools import partial

import pytest
import torch
from torch import nn

from components import FAMILIES, SparseInst, build, registry
from components.backbones import Stem
from components.registry import WIRED_ARGUMENTS, ComponentError, wired_arguments
from sparseinst_cli.builder import build_model
from sparseinst_cli.recipe import validate_recipe

# Narrow parameters per component name; components without an entry use their defaults.
SMALL = {
    "backbone": {"stem_width": 8, "base_width": 8},
    "encoder": {"channels": 32},
    "decoder": {"inst_width": 32, "mask_width": 32, "kernel_dim": 16, "num_instances": 7},
}
# Backbones whose parameters differ from the ResNets'; the rest get SMALL["backbone"].
BACKBONE_PARAMS = {"efficientnet_lite0": {}}
RESNETS = [n for n in registry("backbone").names() if n not in BACKBONE_PARAMS]
SIZES = [(64, 64), (96, 128), (100, 75), (33, 47), (16, 16), (8, 8)]
NUM_CLASSES = 5


def small_model(backbone: str = "resnet50", encoder: str = "instance_context", iam: str = "group",
                **iam_params) -> SparseInst:
    """Built as a recipe is, so that the components are wired as the builder wires them."""
    model = {"num_classes": NUM_CLASSES, "backbone": {"name": backbone, **SMALL["backbone"]},
             "encoder": {"name": encoder, **SMALL["encoder"]}, "iam": {"name": iam, **iam_params},
             "decoder": {"name": "iam_decoder", **SMALL["decoder"]}}
    return build_model(validate_recipe({"model": model}))


def stride_size(size: int, stride: int) -> int:
    """Output size of the stride-2 steps of a ResNet (conv, then pool, then stages)."""
    for _ in range(stride.bit_length() - 1):
        size = (size + 1) // 2
    return size


@pytest.mark.parametrize(("family", "name"), [(f, n) for f in FAMILIES for n in registry(f).names()])
def test_wired_arguments_are_taken_and_not_in_the_recipe(family: str, name: str) -> None:
    """Every component takes its family's wired arguments (the builder passes them), and its
    recipe parameters leave them out."""
    factory = registry(family).get(name)
    assert WIRED_ARGUMENTS[family] <= set(inspect.signature(factory).parameters)
    assert not WIRED_ARGUMENTS[family] & set(registry(family).params_model(name).model_fields)


def test_wired_arguments_are_picked_from_what_is_known() -> None:
    known = {"in_channels": 8, "num_classes": 3, "num_instances": 4, "iam": None}
    assert wired_arguments("loss", known) == {"num_classes": 3}
    assert wired_arguments("backbone", known) == {}
    with pytest.raises(ComponentError, match="encoder: no value to pass for in_channels"):
        wired_arguments("encoder", {"num_classes": 3})


@pytest.mark.parametrize("name", registry("backbone").names())
@pytest.mark.parametrize("size", SIZES)
def test_backbone_shapes(name: str, size: tuple[int, int]) -> None:
    net = build("backbone", name, **BACKBONE_PARAMS.get(name, SMALL["backbone"])).eval()
    features = net(torch.randn(2, 3, *size))
    assert len(features) == 3
    for feature, channels, stride in zip(features, net.out_channels, (8, 16, 32)):
        assert feature.shape == (2, channels, stride_size(size[0], stride), stride_size(size[1], stride))
        assert torch.isfinite(feature).all()


@pytest.mark.parametrize("name", RESNETS)
def test_backbone_deformable_stages_and_freezing(name: str) -> None:
    net = build("backbone", name, deform_stages=(4, 5), freeze_at=2, **SMALL["backbone"])
    offsets = [n for n, _ in net.named_parameters() if "conv2_offset" in n]
    assert offsets and all(n.startswith(("res4.", "res5.")) for n in offsets)
    frozen = {n.split(".")[0] for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"stem", "res2"}
    # Zero-initialized offsets: the deformable net equals the plain one with the same weights.
    plain = build("backbone", name, **SMALL["backbone"]).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if "offset" not in k})
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(net.eval()(x), plain(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_resnet50_channels_and_parameter_count() -> None:
    net = build("backbone", "resnet50")
    assert net.out_channels == (512, 1024, 2048)
    # torchvision's resnet50 without its classifier has 23,508,032 parameters; 53,120 of them are
    # BN scales and shifts, which frozen BN keeps as buffers.
    assert sum(p.numel() for p in net.parameters()) == 23_508_032 - 53_120
    frozen_affine = sum(b.numel() for n, b in net.named_buffers() if n.endswith((".norm.weight", ".norm.bias")))
    assert frozen_affine == 53_120
    vd = build("backbone", "resnet50vd")
    assert [vd.stem.conv1.out_channels, vd.stem.conv2.out_channels, vd.stem.conv3.out_channels] == [32, 32, 64]
    assert isinstance(vd.res3[0].shortcut.pool, torch.nn.AvgPool2d)
    assert build("backbone", "resnet18").out_channels == (128, 256, 512)

@pytest.mark.parametrize("deep", [False, True])
def test_stem_pools_before_its_last_relu_with_the_same_values(deep: bool) -> None:
    stem = Stem(8, deep).eval()
    nn.init.normal_(stem.conv1.norm.bias)  # negative pre-activations, so that the ReLU matters
    x = torch.randn(2, 3, 37, 50)
    with torch.no_grad():
        y = x
        for conv in stem.children():
            y = torch.relu(conv(y))
        assert torch.equal(stem(x), torch.nn.functional.max_pool2d(y, 3, 2, 1))



@pytest.mark.parametrize("name", registry("encoder").names())
@pytest.mark.parametrize("size", SIZES)
def test_encoder_shapes(name: str, size: tuple[int, int]) -> None:
    in_channels = (16, 24, 40)
    encoder = build("encoder", name, in_channels=in_channels, **SMALL["encoder"])
    h3, w3 = stride_size(size[0], 8), stride_size(size[1], 8)
    features = [torch.randn(2, c, stride_size(size[0], s), stride_size(size[1], s))
                for c, s in zip(in_channels, (8, 16, 32))]
    out = encoder(features)
    assert out.shape == (2, encoder.out_channels, h3, w3)
    assert torch.isfinite(out).all()


def test_encoder_variants_differ_in_structure() -> None:
    names = {n: {k.split(".")[0] for k in build("encoder", n, in_channels=(8, 8, 8), channels=8).state_dict()}
             for n in ("fpn", "fpn_ppm", "instance_context")}
    assert names["fpn"] == {"fpn_laterals", "fpn_outputs"}
    assert names["fpn_ppm"] == {"fpn_laterals", "fpn_outputs", "ppm"}
    assert names["instance_context"] == {"fpn_laterals", "fpn_outputs", "ppm", "fusion"}


@pytest.mark.parametrize("name", registry("iam").names())
@pytest.mark.parametrize("size", [(12, 16), (1, 1), (5, 3)])
def test_iam_shapes(name: str, size: tuple[int, int]) -> None:
    iam = build("iam", name, in_channels=32, num_instances=6)
    maps, features = iam(torch.randn(2, 32, *size))
    assert maps.shape[:2] == (2, 6) and maps.shape[-2:] == size
    assert features.shape == (2, 6, iam.out_channels)
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(maps.shape[:3]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("iam", registry("iam").names())
@pytest.mark.parametrize("size", [(64, 96), (100, 75), (16, 16)])
def test_model_shapes_and_backward(iam: str, size: tuple[int, int]) -> None:
    model = small_model(iam=iam)
    out = model(torch.randn(2, 3, *size), return_maps=True)
    h8, w8 = stride_size(size[0], 8), stride_size(size[1], 8)
    n = SMALL["decoder"]["num_instances"]
    assert out.logits.shape == (2, n, NUM_CLASSES)
    assert out.objectness.shape == (2, n, 1)
    assert out.masks.shape == (2, n, 2 * h8, 2 * w8)
    assert out.maps is not None and out.maps.shape[:2] == (2, n) and out.maps.shape[-2:] == (h8, w8)
    loss = out.logits.sum() + out.objectness.sum() + out.masks.mean()
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    with_grad = [p for p in trainable if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(with_grad) == len(trainable)
    assert model(torch.randn(1, 3, 64, 64)).maps is None


def test_decoder_options() -> None:
    coord = build("decoder", "iam_decoder", in_channels=8, num_classes=2, iam=partial(build, "iam", "sigmoid"),
                  inst_width=8, mask_width=8, num_instances=3, inst_depth=6, mask_depth=2)
    convs = [m for m in coord.inst_convs if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and convs[0].in_channels == 10  # x, y in front of the features
    assert len([m for m in coord.mask_convs if isinstance(m, torch.nn.Conv2d)]) == 2
    plain = build("decoder", "iam_decoder", in_channels=8, num_classes=2, iam=partial(build, "iam", "sigmoid"),
                  coord_features=False, deformable_last=True, inst_width=8, mask_width=8)
    assert plain.inst_convs[0].in_channels == 8
    assert type(plain.inst_convs[-2]).__name__ == "OffsetDeformConv"
    out = plain(torch.randn(1, 8, 6, 5))
    assert out.masks.shape == (1, 100, 12, 10)


def test_official_initialization() -> None:
    decoder = build("decoder", "iam_decoder", in_channels=256, num_classes=80, iam=partial(build, "iam", "group"))
    prior = -torch.log(torch.tensor((1 - 0.01) / 0.01))
    torch.testing.assert_close(decoder.iam.conv.bias, prior.expand(400))
    torch.testing.assert_close(decoder.cls_score.bias, prior.expand(80))
    assert abs(decoder.iam.conv.weight.std().item() - 0.01) < 1e-3
    assert abs(decoder.cls_score.weight.std().item() - 0.01) < 1e-3
    assert decoder.mask_kernel.bias.abs().sum() == 0
    assert decoder.iam.conv.groups == 4 and decoder.iam.conv.weight.shape == (400, 64, 3, 3)
    assert decoder.iam.group_fc.weight.shape == (1024, 1024)


@pytest.mark.parametrize("recipe", ["r50_base", "r50_giam", "r50_giam_aug", "r50_giam_softmax", "r50_dcn_giam_aug",
                                    "r50vd_base", "r50vd_giam", "r50vd_giam_aug", "r50vd_dcn_giam",
                                    "r50vd_dcn_giam_aug", "r101_giam", "r101_dcn_giam"])
def test_resnet_recipes_train_what_the_official_configs_train(recipe: str) -> None:
    """Every official config sets FREEZE_AT: 0: the stem and res2 train too (their norms stay frozen)."""
    from sparseinst_cli.recipe import load_recipe

    backbone = build_model(load_recipe(recipe)).backbone
    frozen = [name for name, parameter in backbone.named_parameters() if not parameter.requires_grad]
    assert frozen == []
    stem_and_res2 = sum(p.numel() for n, p in backbone.named_parameters() if n.startswith(("stem.", "res2.")))
    assert stem_and_res2 > 0.2e6  # the 0.22 M weights a frozen res2 would leave untrained
