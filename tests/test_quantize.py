"""int8 quantization: calibrated on the given folder only, the IAM convolution kept in float, the
recipe and categories carried over, errors named. (How close int8 stays to fp32 on a trained
model is measured by benchmarks/int8.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch
from typer.testing import CliRunner

from sparseinst_cli.checkpoint import save_checkpoint
from sparseinst_cli.cli.app import app
from sparseinst_cli.deploy.quantize import METADATA_QUANTIZATION, quantize_model
from sparseinst_cli.errors import ExportError
from sparseinst_cli.inference.predictor import Predictor

from .conftest import SMALL_MODEL, shapes_image


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("int8")
    predictor = Predictor.from_recipe("r50_giam", overrides=[*SMALL_MODEL, "input.min_size_test=64",
                                                             "input.max_size_test=96"], seed=2)
    return save_checkpoint(folder / "model.safetensors", predictor.model, predictor.recipe, predictor.categories)


def test_quantized_model_reads_only_its_calibration_folder(weights: Path, tmp_path: Path) -> None:
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for index in range(3):
        cv2.imwrite(str(calibration / f"{index}.png"), shapes_image(60, 80, seed=index)[..., ::-1])
    (calibration / "notes.txt").write_text("not an image")
    cv2.imwrite(str(tmp_path / "beside.png"), shapes_image(60, 80, seed=9))  # next to the folder, not in it

    report = quantize_model(weights, tmp_path / "model.int8.onnx", calibration, max_images=2)
    assert [Path(p).name for p in report.calibration] == ["0.png", "1.png"]  # sorted, at most max_images
    assert report.quantized_nodes > 20 and report.float_nodes == 1  # the IAM convolution stays float
    int8 = Predictor.from_onnx(tmp_path / "model.int8.onnx")
    metadata = int8.model.session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata[METADATA_QUANTIZATION])["calibration_images"] == 2
    float_model = Predictor.from_checkpoint(weights)
    assert int8.categories == float_model.categories and int8.recipe.dump() == float_model.recipe.dump()
    outputs = int8.forward(int8.preprocess([shapes_image(60, 80)]))
    assert outputs.masks.shape == (1, 10, 16, 24) and torch.isfinite(outputs.logits).all()


def test_calibration_errors_are_named(weights: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="empty: no calibration images"):
        quantize_model(weights, tmp_path / "x.onnx", tmp_path / "empty")
    with pytest.raises(Exception, match=r"\.onnx"):
        quantize_model(weights, tmp_path / "x.txt", tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "b.png").write_bytes(b"not a png")
    result = CliRunner().invoke(app, ["export", "int8", "--weights", str(weights), "--calibration",
                                      str(tmp_path / "bad"), "--out", str(tmp_path / "y.onnx")])
    assert result.exit_code == 2 and "none of the calibration images could be read" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "y.onnx").exists()
