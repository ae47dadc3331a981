"""The command line through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sparseinst_cli.checkpoint import read_checkpoint, save_checkpoint
from sparseinst_cli.cli.app import app
from sparseinst_cli.data.coco import decode_rle
from sparseinst_cli.data.images import read_image, write_image
from sparseinst_cli.inference.predictor import Predictor
from sparseinst_cli.recipe import load_recipe

from .conftest import SMALL_MODEL, shapes_image

runner = CliRunner()
SMALL_SETS = [arg for item in SMALL_MODEL for arg in ("--set", item)]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("predict", "convert", "components", "recipes"):
        assert command in result.output


@pytest.mark.parametrize("command, shown", [
    (["train"], ["recipe's [data] section", "[default: runs/RECIPE]"]),
    (["data", "split"], ["[default: beside the input]"]),
    (["curves"], ["[default: RUN_DIR/curves.png]"]),
])
def test_help_shows_square_brackets_as_written(command: list[str], shown: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250"})  # rich would read "[data]" as a style tag
    assert result.exit_code == 0
    for text in shown:
        assert text in result.output


def test_components_lists_every_family() -> None:
    result = runner.invoke(app, ["components"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("resnet50", "resnet50vd", "resnet101", "instance_context", "fpn_ppm", "group", "cross_attention",
                 "softmax", "iam_decoder", "groups: int > 0 = 4"):
        assert name in result.output
    assert invoke("components", "nope").exit_code == 2


def test_recipes_list_and_show() -> None:
    listing = invoke("recipes")
    assert listing.exit_code == 0 and "r50vd_dcn_giam_aug" in listing.output and "ablations/table4_group2" in listing.output
    shown = invoke("recipes", "r50_giam", "--set", "model.iam.groups=8")
    assert shown.exit_code == 0
    assert json.loads(shown.output)["model"]["iam"]["groups"] == 8


def test_bad_recipe_exits_2_with_field_lines(tmp_path: Path) -> None:
    result = invoke("recipes", "r50_giam", "--set", "model.decoder.num_instnces=5")
    assert result.exit_code == 2
    assert "model.decoder: unknown key 'num_instnces' (did you mean 'num_instances'?)" in result.output
    assert "Traceback" not in result.output


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    write_image(folder / "a.png", shapes_image(90, 120))
    write_image(folder / "nested" / "b.jpg", shapes_image(64, 48, seed=2))
    return folder


def test_predict_with_recipe_writes_overlays_and_coco_results(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("predict", str(images), "--recipe", "r50_giam", *SMALL_SETS, "--out", str(out), "--conf", "0")
    assert result.exit_code == 0, result.output
    overlay = read_image(out / "a.png")
    assert overlay.shape == (90, 120, 3)
    assert read_image(out / "b.png").shape == (64, 48, 3)
    results = json.loads((out / "results.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert [img["file_name"].endswith(("a.png", "b.jpg")) for img in summary["images"]] == [True, True]
    counts = [img["instances"] for img in summary["images"]]
    assert len(results) == sum(counts) and all(0 < c <= 10 for c in counts)
    first = results[0]
    assert set(first) == {"image_id", "file_name", "category_id", "category_name", "segmentation", "score", "bbox",
                          "area", "iscrowd"}
    assert first["file_name"] == "a.png" and first["area"] > 0 and first["category_name"].startswith("class_")
    assert decode_rle(first["segmentation"]).shape == (90, 120)
    assert first["category_id"] in (1, 2, 3)


def test_predict_reports_bad_inputs_and_continues(images: Path, tmp_path: Path) -> None:
    (images / "corrupt.png").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    result = invoke("predict", str(images), str(tmp_path / "missing.jpg"), "--recipe", "r50_giam", *SMALL_SETS,
                    "--out", str(out))
    assert result.exit_code == 1
    assert "corrupt.png: not a readable image" in result.output
    assert "missing.jpg: no such file or folder" in result.output
    assert "Traceback" not in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 1 and len(summary["images"]) == 3
    assert (out / "a.png").is_file()


def test_predict_argument_errors(tmp_path: Path) -> None:
    assert invoke("predict", str(tmp_path)).exit_code == 2  # neither --weights nor --recipe
    result = invoke("predict", str(tmp_path / "x.png"), "--weights", str(tmp_path / "none.safetensors"))
    assert result.exit_code == 2 and "no such file" in result.output
    not_weights = tmp_path / "bad.safetensors"
    not_weights.write_bytes(b"garbage")
    image = tmp_path / "x.png"
    write_image(image, np.zeros((32, 32, 3), np.uint8))
    result = invoke("predict", str(image), "--weights", str(not_weights))
    assert result.exit_code == 2 and "not a safetensors checkpoint" in result.output
    assert invoke("predict", str(tmp_path / "empty")).exit_code == 2  # nothing to predict: refused first


def test_checkpoint_alone_is_enough_to_predict(images: Path, tmp_path: Path) -> None:
    recipe = load_recipe("r50_giam", SMALL_MODEL + ['model.class_names=["disc", "box", "tri"]'])
    predictor = Predictor.from_recipe(recipe, seed=3)
    weights = save_checkpoint(tmp_path / "model.safetensors", predictor.model, recipe, predictor.categories)
    checkpoint = read_checkpoint(weights)
    assert checkpoint.class_names == ["disc", "box", "tri"]
    assert checkpoint.recipe.dump() == recipe.dump()
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left nothing behind

    expected = predictor([read_image(images / "a.png")], conf=0.0)[0]
    assert len(expected) > 0
    out = tmp_path / "out"
    result = invoke("predict", str(images / "a.png"), "--weights", str(weights), "--out", str(out), "--conf", "0")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    np.testing.assert_allclose([r["score"] for r in results], expected.scores.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(decode_rle(results[0]["segmentation"]), expected.masks[0].numpy())
