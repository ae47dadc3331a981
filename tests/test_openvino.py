"""OpenVINO: the fp32 IR gives the PyTorch model's instances, the int8 IR by NNCF gives the
trained demo model's within stated tolerances, the export command writes whole files and refuses
bad input in one line, ``--backend auto`` picks the fastest agreeing backend and remembers it,
and ``time`` sets the backends side by side."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sparseinst_cli.cli.app import app
from sparseinst_cli.data.coco import decode_rle
from sparseinst_cli.data.images import write_image
from sparseinst_cli.defaults import Backend
from sparseinst_cli.deploy import backends
from sparseinst_cli.deploy.backends import (
    FP32_TOLERANCE,
    ModelSource,
    disagreement,
    model_variants,
)
from sparseinst_cli.deploy.onnx_export import export_onnx
from sparseinst_cli.deploy.openvino_export import METADATA_QUANTIZATION, export_openvino
from sparseinst_cli.errors import ExportError, SparseInstError
from sparseinst_cli.inference.openvino_runtime import metadata, read_model
from sparseinst_cli.inference.predictor import Predictor, int8_sums_saturate

from .conftest import SMALL_MODEL, RecordingProgress, random_checkpoint, shapes_image
from .test_export import assert_raw_close
from .test_quantize import (
    BORDERLINE_SHARE,
    DEMO_DATA,
    DEMO_MODEL,
    SAME_LABEL,
    SURE,
    agreement,
)

pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'sparseinst[openvino]'")

NAMES = ["disc", "box", "tri"]
# A ResNet-18 G-IAM with two-layer decoder stacks: every kind of layer, half the graph of a ResNet-50
# (the ONNX export, OpenVINO's compilation and NNCF's calibration take time per layer).
SMALL_GRAPH = [*SMALL_MODEL, "model.backbone.name=resnet18", "model.decoder.inst_depth=2",
               "model.decoder.mask_depth=2", "input.min_size_test=64", "input.max_size_test=96"]
# NNCF's int8 against the fp32 model, on the trained demo model's validation images. Measured on a
# 2-core AMD EPYC Zen 1 (AVX2, no VNNI: 7-bit weights) with a demo model trained for 1000 steps (mask
# AP 8.8; 32 confident instances in the 20 images): mask IoU >= 0.84 each, median 0.948; score
# differences median 0.021, at most 0.078; 1 of 32 labels changed. ONNX Runtime's int8 of the same
# model: IoU >= 0.83, median 0.933, scores median 0.043. The bounds are the ONNX Runtime int8 test's,
# which leave room for other CPUs' kernels and other demo runs.
INT8_TOLERANCE = {"min_iou": 0.5, "median_iou": 0.93, "median_score": 0.03}
DEMO_SIZE = (256, 256)  # every demo image's: a static export at this size takes a third of a dynamic one's time


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Iterator[Path]:
    """The cache folder for this module's tests (exports on the fly, ``auto``'s decisions)."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("home")
        patch.setenv("SPARSEINST_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def exported(home: Path, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A small G-IAM checkpoint with non-trivial frozen norms, the ONNX model the backends export
    from it on the fly (kept in the cache folder), and its fp32 IR."""
    folder = tmp_path_factory.mktemp("openvino")
    weights = random_checkpoint(folder / "model.safetensors", "r50_giam",
                                [*SMALL_GRAPH, f"model.class_names={json.dumps(NAMES)}"], seed=4, frozen_norms=True)
    onnx_path = backends.exported_onnx(weights)
    return weights, onnx_path, export_openvino(onnx_path, folder / "model.xml").output


def calibration_folder(root: Path, images: int = 3) -> Path:
    folder = root / "calibration"
    folder.mkdir()
    for index in range(images):
        cv2.imwrite(str(folder / f"{index}.png"), shapes_image(60, 80, seed=index)[..., ::-1])
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_the_fp32_ir_gives_the_pytorch_instances(exported) -> None:
    weights, _, xml = exported
    reference, predictor = Predictor.from_checkpoint(weights), Predictor.from_openvino(xml)
    assert predictor.class_names == NAMES and predictor.recipe.dump() == reference.recipe.dump()
    images = [shapes_image(60, 80, seed=1), shapes_image(100, 70, seed=2)]  # pads to 64x96, then 96x64
    batch = reference.preprocess(images)
    assert_raw_close(reference.forward(batch), predictor.forward(batch))
    for expected, actual in zip(reference(images, conf=0.0), predictor(images, conf=0.0)):
        assert len(expected) == len(actual) > 0 and torch.equal(expected.labels, actual.labels)
        assert disagreement(expected, actual, FP32_TOLERANCE, conf=0.0) is None
    moved = dataclasses.replace(actual, scores=actual.scores + 10 * FP32_TOLERANCE.max_score)
    assert disagreement(expected, moved, FP32_TOLERANCE, conf=0.0).startswith("missing instance")


def test_the_int8_ir_reads_only_its_calibration_folder(exported, tmp_path: Path) -> None:
    pytest.importorskip("nncf", reason="NNCF is not installed: pip install 'sparseinst[openvino]'")
    _, _, xml = exported
    out = tmp_path / "ir" / "model.int8.xml"
    report = export_openvino(xml, out, calibration=calibration_folder(tmp_path), max_images=2)
    assert [Path(p).name for p in report.calibration] == ["0.png", "1.png"]  # sorted, at most max_images
    assert report.reduce_range == int8_sums_saturate()
    assert report.quantized_layers > 20 and report.float_layers >= 1  # the first convolution among the float ones
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.int8.bin", "model.int8.xml"]  # nothing staged left
    record = json.loads(metadata(read_model(out), METADATA_QUANTIZATION))
    assert record["calibration_images"] == 2 and record["reduce_range"] == report.reduce_range
    int8 = Predictor.from_openvino(out)
    assert int8.class_names == NAMES
    outputs = int8.forward(int8.preprocess([shapes_image(60, 80)]))
    assert outputs.masks.shape == (1, 10, 16, 24) and torch.isfinite(outputs.logits).all()
    with pytest.raises(ExportError, match="already quantized"):
        export_openvino(out, tmp_path / "twice.xml", calibration=tmp_path / "calibration")


@pytest.mark.skipif(not (DEMO_MODEL.exists() and (DEMO_DATA / "val").is_dir()),
                    reason="needs the trained demo model and data: run the README's quick start first")
def test_the_int8_ir_gives_the_fp32_instances_of_the_trained_demo_model(tmp_path: Path) -> None:
    pytest.importorskip("nncf", reason="NNCF is not installed: pip install 'sparseinst[openvino]'")
    source = export_onnx(DEMO_MODEL, tmp_path / "demo.onnx", size=DEMO_SIZE)
    export_openvino(source, tmp_path / "demo.int8.xml", calibration=DEMO_DATA / "train", max_images=16)
    images = sorted((DEMO_DATA / "val").glob("*.png"))[:20]
    found = agreement(Predictor.from_checkpoint(DEMO_MODEL), Predictor.from_openvino(tmp_path / "demo.int8.xml"),
                      images)
    assert len(found["iou"]) >= 30, "the demo model should be sure of most shapes"
    ious, reference_scores = np.array(found["iou"]), np.array(found["reference_score"])
    assert ious[reference_scores >= SURE].min() >= INT8_TOLERANCE["min_iou"]
    assert np.mean(ious < INT8_TOLERANCE["min_iou"]) <= BORDERLINE_SHARE
    assert np.median(found["iou"]) >= INT8_TOLERANCE["median_iou"]
    assert np.median(found["score"]) <= INT8_TOLERANCE["median_score"]
    assert np.mean(found["same_label"]) >= SAME_LABEL


def test_the_export_command_writes_the_ir_and_refuses_bad_input(exported, tmp_path: Path) -> None:
    _, onnx_path, xml = exported
    runner = CliRunner()
    out = tmp_path / "cli" / "exported.xml"
    run = runner.invoke(app, ["export", "openvino", "--weights", str(onnx_path), "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "wrote" in run.output and out.is_file() and out.with_suffix(".bin").is_file()
    assert Predictor.from_openvino(out).class_names == NAMES

    missing = tmp_path / "missing"
    for args, message in ((["--int8"], "--int8 needs --calibration"),
                          (["--int8", "--calibration", str(missing)], "no such folder"),
                          (["--calibration", str(tmp_path)], "--calibration is for --int8"),
                          (["--out", str(tmp_path / "model.onnx")], "expected a .xml file")):
        refused = runner.invoke(app, ["export", "openvino", "--weights", str(onnx_path), *args])
        assert refused.exit_code == 2 and message in refused.output, refused.output
        assert "Traceback" not in refused.output and len(refused.output.strip().splitlines()) == 1
    itself = runner.invoke(app, ["export", "openvino", "--weights", str(xml), "--out", str(xml), "--overwrite"])
    assert itself.exit_code == 2 and "would be overwritten" in itself.output

    before = {path: path.read_bytes() for path in (out, out.with_suffix(".bin"))}
    out.with_suffix(".bin").write_bytes(b"an earlier export's weights")
    before[out.with_suffix(".bin")] = out.with_suffix(".bin").read_bytes()
    again = runner.invoke(app, ["export", "openvino", "--weights", str(onnx_path), "--out", str(out)])
    assert again.exit_code == 2 and f"{out}, {out.with_suffix('.bin')} already exist" in again.output
    assert "--overwrite" in again.output and len(again.output.strip().splitlines()) == 1
    assert {path: path.read_bytes() for path in before} == before
    replaced = runner.invoke(app, ["export", "openvino", "--weights", str(onnx_path), "--out", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert out.with_suffix(".bin").stat().st_size > 1000 and Predictor.from_openvino(out).class_names == NAMES


def test_files_openvino_cannot_read_are_refused_in_one_line(tmp_path: Path, capfd) -> None:
    picture = tmp_path / "a.png"
    write_image(picture, shapes_image(60, 80, seed=1))
    not_xml, wrong_root, no_weights, not_onnx = (tmp_path / name for name in
                                                 ("garbage.xml", "other.xml", "alone.xml", "garbage.onnx"))
    not_xml.write_text("garbage<")
    wrong_root.write_text('<?xml version="1.0"?><svg/>')
    wrong_root.with_suffix(".bin").write_bytes(b"\0")
    no_weights.write_text('<?xml version="1.0"?><net name="x" version="11"/>')
    not_onnx.write_bytes(b"garbage")
    capfd.readouterr()
    for path, message in ((not_xml, "not an OpenVINO IR (not valid XML"),
                          (wrong_root, "not an OpenVINO IR (its XML root is <svg>, not <net>)"),
                          (no_weights, "its weights alone.bin are missing"),
                          (not_onnx, "not an ONNX model")):
        refused = CliRunner().invoke(app, ["predict", str(picture), "--weights", str(path), "--backend", "openvino",
                                           "--out", str(tmp_path / "out")])
        assert refused.exit_code == 2 and f"{path}: {message}" in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1
        # Nothing from OpenVINO's own readers on the process's stderr either.
        assert capfd.readouterr().err == ""
    assert not (tmp_path / "out").exists()


def test_predict_runs_the_ir_and_the_checkpoint_on_openvino(exported, home: Path, tmp_path: Path) -> None:
    weights, onnx_path, xml = exported
    runner = CliRunner()
    picture = tmp_path / "a.png"
    write_image(picture, shapes_image(60, 80, seed=1))
    results = {}
    for name, source, backend in (("torch", weights, "torch"), ("ir", xml, "openvino"),
                                  ("on the fly", weights, "openvino")):
        out = tmp_path / name
        run = runner.invoke(app, ["predict", str(picture), "--weights", str(source), "--backend", backend,
                                  "--conf", "0", "--out", str(out), "--no-overlays"])
        assert run.exit_code == 0, run.output
        results[name] = json.loads((out / "results.json").read_text())
    assert list((home / backends.EXPORTS).iterdir()) == [onnx_path]  # the fixture's export, reused
    assert onnx_path.name.startswith("model-")
    assert len(results["torch"]) == len(results["ir"]) == len(results["on the fly"]) > 0
    for expected, *others in zip(results["torch"], results["ir"], results["on the fly"]):
        for actual in others:
            assert actual["category_id"] == expected["category_id"]
            assert actual["score"] == pytest.approx(expected["score"], abs=FP32_TOLERANCE.max_score)
            masks = decode_rle(expected["segmentation"]), decode_rle(actual["segmentation"])
            assert (masks[0] & masks[1]).sum() >= FP32_TOLERANCE.min_iou * (masks[0] | masks[1]).sum()

    for args, message in ((["--recipe", "r50_giam", "--backend", "openvino"], "checkpoints, not recipes"),
                          (["--weights", str(xml)], "--backend openvino"),
                          (["--weights", str(xml), "--backend", "onnxruntime"], "--backend openvino"),
                          (["--weights", str(weights), "--backend", "openvino", "--dtype", "bf16"],
                           "dtype and compile apply to the torch backend")):
        refused = runner.invoke(app, ["predict", str(picture), *args, "--out", str(tmp_path / "refused")])
        assert refused.exit_code == 2 and message in refused.output, refused.output
        assert "Traceback" not in refused.output


def test_auto_picks_the_fastest_agreeing_backend_and_remembers_it(exported, home: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    from sparseinst_cli.analysis import timing

    weights, _, _ = exported
    progress = RecordingProgress()
    predictor = ModelSource(weights, backend=Backend.auto).open(progress=progress)
    (line,) = [event[1] for event in progress.events if event[1].startswith("backend auto: ") and "ms" in event[1]]
    (record,) = json.loads((home / backends.AUTO_CACHE).read_text()).values()
    assert set(record["times_ms"]) == {"torch", "onnxruntime", "openvino"} and not record["left_out"], record
    assert record["backend"] == min(record["times_ms"], key=record["times_ms"].get)
    assert line.startswith(f"backend auto: {record['backend']}, ") and "measured on this CPU" in line
    assert predictor.class_names == NAMES

    def no_timing(*args, **kwargs):
        raise AssertionError("a cached choice is not timed again")

    monkeypatch.setattr(timing, "time_predictor", no_timing)
    run = CliRunner().invoke(app, ["predict", "--weights", str(weights), "--backend", "auto", "--out",
                                   str(tmp_path / "predict"), "--no-overlays"])
    assert run.exit_code == 0, run.output
    assert f"backend auto: {record['backend']}" in run.output and "measured earlier" in " ".join(run.output.split())

    monkeypatch.undo()
    monkeypatch.setattr(backends, "cpu_name", lambda: "another CPU")  # a new decision, measured again
    monkeypatch.setattr(backends, "installed_backends", lambda: [Backend.torch, Backend.onnxruntime])
    monkeypatch.setattr(backends, "disagreement", lambda *args: "extra instance (as if)")
    choice = backends.choose_backend(weights)
    assert choice.backend == Backend.torch and set(choice.left_out) == {"onnxruntime"}
    assert "onnxruntime left out: extra instance" in choice.summary
    assert len(json.loads((home / backends.AUTO_CACHE).read_text())) == 2


def test_time_sets_the_backends_side_by_side(exported, tmp_path: Path, monkeypatch) -> None:
    weights, _, _ = exported
    run = CliRunner().invoke(app, ["time", "--weights", str(weights), "--variants", "backends", "--sizes", "64",
                                   "--runs", "1", "--warmup", "0", "--end-to-end", "--out", str(tmp_path)])
    assert run.exit_code == 0, run.output
    timings = json.loads((tmp_path / "timing.json").read_text())["timings"]
    assert [t["name"] for t in timings] == ["model (fast)", "model (onnxruntime)", "model (openvino)"]
    assert all(t["end_to_end"]["median_ms"] > 0 for t in timings)

    models = model_variants(["a.safetensors", "b.xml"], ["fast", "openvino"])
    assert [(m.name, m.backend.value) for m in models] == [("a (fast)", "torch"), ("a (openvino)", "openvino"),
                                                           ("b (openvino)", "openvino")]
    monkeypatch.setattr(backends, "installed_backends", lambda: [Backend.torch, Backend.onnxruntime])
    assert [m.name for m in model_variants(["a.safetensors"], ["backends"])] == ["a (fast)", "a (onnxruntime)"]
    with pytest.raises(SparseInstError, match="checkpoints, not recipes"):
        model_variants(["r50_giam"], ["openvino"])
