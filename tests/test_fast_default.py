"""The fast path is the default for predict, eval, viz-iam, tide and ``Predictor.from_checkpoint``,
and gives the plain model's instances; ``--dtype auto`` picks bf16 only where it is native."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sparseinst_cli.cli.app import app
from sparseinst_cli.data.coco import decode_rle
from sparseinst_cli.data.images import write_image
from sparseinst_cli.deploy.backends import ModelSource
from sparseinst_cli.inference import predictor as predictor_module
from sparseinst_cli.inference.predictor import Precision, Predictor, resolve_precision

from .conftest import SMALL_MODEL, random_checkpoint, shapes_image

SCORE_TOLERANCE = 1e-4
MASK_AGREEMENT = 0.999  # share of pixels; the others sit within float noise of the threshold


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("fast") / "model.safetensors", "r50_giam",
                             [*SMALL_MODEL, "input.min_size_test=96", "input.max_size_test=128"], seed=3,
                             frozen_norms=True)


def test_from_checkpoint_is_fast_by_default_and_equals_the_plain_model(checkpoint: Path) -> None:
    fast = Predictor.from_checkpoint(checkpoint)
    plain = Predictor.from_checkpoint(checkpoint, fast=False)
    assert fast.model is not fast.plain_model and fast.memory_format == torch.channels_last
    assert plain.model is plain.plain_model and plain.memory_format == torch.contiguous_format
    image = shapes_image(90, 120, seed=2)
    a, b = fast([image])[0], plain([image])[0]
    assert len(a) == len(b) > 0 and torch.equal(a.labels, b.labels)
    assert torch.allclose(a.scores, b.scores, atol=SCORE_TOLERANCE)
    assert (a.masks == b.masks).float().mean() >= MASK_AGREEMENT
    back = fast.plain()([image])[0]  # plain() returns to the model as loaded, exactly
    assert torch.equal(back.scores, b.scores) and torch.equal(back.masks, b.masks)


def test_predict_defaults_to_the_fast_path_with_the_plain_instances(checkpoint: Path, tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    write_image(image, shapes_image(90, 120, seed=5))
    runner = CliRunner()
    results = {}
    for mode in ("--fast", "--plain"):
        out = tmp_path / mode.strip("-")
        run = runner.invoke(app, ["predict", str(image), "--weights", str(checkpoint), mode, "--out", str(out),
                                  "--no-overlays"])
        assert run.exit_code == 0, run.output
        results[mode] = json.loads((out / "results.json").read_text())
    default = tmp_path / "default"
    assert runner.invoke(app, ["predict", str(image), "--weights", str(checkpoint), "--out", str(default),
                               "--no-overlays"]).exit_code == 0
    assert json.loads((default / "results.json").read_text()) == results["--fast"]
    assert len(results["--fast"]) == len(results["--plain"]) > 0
    for a, b in zip(results["--fast"], results["--plain"]):
        assert a["category_id"] == b["category_id"] and a["score"] == pytest.approx(b["score"], abs=SCORE_TOLERANCE)
        assert (decode_rle(a["segmentation"]) == decode_rle(b["segmentation"])).mean() >= MASK_AGREEMENT


def test_model_source_runs_fast_unless_asked_for_plain(checkpoint: Path) -> None:
    assert ModelSource(weights=checkpoint).optimized and "(fast)" in ModelSource(weights=checkpoint).name
    assert not ModelSource(weights=checkpoint, fast=False).optimized
    assert ModelSource(weights=checkpoint, fast=False, dtype=Precision.bf16).optimized  # reduced precision is fast


@pytest.mark.parametrize(("flags", "expected"), [("fpu sse avx2 fma", "fp32"), ("avx512f avx512_bf16", "bf16"),
                                                 ("avx512f amx_bf16 amx_tile", "bf16")])
def test_auto_precision_is_bf16_only_where_native(tmp_path: Path, monkeypatch, flags: str, expected: str) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(predictor_module, "CPU_INFO", str(cpuinfo))
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision(Precision.fp16, torch.device("cpu")) == "fp16"  # explicit choices stay as asked


def test_cpu_name_gives_model_numbers_and_vector_extensions(tmp_path: Path, monkeypatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    first = "processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_vnni\n"
    cpuinfo.write_text(first + "\n" + first.replace(": 0", ": 1").replace("avx512_vnni", "amx_int8"))
    monkeypatch.setattr(predictor_module, "CPU_INFO", str(cpuinfo))
    assert predictor_module.cpu_name() == "AMD EPYC (family 25 model 17; AVX2, AVX-512, VNNI)"  # the first processor's
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Old\nflags\t\t: fpu sse2\n")
    assert predictor_module.cpu_name() == "Old (family ? model ?; no AVX2)"
    monkeypatch.setattr(predictor_module, "CPU_INFO", str(tmp_path / "absent"))
    assert predictor_module.cpu_name()  # falls back to the machine type


def test_predictor_takes_arrays_pil_images_paths_and_bgr_frames_alike(checkpoint: Path, tmp_path: Path) -> None:
    import warnings

    from PIL import Image

    from sparseinst_cli.errors import ImageError

    predictor = Predictor.from_checkpoint(checkpoint)
    rgb = shapes_image(90, 120, seed=8)
    path = tmp_path / "a.png"
    write_image(path, rgb)
    read_only = rgb.copy()
    read_only.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on non-writable arrays; none may reach the user
        results = predictor([rgb, read_only, Image.fromarray(rgb), str(path), path])
        bgr = predictor([rgb[:, :, ::-1].copy()], bgr=True)[0]
    reference = results[0]
    assert len(reference) > 0
    for other in (*results[1:], bgr):
        assert torch.equal(other.labels, reference.labels)  # batch positions may differ in the last float bits
        assert torch.allclose(other.scores, reference.scores, atol=SCORE_TOLERANCE)
        assert (other.masks == reference.masks).float().mean() >= MASK_AGREEMENT
    gray = predictor([rgb[:, :, 0]])[0]
    assert gray.image_size == (90, 120)
    with pytest.raises(ImageError, match="uint8"):
        predictor([rgb.astype("float32")])
    with pytest.raises(ImageError, match=r"shape \(H, W, 3\)"):
        predictor([rgb[:, :, :2]])


def test_one_image_alone_is_one_image_not_a_sequence_of_rows_or_characters(checkpoint: Path, tmp_path: Path) -> None:
    from PIL import Image

    predictor = Predictor.from_checkpoint(checkpoint)
    rgb = shapes_image(90, 120, seed=8)
    path = tmp_path / "a.png"
    write_image(path, rgb)
    reference = predictor([rgb], conf=0.0)[0]
    assert len(reference) > 0
    for single in (rgb, rgb[:, :, 0], Image.fromarray(rgb), path, str(path)):
        results = predictor(single, conf=0.0)
        assert len(results) == 1 and results[0].image_size == (90, 120)
        assert torch.equal(results[0].labels, reference.labels)
    stacked = predictor(np.stack([rgb, rgb]))  # (B, H, W, 3): a batch
    assert len(stacked) == 2 and all(r.image_size == (90, 120) for r in stacked)
