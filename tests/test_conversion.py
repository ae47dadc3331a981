"""Loading the authors' checkpoints and ImageNet ResNets: every value lands where it should and
the converted model computes what the authors' model computes."""

from __future__ import annotations

import math
import os
import pickle

import pytest
import torch
import torchvision
from safetensors import safe_open
from typer.testing import CliRunner

from components.pretrained import (
    OFFICIAL_DECODER_RULES,
    WeightsError,
    imagenet_resnet_to_native,
    official_to_native,
    read_state_dict,
    rename,
)
from sparseinst_cli.builder import build_model
from sparseinst_cli.checkpoint import load_model
from sparseinst_cli.cli.app import app
from sparseinst_cli.recipe import load_recipe
from sparseinst_cli.weights.conversion import BACKBONE_FORMAT, convert_checkpoint

from .official_reference import (
    official_forward,
    official_layout,
    random_official_state_dict,
)

# recipe -> how the authors' reference builds the same model
OFFICIAL_MODELS = {
    "r50_base": dict(arch="r50", dcn=False, iam="sigmoid"),
    "ablations/table4_softmax": dict(arch="r50", dcn=False, iam="softmax"),
    "r50_giam": dict(arch="r50", dcn=False, iam="group"),
    "r50_giam_softmax": dict(arch="r50", dcn=False, iam="group_softmax"),
    "r50vd_giam": dict(arch="r50vd", dcn=False, iam="group"),
    "r50vd_dcn_giam": dict(arch="r50vd", dcn=True, iam="group"),
    "r101_giam": dict(arch="r101", dcn=False, iam="group"),
}
TOLERANCE = dict(rtol=1e-4, atol=1e-4)


def official_state(recipe: str, seed: int = 0) -> dict[str, torch.Tensor]:
    spec = OFFICIAL_MODELS[recipe]
    return random_official_state_dict(official_layout(spec["arch"], dcn=spec["dcn"], iam=spec["iam"]), seed)


def test_r50_giam_layout_has_the_documented_size() -> None:
    layout = official_layout("r50", iam="group")
    values = {k: math.prod(s) for k, s in layout.items()}
    frozen_bn = {k for k in layout if f"{k.rsplit('.', 1)[0]}.running_mean" in layout}
    assert len(layout) == 317
    assert sum(v for k, v in values.items() if k not in frozen_bn) == 32_794_785
    state = build_model(load_recipe("r50_giam")).state_dict()
    assert sum(v.numel() for v in state.values()) == sum(values.values()) == 32_901_025


@pytest.mark.parametrize("recipe", sorted(OFFICIAL_MODELS))
def test_official_keys_map_one_to_one_onto_the_model(recipe: str) -> None:
    official = official_state(recipe)
    converted = official_to_native(official)
    model_keys = list(build_model(load_recipe(recipe)).state_dict())
    assert len(converted) == len(official) == len(model_keys)
    assert set(converted) == set(model_keys)
    # Distinct random tensors: finding each converted tensor's source identifies the mapping.
    source_of = {id(v): k for k, v in official.items()}
    mapping = {source_of[id(v)]: k for k, v in converted.items()}
    assert len(set(mapping.values())) == len(official)
    assert mapping["encoder.fusion.weight"] == "encoder.fusion.weight"
    assert mapping["decoder.mask_branch.projection.weight"] == "decoder.mask_projection.weight"
    assert mapping["decoder.inst_branch.inst_convs.6.bias"] == "decoder.inst_convs.6.bias"
    if OFFICIAL_MODELS[recipe]["arch"] == "r50vd":
        assert mapping["backbone.conv1.3.weight"] == "backbone.stem.conv2.weight"
        assert mapping["backbone.bn1.running_var"] == "backbone.stem.conv3.norm.running_var"
        assert mapping["backbone.layer3.0.downsample.1.weight"] == "backbone.res4.0.shortcut.weight"
        assert mapping["backbone.layer4.2.bn2.bias"] == "backbone.res5.2.conv2.norm.bias"
    if OFFICIAL_MODELS[recipe]["dcn"]:
        assert mapping["backbone.layer3.5.conv2_offset.weight"] == "backbone.res4.5.conv2_offset.weight"
        assert not any("res3" in k and "offset" in k for k in converted)


