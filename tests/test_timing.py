"""Per-module timing and the optimized inference model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d
from typer.testing import CliRunner

from sparseinst_cli.analysis.timing import (
    POSTPROCESS_PARTS,
    STAGES,
    UNATTRIBUTED,
    time_predictor,
    unattributed_fraction,
)
from sparseinst_cli.cli.app import app
from sparseinst_cli.data.images import typical_size
from sparseinst_cli.deploy.backends import model_variants
from sparseinst_cli.inference import winograd
from sparseinst_cli.inference.fast_path import (
    fold_frozen_batch_norm,
    optimize_for_inference,
)
from sparseinst_cli.inference.predictor import Predictor
from sparseinst_cli.inference.winograd import WinogradConv2d, use_winograd
from sparseinst_cli.recipe import load_recipe

from .conftest import SMALL_MODEL, randomize_frozen_norms, shapes_image

UNATTRIBUTED_MARGIN = 0.10  # stages must cover at least 90% of the end-to-end median


@pytest.mark.parametrize("recipe, extra", [
    ("r50_giam", SMALL_MODEL),
    ("r50vd_dcn_giam", SMALL_MODEL),  # deep stem, avg-pool shortcuts, deformable convs
    ("demo", ["model.num_classes=3"]),  # EfficientNet-Lite0
])
def test_optimized_model_reproduces_the_plain_one(recipe: str, extra: list[str], monkeypatch) -> None:
    monkeypatch.setattr(winograd, "MIN_TILES", 1)  # Winograd even at the small test sizes
    predictor = Predictor.from_recipe(recipe, overrides=[*extra, "input.min_size_test=96", "input.max_size_test=128"],
                                      seed=2)
    randomize_frozen_norms(predictor.model)
    norms = sum(isinstance(m, FrozenBatchNorm2d) for m in predictor.model.modules())
    fast = optimize_for_inference(predictor.model)
    assert use_winograd(fast, min_channels=8) > 0  # the small model's convolutions are narrow
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in predictor.model.modules())  # the original is untouched

    batch = predictor.preprocess([shapes_image(90, 120, seed=1), shapes_image(120, 100, seed=2)])
    with torch.inference_mode():
        plain = predictor.model(batch.images)
        optimized = fast(batch.images.contiguous(memory_format=torch.channels_last))
    for a, b in zip(plain[:3], optimized[:3]):  # logits, objectness, mask logits
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))

    # The same instances come out (masks may flip only at pixels within float noise of the threshold).
    plain_instances = predictor.predict([shapes_image(90, 120, seed=1)], conf=0.0)[0]
    predictor.model = fast
    fast_instances = predictor.predict([shapes_image(90, 120, seed=1)], conf=0.0)[0]
    assert len(plain_instances) > 0
    torch.testing.assert_close(fast_instances.scores, plain_instances.scores, rtol=1e-4, atol=1e-6)
    assert torch.equal(fast_instances.labels, plain_instances.labels)
    assert (fast_instances.masks == plain_instances.masks).float().mean() > 0.9999
    assert norms > 0


def test_fast_r50_runs_its_wide_convolutions_by_winograd(monkeypatch) -> None:
    monkeypatch.setattr(winograd, "MIN_TILES", 1)
    overrides = ["model.num_classes=3", "input.min_size_test=96", "input.max_size_test=128"]
    plain = Predictor.from_recipe("r50_giam", overrides=overrides, seed=3)
    randomize_frozen_norms(plain.model)
    fast = Predictor(plain.model, plain.recipe, plain.categories).optimize("fp32")
    # 3x3 stride-1 convolutions of 128+ channels: ResNet stages 2-4 (3 + 5 + 2), FPN outputs (3),
    # decoder stacks (4 + 4).
    assert sum(isinstance(m, WinogradConv2d) for m in fast.model.modules()) == 21
    batch = plain.preprocess([shapes_image(90, 120, seed=4)])
    expected, actual = plain.forward(batch), fast.forward(batch)
    for a, b in zip(expected[:3], actual[:3]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    for dtype, compile in (("fp32", True), ("bf16", False)):  # Winograd is for eager fp32 only
        other = Predictor(plain.model, plain.recipe, plain.categories).optimize(dtype, compile=compile)
        assert not any(isinstance(m, WinogradConv2d) for m in other.model.modules())


def test_folding_counts_every_norm() -> None:
    model = Predictor.from_recipe("r50_giam", overrides=SMALL_MODEL).model
    norms = sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert fold_frozen_batch_norm(model) == norms
    assert fold_frozen_batch_norm(model) == 0  # nothing left


def test_per_module_times_add_up() -> None:
    predictor = Predictor.from_recipe("r50_giam", overrides=SMALL_MODEL)
    timing = time_predictor(predictor, shapes_image(120, 160), name="small", size=(96, 128), warmup=1, runs=5)
    assert set(timing.modules) == {*STAGES, *POSTPROCESS_PARTS, UNATTRIBUTED}
    assert all(timing.modules[s].min_ms <= timing.modules[s].median_ms <= timing.modules[s].max_ms for s in STAGES)
    assert all(timing.modules[s].median_ms > 0 for s in (*STAGES, *POSTPROCESS_PARTS))
    parts = sum(timing.modules[part].median_ms for part in POSTPROCESS_PARTS)
    assert parts == pytest.approx(timing.modules["postprocess"].median_ms, rel=0.25)
    assert unattributed_fraction(timing) < UNATTRIBUTED_MARGIN
    assert timing.padded_size == (96, 128) and timing.fps == pytest.approx(1000 / timing.end_to_end.median_ms, rel=1e-2)
    assert timing.parameters == sum(p.numel() for p in predictor.model.parameters())
    assert timing.gflops > 0


def test_typical_size_is_four_by_three_capped() -> None:
    assert typical_size(640, 853) == (640, 853)
    assert typical_size(448, 853) == (448, 597)
    assert typical_size(640, 800) == (640, 800)


def test_time_command_writes_the_documented_json(tmp_path: Path) -> None:
    recipe = load_recipe("r50_giam", SMALL_MODEL)
    assert recipe.model.decoder.num_instances == 10
    sets = [arg for item in SMALL_MODEL for arg in ("--set", item)]
    run = CliRunner().invoke(app, ["time", "--recipe", "r50_giam", *sets, "--sizes", "64,96", "--runs", "2",
                                   "--warmup", "1", "--out", str(tmp_path), "--compare", "r50_base"])
    assert run.exit_code == 0, run.output
    record = json.loads((tmp_path / "timing.json").read_text())
    assert {"device", "threads", "torch", "timings"} <= set(record)
    assert [(t["name"], t["input_size"]) for t in record["timings"]] == [  # the fast path by default, as predict
        ("r50_giam (fast)", [64, 85]), ("r50_giam (fast)", [96, 128]), ("r50_base (fast)", [64, 85]),
        ("r50_base (fast)", [96, 128])]
    first = record["timings"][0]
    assert {"end_to_end", "fps", "modules", "parameters", "gflops", "padded_size", "batch", "dtype"} <= set(first)
    assert set(first["modules"]) == {*STAGES, *POSTPROCESS_PARTS, UNATTRIBUTED}
    assert set(first["end_to_end"]) == {"median_ms", "min_ms", "max_ms"}

    bad = CliRunner().invoke(app, ["time", "--recipe", "r50_giam", "--sizes", "abc"])
    assert bad.exit_code == 2 and "--sizes" in bad.output


# Reduced precision: relative error of each raw output against fp32 (fp16 has a 10-bit mantissa,
# bf16 a 7-bit one; errors compound through the network).
PRECISION_RTOL = {"fp16": 0.02, "bf16": 0.1}


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("iam", ["sigmoid", "softmax", "group", "cross_attention"])
def test_reduced_precision_is_finite_and_close(iam: str, dtype: str) -> None:
    overrides = [*SMALL_MODEL, f"model.iam.name={iam}", "input.min_size_test=96", "input.max_size_test=128"]
    plain = Predictor.from_recipe("r50_giam", overrides=overrides, seed=1)
    fast = Predictor.from_recipe("r50_giam", overrides=overrides, seed=1).optimize(dtype)
    batch = plain.preprocess([shapes_image(90, 120, seed=1)])
    expected, actual = plain.forward(batch), fast.forward(batch)
    for a, b in zip(expected[:3], actual[:3]):
        assert b.dtype == torch.float32 and torch.isfinite(b).all()
        assert float((a - b).abs().max() / a.abs().max()) < PRECISION_RTOL[dtype]


def test_fp16_survives_mask_logits_beyond_its_range() -> None:
    """Mask logits past fp16's 65504 (a scaled kernel head) stay finite: the mask product runs in fp32."""
    predictor = Predictor.from_recipe("r50_giam", overrides=[*SMALL_MODEL, "input.min_size_test=64",
                                                             "input.max_size_test=64"], seed=0)
    with torch.no_grad():
        predictor.model.decoder.mask_kernel.weight.mul_(1e4)
    batch = predictor.preprocess([shapes_image(64, 64)])
    expected = predictor.forward(batch)
    assert float(expected.masks.abs().max()) > torch.finfo(torch.float16).max
    actual = predictor.optimize("fp16").forward(batch)
    assert all(torch.isfinite(t).all() for t in actual[:3])
    assert float((actual.masks - expected.masks).abs().max() / expected.masks.abs().max()) < PRECISION_RTOL["fp16"]
    assert torch.isfinite(postprocess_one(actual, batch).scores).all()


