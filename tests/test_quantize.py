"""int8 quantization: calibrated on the given folder only, the first convolution kept in float
(the G-IAM's grouped one quantized), no pooling left in uint8, the recipe and categories carried
over, errors named; on the trained demo model int8 and bf16 give fp32's instances within stated
tolerances."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from sparseinst_cli.cli.app import app
from sparseinst_cli.deploy.onnx_export import export_onnx
from sparseinst_cli.deploy.quantize import METADATA_QUANTIZATION, quantize_model
from sparseinst_cli.errors import ExportError
from sparseinst_cli.inference.predictor import Predictor, int8_sums_saturate

from .conftest import SMALL_MODEL, random_checkpoint, shapes_image


@pytest.fixture(scope="module")
def float_onnx(tmp_path_factory) -> Path:
    """A small random checkpoint's float ONNX export, made once: quantize_model takes either, and
    the export from a checkpoint inside it is tested on the trained demo model below."""
    folder = tmp_path_factory.mktemp("int8")
    checkpoint = random_checkpoint(folder / "model.safetensors", "r50_giam",
                                   [*SMALL_MODEL, "input.min_size_test=64", "input.max_size_test=96"], seed=2)
    return export_onnx(checkpoint, folder / "model.onnx", dynamic=True)


def test_quantized_model_reads_only_its_calibration_folder(float_onnx: Path, tmp_path: Path) -> None:
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for index in range(3):
        cv2.imwrite(str(calibration / f"{index}.png"), shapes_image(60, 80, seed=index)[..., ::-1])
    (calibration / "notes.txt").write_text("not an image")
    cv2.imwrite(str(tmp_path / "beside.png"), shapes_image(60, 80, seed=9))  # next to the folder, not in it

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    report = quantize_model(float_onnx, tmp_path / "model.int8.onnx", calibration, max_images=2)
    assert (root.handlers, root.level) == (handlers, level)  # no library left a handler printing INFO and DEBUG
    assert [Path(p).name for p in report.calibration] == ["0.png", "1.png"]  # sorted, at most max_images
    assert report.quantized_nodes > 20 and report.float_nodes == 1  # the first convolution stays float
    graph = onnx.load(str(tmp_path / "model.int8.onnx")).graph
    consumers = {name: node.op_type for node in graph.node for name in node.input}
    pooled = [consumers[n.output[0]] for n in graph.node if n.op_type == "MaxPool"]
    # A MaxPool feeding a QuantizeLinear makes onnxruntime pool in uint8 NCHW (20 ms of r50_giam's 187)
    assert pooled == ["Relu"]
    int8 = Predictor.from_onnx(tmp_path / "model.int8.onnx")
    metadata = int8.model.session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata[METADATA_QUANTIZATION])["calibration_images"] == 2
    float_model = Predictor.from_onnx(float_onnx)
    assert int8.categories == float_model.categories and int8.recipe.dump() == float_model.recipe.dump()
    outputs = int8.forward(int8.preprocess([shapes_image(60, 80)]))
    assert outputs.masks.shape == (1, 10, 16, 24) and torch.isfinite(outputs.logits).all()


@pytest.mark.parametrize(("flags", "expected"), [("avx2 fma", True), ("avx2 avx512f avx512_vnni", False),
                                                ("avx2 avx_vnni", False), ("avx2 amx_int8", False), ("neon", False)])
def test_int8_weights_keep_to_7_bits_where_int8_sums_saturate(float_onnx: Path, tmp_path: Path, monkeypatch,
                                                              flags: str, expected: bool) -> None:
    from sparseinst_cli.inference import predictor as predictor_module

    monkeypatch.setattr(predictor_module, "cpu_info", lambda: {"flags": flags})
    assert int8_sums_saturate() is expected
    if flags != "avx2 fma":
        return  # one export is enough to see the choice reach the model
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    cv2.imwrite(str(calibration / "a.png"), shapes_image(60, 80)[..., ::-1])
    report = quantize_model(float_onnx, tmp_path / "auto.int8.onnx", calibration)
    metadata = Predictor.from_onnx(tmp_path / "auto.int8.onnx").model.session.get_modelmeta().custom_metadata_map
    assert report.reduce_range and json.loads(metadata[METADATA_QUANTIZATION])["reduce_range"] is True
    forced = quantize_model(float_onnx, tmp_path / "full.int8.onnx", calibration, reduce_range=False)
    assert not forced.reduce_range


def test_calibration_errors_are_named(float_onnx: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="empty: no calibration images"):
        quantize_model(float_onnx, tmp_path / "x.onnx", tmp_path / "empty")
    with pytest.raises(Exception, match=r"\.onnx"):
        quantize_model(float_onnx, tmp_path / "x.txt", tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "b.png").write_bytes(b"not a png")
    result = CliRunner().invoke(app, ["export", "int8", "--weights", str(float_onnx), "--calibration",
                                      str(tmp_path / "bad"), "--out", str(tmp_path / "y.onnx")])
    assert result.exit_code == 2 and "none of the calibration images could be read" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "y.onnx").exists()


REPOSITORY = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPOSITORY / "runs" / "demo" / "model.safetensors"
DEMO_DATA = REPOSITORY / "data" / "demo"
CONFIDENT = 0.3  # fp32 instances at least this sure are the ones compared
# Measured on 40 validation images (AMD EPYC Zen 4): int8 mask IoU >= 0.62 each, median 0.96, score
# differences median 0.013; bf16 IoU >= 0.80, median 0.99, scores 0.005; 2 of 112 labels differ
# (shapes the model is unsure of), the same two in both. A demo model whose training rounded
# differently (AP 27.2 instead of 33.7, same code and CPU) had 53 confident instances, of which int8
# relabelled 3 (94.3%). Another (AP 32.5, Zen 5): int8 IoU >= 0.49, median 0.96, scores 0.017, no
# label changed (with extreme-value calibration and only the convolutions in int8: IoU >= 0.31).
# The bounds leave room for other CPUs' kernels and weaker demo runs.
TOLERANCES = {"int8": {"min_iou": 0.5, "median_iou": 0.93, "median_score": 0.03},
              "bf16": {"min_iou": 0.7, "median_iou": 0.97, "median_score": 0.015}}
# x86 CPUs with AVX2 but no VNNI sum uint8 x int8 products in 16 bits. Before the export kept the
# weights to 7 bits there (reduce_range), a 2-core AMD EPYC Zen 3 gave a median score difference of
# 0.046; the bound there keeps that measurement as its ceiling until one with 7-bit weights is made.
if int8_sums_saturate():
    TOLERANCES["int8"]["median_score"] = 0.05
SAME_LABEL = 0.9
# Every instance the fp32 model is sure of keeps its mask; of those just above CONFIDENT a few may
# not: on the demo model trained with polygons drawn at the training size (Zen 4), int8 matched a
# 0.34 "triangle" with a square at IoU 0.14, one of 59 instances, all others >= 0.50 (median 0.96).
SURE = 0.45
BORDERLINE_SHARE = 0.05


def agreement(reference: Predictor, other: Predictor, images: list[Path]) -> dict[str, list[float]]:
    """For each confident reference instance: the best mask IoU among the other's instances, the
    score difference to that instance, and whether its label is the same."""
    found: dict[str, list[float]] = {"iou": [], "score": [], "same_label": [], "reference_score": []}
    for path in images:
        expected, actual = reference([path], conf=0.0)[0], other([path], conf=0.0)[0]
        for index in (expected.scores >= CONFIDENT).nonzero().flatten().tolist():
            mask = expected.masks[index]
            ious = (actual.masks & mask).flatten(1).sum(1) / (actual.masks | mask).flatten(1).sum(1).clamp(min=1)
            best = int(ious.argmax())
            found["iou"].append(float(ious[best]))
            found["score"].append(abs(float(expected.scores[index] - actual.scores[best])))
            found["same_label"].append(float(expected.labels[index] == actual.labels[best]))
            found["reference_score"].append(float(expected.scores[index]))
    return found


@pytest.mark.skipif(not (DEMO_MODEL.exists() and (DEMO_DATA / "val").is_dir()),
                    reason="needs the trained demo model and data: run the README's quick start first")
def test_int8_and_bf16_give_the_fp32_instances_of_the_trained_demo_model(tmp_path: Path) -> None:
    quantize_model(DEMO_MODEL, tmp_path / "demo.int8.onnx", DEMO_DATA / "train", max_images=16)
    reference = Predictor.from_checkpoint(DEMO_MODEL)
    variants = {"int8": Predictor.from_onnx(tmp_path / "demo.int8.onnx"),
                "bf16": Predictor.from_checkpoint(DEMO_MODEL).optimize("bf16")}
    images = sorted((DEMO_DATA / "val").glob("*.png"))[:20]
    for name, predictor in variants.items():
        found, bounds = agreement(reference, predictor, images), TOLERANCES[name]
        assert len(found["iou"]) >= 30, "the demo model should be sure of most shapes"
        ious, reference_scores = np.array(found["iou"]), np.array(found["reference_score"])
        assert ious[reference_scores >= SURE].min() >= bounds["min_iou"], name
        assert np.mean(ious < bounds["min_iou"]) <= BORDERLINE_SHARE, name
        assert np.median(found["iou"]) >= bounds["median_iou"], name
        assert np.median(found["score"]) <= bounds["median_score"], name
        assert np.mean(found["same_label"]) >= SAME_LABEL, name
