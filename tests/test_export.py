"""ONNX export: the onnxruntime model reproduces the PyTorch model, at the export size and others."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from components.encoders import adaptive_average_pool
from sparseinst_cli.checkpoint import save_checkpoint
from sparseinst_cli.cli.app import app
from sparseinst_cli.data.coco import decode_rle
from sparseinst_cli.data.images import write_image
from sparseinst_cli.deploy.onnx_export import export_onnx
from sparseinst_cli.errors import ExportError
from sparseinst_cli.inference.onnx_runtime import OnnxModel
from sparseinst_cli.inference.predictor import Predictor

from .conftest import SMALL_MODEL, randomize_frozen_norms, shapes_image

# Tolerances: onnxruntime and PyTorch order float sums differently.
RAW_RTOL = 2e-4  # of each output's largest magnitude; onnxruntime and oneDNN sum convolutions in different
# orders: up to 1.2e-4 apart on a 2-core AMD EPYC, under 1e-4 on Intel Xeons
SCORE_ATOL = 1e-5
MASK_AGREEMENT = 0.9999  # share of mask pixels that must agree (others sit within noise of the threshold)
EXPORT_SIZE = (96, 128)


@pytest.mark.parametrize("height, width", [(1, 1), (5, 7), (6, 6), (13, 20), (20, 27)])
def test_adaptive_average_pool_matches_pytorch(height: int, width: int) -> None:
    x = torch.randn(2, 3, height, width)
    for bins in (1, 2, 3, 6):
        torch.testing.assert_close(adaptive_average_pool(x, bins), F.adaptive_avg_pool2d(x, bins))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Predictor, Path, Path]:
    """A small R-50 G-IAM with non-trivial frozen norms, its checkpoint and a dynamic ONNX export."""
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    predictor = Predictor.from_recipe(
        "r50_giam", overrides=[*SMALL_MODEL, "input.min_size_test=96", "input.max_size_test=128",
                               'model.class_names=["disc", "box", "tri"]'], seed=4)
    randomize_frozen_norms(predictor.model)
    weights = save_checkpoint(folder / "model.safetensors", predictor.model, predictor.recipe, predictor.categories)
    return predictor, weights, export_onnx(weights, folder / "model.onnx", dynamic=True, size=EXPORT_SIZE)


def assert_raw_close(expected, actual) -> None:
    for a, b in zip(expected[:3], actual[:3]):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=RAW_RTOL, atol=RAW_RTOL * float(a.abs().max()))


@pytest.mark.parametrize("shape", [(1, 3, *EXPORT_SIZE), (2, 3, 160, 96), (1, 3, 224, 320), (3, 3, 32, 64)])
def test_onnx_outputs_equal_pytorch_at_any_size(exported, shape) -> None:
    """Other sizes than the export's: the pyramid pooling sees other grids (e.g. 7x10 at 224x320)."""
    predictor, _, onnx_path = exported
    images = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.inference_mode():
        expected = predictor.model(images)
    assert_raw_close(expected, OnnxModel(onnx_path)(images))


def test_onnx_predictions_equal_pytorch_on_real_images(exported) -> None:
    predictor, _, onnx_path = exported
    onnx_predictor = Predictor.from_onnx(onnx_path)
    assert onnx_predictor.class_names == ["disc", "box", "tri"]
    assert onnx_predictor.recipe.dump() == predictor.recipe.dump()
    images = [shapes_image(90, 120, seed=1), shapes_image(200, 150, seed=2)]  # pads to 96x128, then 128x96
    for expected, actual in zip(predictor(images), onnx_predictor(images)):
        assert len(expected) == len(actual) > 0
        torch.testing.assert_close(actual.scores, expected.scores, rtol=1e-4, atol=SCORE_ATOL)
        assert torch.equal(actual.labels, expected.labels)
        assert (actual.masks == expected.masks).float().mean() >= MASK_AGREEMENT


def test_onnx_metadata_and_refusals(exported, tmp_path: Path) -> None:
    _, weights, onnx_path = exported
    with pytest.raises(ExportError, match="no activation-map output"):
        OnnxModel(onnx_path)(torch.zeros(1, 3, 32, 32), return_maps=True)
    with pytest.raises(ExportError, match="no such ONNX file"):
        OnnxModel(tmp_path / "missing.onnx")
    not_onnx = tmp_path / "bad.onnx"
    not_onnx.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="not a loadable ONNX model"):
        OnnxModel(not_onnx)
    with pytest.raises(ExportError, match="multiples of 32"):
        export_onnx(weights, tmp_path / "odd.onnx", size=(100, 128))
    from sparseinst_cli.errors import RecipeError

    with pytest.raises(RecipeError, match="network is fixed"):
        Predictor.from_onnx(onnx_path, overrides=["model.iam.groups=2"])
    assert Predictor.from_onnx(onnx_path, overrides=["inference.conf=0.5"]).recipe.inference.conf == 0.5
    with pytest.warns(FutureWarning, match="inference.conf"):  # the former name still works, for one release
        assert Predictor.from_onnx(onnx_path, overrides=["inference.score_threshold=0.6"]).recipe.inference.conf == 0.6


def test_static_export_and_the_commands(exported, tmp_path: Path) -> None:
    predictor, weights, onnx_path = exported
    runner = CliRunner()
    static = tmp_path / "static.onnx"
    run = runner.invoke(app, ["export", "onnx", "--weights", str(weights), "--out", str(static), "--size", "64x96"])
    assert run.exit_code == 0, run.output
    exported_bytes = static.read_bytes()
    again = runner.invoke(app, ["export", "onnx", "--weights", str(weights), "--out", str(static), "--size", "32x32"])
    assert again.exit_code == 2 and f"{static} already exists; nothing written (--overwrite" in again.output
    assert static.read_bytes() == exported_bytes  # the earlier export is kept
    images = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        assert_raw_close(predictor.model(images), OnnxModel(static)(images))

    picture = tmp_path / "a.png"
    write_image(picture, shapes_image(90, 120, seed=1))
    outputs = {}
    for backend, source in (("torch", weights), ("onnxruntime", onnx_path)):
        out = tmp_path / backend
        run = runner.invoke(app, ["predict", str(picture), "--weights", str(source), "--backend", backend,
                                  "--out", str(out), "--no-overlays"])
        assert run.exit_code == 0, run.output
        outputs[backend] = json.loads((out / "results.json").read_text())
    assert len(outputs["torch"]) == len(outputs["onnxruntime"]) > 0
    for a, b in zip(outputs["torch"], outputs["onnxruntime"]):
        assert a["category_id"] == b["category_id"] and a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert (decode_rle(a["segmentation"]) == decode_rle(b["segmentation"])).mean() >= MASK_AGREEMENT

    wrong = runner.invoke(app, ["predict", str(picture), "--weights", str(onnx_path)])
    assert wrong.exit_code == 2 and "--backend onnxruntime" in wrong.output
    timing = runner.invoke(app, ["time", "--weights", str(onnx_path), "--backend", "onnxruntime", "--sizes", "64",
                                 "--runs", "2", "--warmup", "1", "--out", str(tmp_path / "time")])
    assert timing.exit_code == 0, timing.output
    record = json.loads((tmp_path / "time" / "timing.json").read_text())["timings"][0]
    assert record["name"] == "model (onnxruntime)" and record["end_to_end"]["median_ms"] > 0
    assert np.isfinite(record["fps"])