def postprocess_one(output, batch):
    from components.postprocess import postprocess

    return postprocess(output, tuple(batch.images.shape[-2:]), batch.image_sizes, batch.original_sizes)[0]


def test_time_variants_sets_the_ways_to_run_a_model_side_by_side(tmp_path: Path) -> None:
    sets = [arg for item in SMALL_MODEL for arg in ("--set", item)]
    run = CliRunner().invoke(app, ["time", "--recipe", "r50_giam", *sets, "--sizes", "64", "--runs", "2",
                                   "--warmup", "1", "--out", str(tmp_path), "--variants", "plain,fast,bf16"])
    assert run.exit_code == 0, run.output
    timings = json.loads((tmp_path / "timing.json").read_text())["timings"]
    assert [(t["name"], t["dtype"]) for t in timings] == [
        ("r50_giam", "fp32"), ("r50_giam (fast)", "fp32"), ("r50_giam (fast)", "bf16")]
    assert all({"scores", "masks", "postprocess"} <= set(t["modules"]) for t in timings)

    unknown = CliRunner().invoke(app, ["time", "--recipe", "r50_giam", "--variants", "fast,int4"])
    assert unknown.exit_code != 0 and "int4" in unknown.output and "onnxruntime" in unknown.output
    recipe = CliRunner().invoke(app, ["time", "--recipe", "r50_giam", "--variants", "onnxruntime"])
    assert recipe.exit_code != 0 and "checkpoints, not recipes" in recipe.output


