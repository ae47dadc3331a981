"""Registries: duplicates refused, unknown names listed, plugins through entry points."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pydantic import PositiveInt, ValidationError
from torch import nn

from components import build, registry
from components.registry import (
    ComponentError,
    Registry,
    UnknownComponentError,
    load_plugins,
)
from sparseinst_cli.builder import build_model
from sparseinst_cli.recipe import load_recipe


class TinyBackbone(nn.Module):
    """Three strided convs standing in for C3, C4, C5."""

    def __init__(self, width: PositiveInt = 8) -> None:
        super().__init__()
        self.out_channels = (width, 2 * width, 4 * width)
        self.c3 = nn.Conv2d(3, width, 3, stride=8, padding=1)
        self.c4 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.c5 = nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.c3(x)
        c4 = self.c4(c3)
        return [c3, c4, self.c5(c4)]


def fake_entry_point(name: str, target: object) -> SimpleNamespace:
    def load() -> object:
        if isinstance(target, Exception):
            raise target
        return target

    return SimpleNamespace(name=name, load=load)


@pytest.fixture
def plugin_registry(monkeypatch: pytest.MonkeyPatch):
    """Registers fake plugins and removes them afterwards."""
    added: list[tuple[str, str]] = []

    def install(*entries: SimpleNamespace) -> list[str]:
        def entry_points(group: str) -> list[SimpleNamespace]:
            assert group == "sparseinst.components"
            return list(entries)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = load_plugins(entry_points, force=True)
        for name in loaded:
            family, _, component = name.partition(".")
            added.append((family, component))
        install.warnings = [str(w.message) for w in caught]
        return loaded

    yield install
    for family, name in added:
        reg = registry(family)
        reg._factories.pop(name, None)
        reg._params_models.pop(name, None)


def test_duplicate_names_are_refused() -> None:
    reg = Registry("backbone")
    reg.register("x")(TinyBackbone)
    with pytest.raises(ComponentError, match="already registered"):
        reg.register("x")(TinyBackbone)


def test_unknown_name_lists_known() -> None:
    with pytest.raises(UnknownComponentError) as info:
        build("iam", "sigmoidd", in_channels=8, num_instances=2)
    message = str(info.value)
    assert "did you mean 'sigmoid'" in message
    assert "cross_attention, group, sigmoid, softmax" in message


def test_build_validates_parameters() -> None:
    with pytest.raises(ValidationError, match="groups"):
        build("iam", "group", in_channels=8, num_instances=2, groups=0)
    with pytest.raises(ValidationError, match="unknown key 'group'"):
        build("iam", "group", in_channels=8, num_instances=2, group=2)


def test_untyped_component_is_refused() -> None:
    def untyped(width=3):  # noqa: ANN001, ANN202
        return nn.Identity()

    with pytest.raises(ComponentError, match="needs a type annotation"):
        Registry("backbone").register("untyped")(untyped)


def test_plugin_backbone_is_validated_and_usable(plugin_registry) -> None:
    loaded = plugin_registry(
        fake_entry_point("backbone.tiny_test_net", TinyBackbone),
        fake_entry_point("backbone.broken_test_net", ImportError("no module named nowhere")),
        fake_entry_point("badname", TinyBackbone),
    )
    assert loaded == ["backbone.tiny_test_net"]
    assert any("broken_test_net" in w and "nowhere" in w for w in plugin_registry.warnings)
    assert any("'badname'" in w and "FAMILY.NAME" in w for w in plugin_registry.warnings)
    assert "tiny_test_net" in registry("backbone").names()
    recipe = load_recipe("r50_giam", ["model.backbone.name=tiny_test_net", "model.backbone.width=4",
                                      "model.encoder.channels=16", "model.decoder.inst_width=16",
                                      "model.decoder.mask_width=16"])
    assert recipe.model.backbone.width == 4
    model = build_model(recipe)
    assert model.backbone.out_channels == (4, 8, 16)
    out = model(torch.randn(1, 3, 64, 64))
    assert out.masks.shape == (1, 100, 16, 16)
    with pytest.raises(Exception, match="Input should be greater than 0"):
        load_recipe("r50_giam", ["model.backbone.name=tiny_test_net", "model.backbone.width=0"])


def _plugin_example() -> str:
    """The plugin example of the design page (docs/design/index.md), which must run as written."""
    page = (Path(__file__).parents[1] / "docs" / "design" / "index.md").read_text()
    match = re.search(r"```python\n# my_package/iam.py\n(.*?)```", page, re.DOTALL)
    assert match, "the design page lost its plugin example"
    return match.group(1)


def test_plugin_example_works(plugin_registry) -> None:
    namespace: dict = {}
    exec(compile(_plugin_example(), "docs/design/index.md", "exec"), namespace)  # noqa: S102 - our own docs
    assert plugin_registry(fake_entry_point("iam.tempered_softmax", namespace["TemperedSoftmaxIAM"])) == [
        "iam.tempered_softmax"
    ]
    recipe = load_recipe("r50_giam", ["model.iam.name=tempered_softmax", "model.iam.temperature=1.5"])
    assert recipe.model.iam.temperature == 1.5
    model = build_model(recipe).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), return_maps=True)
    assert out.maps.shape == (1, 100, 1, 8, 8)
    torch.testing.assert_close(out.maps.sum((-1, -2)), torch.ones(1, 100, 1))
    with pytest.raises(Exception, match="temperature"):
        load_recipe("r50_giam", ["model.iam.name=tempered_softmax", "model.iam.temperature=-1"])