@pytest.mark.parametrize("recipe", sorted(OFFICIAL_MODELS))
def test_converted_model_computes_the_authors_outputs(recipe: str) -> None:
    official = official_state(recipe, seed=1)
    model = build_model(load_recipe(recipe))
    model.load_state_dict(official_to_native(official), strict=True)
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model.eval()(images)
        logits, objectness, masks = official_forward(official, images, **OFFICIAL_MODELS[recipe])
    assert ours.masks.shape == (2, 100, 16, 24)
    assert masks.std() > 1e-2 and logits.std() > 1e-3  # a non-degenerate comparison
    torch.testing.assert_close(ours.logits, logits, **TOLERANCE)
    torch.testing.assert_close(ours.objectness, objectness, **TOLERANCE)
    torch.testing.assert_close(ours.masks, masks, **TOLERANCE)


def test_dcn_offsets_change_the_output() -> None:
    """Guards the DCN parity test: with zero offsets a deformable conv is a plain conv."""
    official = official_state("r50vd_dcn_giam", seed=1)
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    zeroed = {k: torch.zeros_like(v) if "conv2_offset" in k else v for k, v in official.items()}
    with torch.no_grad():
        deformed = official_forward(official, images, arch="r50vd", dcn=True)[2]
        plain = official_forward(zeroed, images, arch="r50vd", dcn=True)[2]
    assert (deformed - plain).abs().max() > 1e-2


def test_convert_pth_writes_a_self_contained_checkpoint(tmp_path) -> None:
    official = official_state("r50_giam", seed=2)
    source = tmp_path / "sparse_inst_r50_giam_aug.pth"
    torch.save({"model": official, "iteration": 269999, "__author__": "detectron2"}, source)
    report = convert_checkpoint(source, tmp_path / "r50_giam.safetensors", load_recipe("r50_giam"))
    assert (report.layout, report.tensors, report.values) == ("official", 317, 32_901_025)

    model, checkpoint = load_model(report.output)
    assert checkpoint.recipe.model.iam.groups == 4
    assert checkpoint.categories[0]["name"] == "person" and len(checkpoint.categories) == 80
    state = model.state_dict()
    for key, value in official_to_native(official).items():
        assert torch.equal(state[key], value), key


def test_convert_pkl_reads_arrays_only(tmp_path) -> None:
    official = official_state("r50_base", seed=4)
    source = tmp_path / "model_final.pkl"
    with source.open("wb") as handle:
        pickle.dump({"model": {k: v.numpy() for k, v in official.items()}, "__author__": "d2"}, handle)
    report = convert_checkpoint(source, tmp_path / "out.safetensors", load_recipe("r50_base"))
    model, _ = load_model(report.output)
    torch.testing.assert_close(model.state_dict()["decoder.iam.conv.weight"],
                               official["decoder.inst_branch.iam_conv.weight"], rtol=0, atol=0)


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_checkpoints_that_run_code_are_refused(tmp_path, suffix: str) -> None:
    marker = tmp_path / "pwned"
    source = tmp_path / f"evil{suffix}"
    payload = {"model": {"decoder.inst_branch.x": _RunsCode(str(marker))}}
    if suffix == ".pkl":
        source.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, source)
    with pytest.raises(WeightsError, match="refusing to unpickle posix.system|holds Python objects besides tensors "
                                           r"\(posix.system\)"):
        read_state_dict(source)
    assert not marker.exists()