def test_model_variants_run_an_onnx_file_once_on_onnxruntime() -> None:
    models = model_variants(["a.safetensors", "b.onnx"], ["plain", "fast", "onnxruntime"])
    assert [(m.name, m.backend.value, m.optimized) for m in models] == [
        ("a", "torch", False), ("a (fast)", "torch", True), ("a (onnxruntime)", "onnxruntime", False),
        ("b (onnxruntime)", "onnxruntime", False)]


def test_time_without_a_model_times_the_default_one_on_the_fast_path(tmp_path: Path) -> None:
    run = CliRunner().invoke(app, ["time", "--per-module", "--runs", "1", "--warmup", "0", "--out", str(tmp_path)])
    assert run.exit_code == 0, run.output
    assert "timing the zoo's default model, r50_giam_aug" in " ".join(run.output.split())
    (timing,) = json.loads((tmp_path / "timing.json").read_text())["timings"]
    assert timing["name"] == "r50_giam_aug (fast)" and timing["input_size"] == [608, 811]  # its published test size, 4:3
    assert set(timing["modules"]) == {*STAGES, *POSTPROCESS_PARTS, UNATTRIBUTED}


def test_runs_that_spread_more_than_twice_are_flagged() -> None:
    from sparseinst_cli.analysis.timing import MAX_SPREAD, Stat, Timing, TimingReport

    def timing(fastest: float, slowest: float) -> Timing:
        return Timing("m", (64, 85), (64, 96), 1, "fp32", "cpu", 5, Stat(fastest, fastest, slowest), 1.0)

    steady, noisy = timing(10.0, 15.0), timing(10.0, 25.0)
    assert steady.spread == 1.5 and noisy.spread == 2.5 > MAX_SPREAD
    report = TimingReport("cpu", 2, "x", [steady, noisy])
    (notice,) = report.notices
    assert "2.5x the fastest" in notice.message and notice.setting == "runs"
    assert report.to_json()["timings"][1]["spread"] == 2.5


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_deformable_models_run_under_reduced_precision_on_a_cpu(dtype: str) -> None:
    """torchvision's CPU deformable convolution computes only fp32/fp64: under autocast it runs in
    fp32 (the DCN zoo models in bf16 once failed with 'not implemented for BFloat16')."""
    overrides = [*SMALL_MODEL, "model.decoder.deformable_last=true", "input.min_size_test=96",
                 "input.max_size_test=128"]
    plain = Predictor.from_recipe("r50vd_dcn_giam", overrides=overrides, seed=1)
    reduced = Predictor.from_recipe("r50vd_dcn_giam", overrides=overrides, seed=1).optimize(dtype)
    batch = plain.preprocess([shapes_image(90, 120, seed=1)])
    expected, actual = plain.forward(batch), reduced.forward(batch)
    for a, b in zip(expected[:3], actual[:3]):
        assert torch.isfinite(b).all()
        assert float((a - b).abs().max() / a.abs().max()) < PRECISION_RTOL[dtype]