def test_unreadable_pth_files_are_named_for_what_they_are(tmp_path) -> None:
    """One line each, never torch's advice to load with weights_only=False (which would run code)."""
    text, garbage, truncated = tmp_path / "notes.pth", tmp_path / "noise.pth", tmp_path / "cut.pth"
    text.write_text("hello, these are notes\n")
    garbage.write_bytes(bytes(range(256)) * 64)
    torch.save({"model": {"a": torch.ones(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    for path, reason in ((text, "not a PyTorch checkpoint"), (garbage, "not a PyTorch checkpoint"),
                         (truncated, "a truncated or corrupt PyTorch checkpoint")):
        with pytest.raises(WeightsError) as error:
            read_state_dict(path)
        message = str(error.value)
        assert message.startswith(f"{path}: {reason}") and "weights_only" not in message and "\n" not in message


def test_strictness_lists_every_problem(tmp_path) -> None:
    official = official_state("r50_giam")
    del official["decoder.inst_branch.fc.weight"]
    official["decoder.inst_branch.extra.weight"] = torch.zeros(3)
    source = tmp_path / "broken.pth"
    torch.save({"model": official}, source)
    output = tmp_path / "out.safetensors"
    with pytest.raises(WeightsError) as error:
        convert_checkpoint(source, output, load_recipe("r50_giam"))
    message = str(error.value)
    assert "missing: decoder.iam.group_fc.weight" in message
    assert "unexpected: decoder.inst_branch.extra.weight" in message
    assert not output.exists()

    torch.save({"model": official_state("r50_giam")}, source)
    with pytest.raises(WeightsError, match=r"shape mismatch: decoder\.iam\.conv\.weight \(400, 64, 3, 3\) != "
                                           r"model \(100, 256, 3, 3\)"):
        convert_checkpoint(source, output, load_recipe("r50_base"))  # G-IAM weights, vanilla-IAM recipe
    assert not output.exists()


def _torchvision_resnet50(seed: int) -> torchvision.models.ResNet:
    torch.manual_seed(seed)
    net = torchvision.models.resnet50(weights=None)
    for module in net.modules():  # non-trivial frozen statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.2, 0.6)
            module.bias.data.normal_(0, 0.05)
    return net.eval()


def test_torchvision_resnet_weights_reproduce_torchvision_features(tmp_path) -> None:
    net = _torchvision_resnet50(seed=5)
    source = tmp_path / "resnet50-0676ba61.pth"
    torch.save(net.state_dict(), source)
    output = tmp_path / "r50_imagenet.safetensors"
    report = convert_checkpoint(source, output, load_recipe("r50_giam"))
    assert report.layout == "imagenet" and report.tensors == 265  # 320 minus fc and 53 BN counters
    with safe_open(str(output), "pt") as handle:
        assert handle.metadata()["format"] == BACKBONE_FORMAT

    model = build_model(load_recipe("r50_giam", [f"model.backbone.weights={output}"])).eval()
    images = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        c2 = net.layer1(x)
        c3 = net.layer2(c2)
        c4 = net.layer3(c3)
        expected = [c3, c4, net.layer4(c4)]
        ours = model.backbone(images)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_timm_resnet_d_weights_land_in_the_vd_backbone(tmp_path) -> None:
    official = official_state("r50vd_giam", seed=6)
    timm_state = {k.removeprefix("backbone."): v for k, v in official.items() if k.startswith("backbone.")}
    timm_state["fc.weight"], timm_state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    source = tmp_path / "resnet50d.pth"
    torch.save(timm_state, source)
    output = tmp_path / "r50vd_imagenet.safetensors"
    assert convert_checkpoint(source, output, load_recipe("r50vd_giam")).tensors == 275

    model = build_model(load_recipe("r50vd_giam", [f"model.backbone.weights={output}"]))
    state = model.state_dict()
    converted = official_to_native(official)
    for key in (k for k in converted if k.startswith("backbone.")):
        assert torch.equal(state[key], converted[key]), key


def test_imagenet_layout_errors_are_clear() -> None:
    with pytest.raises(WeightsError, match="not an ImageNet ResNet"):
        imagenet_resnet_to_native({"features.0.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match="two keys map onto"):
        rename({"decoder.inst_branch.fc.weight": torch.zeros(1), "decoder.iam.group_fc.weight": torch.zeros(1)},
               OFFICIAL_DECODER_RULES)


def test_convert_command(tmp_path) -> None:
    source = tmp_path / "sparse_inst_r50_base.pth"
    torch.save({"model": official_state("r50_base", seed=7)}, source)
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "r50_base.safetensors"), "-r", "r50_base"])
    assert result.exit_code == 0, result.output
    assert "(315 tensors, 31,690,613 values)" in " ".join(result.output.split())
    assert (tmp_path / "r50_base.safetensors").is_file()

    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "x.safetensors"), "-r", "r50_giam"])
    assert result.exit_code == 2
    assert "shape mismatch" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["convert", str(tmp_path / "nope.pth"), str(tmp_path / "x.safetensors"),
                                 "-r", "r50_base"])
    assert result.exit_code == 2 and "nope.pth: no such file" in result.output
