"""Fine-tuning: init_from with class-name transfer, EMA, batch-aware learning rates, the start-of-
training calibration, dense scenes, and the curves PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from components.init import prior_bias
from components.losses import downsample_target_masks
from components.pretrained import WeightsError, official_to_native
from sparseinst_cli.builder import build_model
from sparseinst_cli.checkpoint import load_model, save_checkpoint
from sparseinst_cli.cli.app import app
from sparseinst_cli.data.dense_scene import write_dense_scene
from sparseinst_cli.data.images import read_image
from sparseinst_cli.engine.calibration import MASK_KERNEL, calibrate, calibration_layers
from sparseinst_cli.engine.curves import CURVES_FILE, save_curves
from sparseinst_cli.engine.ema import ModelEMA, ema_decay
from sparseinst_cli.engine.solver import lr_scale, resolve_solver
from sparseinst_cli.engine.trainer import Trainer
from sparseinst_cli.engine.transfer import initialize_from, read_source, transfer
from sparseinst_cli.errors import RecipeError
from sparseinst_cli.inference import predictor as predictor_module
from sparseinst_cli.recipe import SolverSection, load_recipe

from .conftest import SMALL_MODEL, TINY_TRAINING, StopAfter, recipe_for
from .official_reference import official_layout, random_official_state_dict

SOURCE_CLASSES = ("circle", "triangle", "square", "star")
CLASS_HEAD = ("decoder.cls_score.weight", "decoder.cls_score.bias")


def _perturbed(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Every tensor moved away from its initialization, so 'equal to the source' means loaded."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return model


def _source_checkpoint(path: Path, names=SOURCE_CLASSES, instances: int = 10) -> dict[str, torch.Tensor]:
    recipe = load_recipe("r50_giam", [*SMALL_MODEL, f"model.num_classes={len(names)}",
                                      f"model.decoder.num_instances={instances}"])
    model = _perturbed(build_model(recipe))
    save_checkpoint(path, model, recipe, [{"id": i + 1, "name": n} for i, n in enumerate(names)])
    return {k: v.clone() for k, v in model.state_dict().items()}


def _target_recipe(source: Path, names: tuple[str, ...], *extra: str):
    quoted = ", ".join(f'"{n}"' for n in names)
    return load_recipe("r50_giam", [*SMALL_MODEL, f"model.num_classes={len(names)}", f"model.class_names=[{quoted}]",
                                    f'model.init_from="{source}"', *extra])


# ---------------------------------------------------------------- init_from


def test_init_from_k_classes_onto_m_classes_copies_by_name(tmp_path: Path) -> None:
    source_state = _source_checkpoint(tmp_path / "source.safetensors")
    names = ("STAR", "blob", "circle")  # other order, other case, one unknown class
    recipe = _target_recipe(tmp_path / "source.safetensors", names)
    torch.manual_seed(0)
    model = build_model(recipe)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = initialize_from(model, recipe)
    state = model.state_dict()

    for name, value in state.items():
        if name not in CLASS_HEAD:
            assert torch.equal(value, source_state[name]), name
    weight, bias = state["decoder.cls_score.weight"], state["decoder.cls_score.bias"]
    assert torch.equal(weight[0], source_state["decoder.cls_score.weight"][3])  # STAR <- star
    assert torch.equal(weight[2], source_state["decoder.cls_score.weight"][0])  # circle <- circle
    assert float(bias[0]) == float(source_state["decoder.cls_score.bias"][3])
    assert float(bias[1]) == pytest.approx(prior_bias(), abs=1e-6) == pytest.approx(-4.59512, abs=1e-5)
    assert torch.equal(weight[1], fresh["decoder.cls_score.weight"][1])
    assert 0.005 < float(weight[1].std()) < 0.015  # the SPEC's N(0, 0.01)
    assert report.class_rows == {"STAR": "star", "circle": "circle"}
    assert report.fresh_classes == ["blob"]
    assert report.reinitialized == [] and report.unused == []
    assert len(report.loaded) == len(state) - len(CLASS_HEAD)


def test_class_map_and_a_changed_instance_count(tmp_path: Path) -> None:
    source_state = _source_checkpoint(tmp_path / "source.safetensors")
    recipe = _target_recipe(tmp_path / "source.safetensors", ("pedestrian", "disc"),
                            "model.class_map={ disc = \"Circle\", pedestrian = \"square\" }",
                            "model.decoder.num_instances=12")
    model = build_model(recipe)
    report = initialize_from(model, recipe)
    weight = model.state_dict()["decoder.cls_score.weight"]
    assert torch.equal(weight[0], source_state["decoder.cls_score.weight"][2])
    assert torch.equal(weight[1], source_state["decoder.cls_score.weight"][0])
    assert report.class_rows == {"pedestrian": "square", "disc": "circle"}
    # N changes the IAM conv (N * G maps): it starts fresh, everything else is loaded.
    assert report.reinitialized == ["decoder.iam.conv.weight", "decoder.iam.conv.bias"]
    assert sorted(report.unused) == ["decoder.iam.conv.bias", "decoder.iam.conv.weight"]
    assert "decoder.cls_score.weight" in report.loaded


def test_strict_init_refuses_any_fresh_start(tmp_path: Path) -> None:
    _source_checkpoint(tmp_path / "source.safetensors")
    recipe = _target_recipe(tmp_path / "source.safetensors", ("star", "blob"), "model.init_strict=true")
    with pytest.raises(WeightsError, match=r"init_strict.*classes without a source row: blob"):
        initialize_from(build_model(recipe), recipe)
    exact = _target_recipe(tmp_path / "source.safetensors", SOURCE_CLASSES, "model.init_strict=true")
    report = initialize_from(build_model(exact), exact)
    assert report.fresh_classes == [] and report.reinitialized == []


def test_bad_class_maps_name_the_field(tmp_path: Path) -> None:
    _source_checkpoint(tmp_path / "source.safetensors")
    recipe = _target_recipe(tmp_path / "source.safetensors", ("a", "b"), 'model.class_map={ a = "hexagon" }')
    with pytest.raises(WeightsError, match=r"model.class_map: 'hexagon' not among the init_from model's classes"):
        initialize_from(build_model(recipe), recipe)
    recipe = _target_recipe(tmp_path / "source.safetensors", ("a", "b"), 'model.class_map={ c = "star" }')
    with pytest.raises(WeightsError, match=r"model.class_map: 'c' not among the training classes"):
        initialize_from(build_model(recipe), recipe)
    with pytest.raises(RecipeError, match="class_map and init_strict apply to init_from, which is not set"):
        load_recipe("r50_giam", ['model.class_map={ a = "star" }'])


def test_authors_pth_goes_through_the_strict_conversion(tmp_path: Path) -> None:
    official = random_official_state_dict(official_layout("r50", iam="group"), seed=3)
    path = tmp_path / "sparse_inst_r50_giam.pth"
    torch.save({"model": official}, path)
    recipe = load_recipe("r50_giam", ["model.num_classes=2", 'model.class_names=["dog", "person"]',
                                      f'model.init_from="{path}"'])
    model = build_model(recipe)
    report = initialize_from(model, recipe)
    native = official_to_native(official)
    state = model.state_dict()
    assert torch.equal(state["decoder.cls_score.weight"][0], native["decoder.cls_score.weight"][16])  # COCO dog: label 16
    assert torch.equal(state["decoder.cls_score.weight"][1], native["decoder.cls_score.weight"][0])  # person
    for name in ("backbone.res4.5.conv2.weight", "encoder.fusion.weight", "decoder.iam.conv.weight",
                 "decoder.mask_kernel.weight"):
        assert torch.equal(state[name], native[name]), name
    assert report.fresh_classes == [] and report.reinitialized == [] and report.unused == []
    # An architecture the checkpoint does not fit is refused by the strict conversion.
    wrong = load_recipe("r50_giam", ["model.backbone.name=resnet101", f'model.init_from="{path}"'])
    with pytest.raises(WeightsError, match="for the recipe's architecture"):
        read_source(path, wrong)


def test_imagenet_weights_are_not_an_init_source(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(WeightsError, match="give them as model.backbone.weights"):
        read_source(path, load_recipe("r50_giam"))


def test_unnamed_source_transfers_class_rows_by_position(tmp_path: Path) -> None:
    recipe = load_recipe("r50_giam", [*SMALL_MODEL])
    source_model = _perturbed(build_model(recipe))
    path = tmp_path / "last_model.pt"
    torch.save({"model": source_model.state_dict()}, path)
    report = transfer(build_model(recipe), read_source(path, recipe), ["a", "b", "c"])
    assert report.class_rows == {"a": "#0", "b": "#1", "c": "#2"}


def test_training_from_init_from_starts_at_step_0_and_records_the_transfer(demo: Path, tmp_path: Path) -> None:  # noqa: F811
    source = Trainer.from_recipe(recipe_for(demo, "train.solver.batch_size=2", "train.solver.max_iter=2"), tmp_path / "source")
    source.run()
    subset = json.loads((demo / "train.json").read_text())
    subset["categories"] = [{"id": 4, "name": "Star"}, {"id": 9, "name": "hexagon"}]
    subset["annotations"] = [a for a in subset["annotations"] if a["category_id"] == 4]
    (demo / "stars.json").write_text(json.dumps(subset))
    recipe = recipe_for(demo, "train.solver.batch_size=2", "train.solver.max_iter=2",
                        f"data.val.annotations={demo / 'stars.json'}", f"data.val.images={demo / 'train'}",
                        f'model.init_from="{tmp_path / "source" / "model.safetensors"}"', annotations="stars.json")
    trainer = Trainer.from_recipe(recipe, tmp_path / "finetuned")
    source_weights = load_model(tmp_path / "source" / "model.safetensors")[0].state_dict()
    assert torch.equal(trainer.model.state_dict()["decoder.mask_kernel.weight"],
                       source_weights["decoder.mask_kernel.weight"])
    assert trainer.fresh_parameters == set()  # nothing to calibrate: every layer was loaded
    result = trainer.run()
    assert result.step == 2
    run = json.loads((tmp_path / "finetuned" / "run.json").read_text())
    assert run["init_from"]["class_rows"] == {"Star": "star"}
    assert run["init_from"]["fresh_classes"] == ["hexagon"]
    assert run["init_from"]["loaded"] == len(source_weights) - 2
    model, checkpoint = load_model(tmp_path / "finetuned" / "model.safetensors")
    assert checkpoint.recipe.model.init_from is None and checkpoint.class_names == ["Star", "hexagon"]
    longer = recipe.model_copy(update={"train": recipe.train.model_copy(update={
        "solver": recipe.train.solver.model_copy(update={"max_iter": 3})})})
    resumed = Trainer.from_recipe(longer, tmp_path / "finetuned", initialize=False)
    resumed.resume()
    assert resumed.transfer is None and resumed.run().step == 3
    kept = json.loads((tmp_path / "finetuned" / "run.json").read_text())
    assert kept["init_from"] == run["init_from"]


# ---------------------------------------------------------------- EMA


def test_ema_arithmetic_on_a_toy_model() -> None:
    live = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        live.weight.fill_(0.0)
    ema = ModelEMA(live, decay=0.9, warmup=2.0)
    expected = 0.0
    for step, value in enumerate((1.0, 2.0, 4.0), start=1):
        with torch.no_grad():
            live.weight.fill_(value)
        ema.update(live)
        d = 0.9 * (1 - math.exp(-step / 2.0))
        expected = d * expected + (1 - d) * value
        assert float(ema.module.weight) == pytest.approx(expected, rel=1e-6)
    assert ema_decay(1, 0.9, 2.0) == pytest.approx(0.9 * (1 - math.exp(-0.5)))
    assert float(ema.module.weight) == pytest.approx(2.0630, abs=1e-4)  # by hand: 0.6459, 1.2296, 2.0630
    assert not ema.module.weight.requires_grad


def test_resume_with_ema_equals_a_straight_run(demo: Path, tmp_path: Path) -> None:  # noqa: F811
    recipe = recipe_for(demo, "train.solver.batch_size=2", "train.solver.max_iter=6", "train.checkpoint_period=100",
                        "train.ema=true", "train.ema_decay=0.9", "train.ema_warmup=2",
                        "train.log_period=2")
    straight = Trainer.from_recipe(recipe, tmp_path / "straight")
    straight.run()
    first = Trainer.from_recipe(recipe, tmp_path / "resumed")
    assert first.run(StopAfter(first, 3)).interrupted
    second = Trainer.from_recipe(recipe, tmp_path / "resumed", initialize=False)
    second.resume()
    assert second.ema.updates == 3
    second.run()
    for (name, a), b in zip(straight.ema.module.state_dict().items(), second.ema.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
               if '"loss"' in line] for run in ("straight", "resumed")]
    assert len(losses[0]) == 3  # steps 2, 4, 6: each the mean of two steps, one of them before the stop
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    # model.safetensors holds the EMA weights, which differ from the live ones.
    written, checkpoint = load_model(tmp_path / "resumed" / "model.safetensors")
    assert checkpoint.metadata["weights"] == "ema"
    key = "decoder.mask_kernel.weight"
    assert torch.equal(written.state_dict()[key], second.ema.module.state_dict()[key])
    assert not torch.equal(written.state_dict()[key], second.model.state_dict()[key])


# ---------------------------------------------------------------- learning rate


def test_learning_rate_scaling_arithmetic() -> None:
    assert lr_scale(16, 64, "linear") == 0.25
    assert lr_scale(16, 64, "sqrt") == 0.5
    assert lr_scale(16, 64, "none") == 1.0
    solver = SolverSection(lr=4e-4, batch_size=16, reference_batch_size=64, lr_scaling="sqrt", max_iter=1000,
                           lr_steps=(800, 900), warmup_iters=100, scale_schedule=True)
    resolution = resolve_solver(solver, dataset_size=5000)
    run = resolution.resolved
    assert run.lr == pytest.approx(2e-4)
    assert (run.max_iter, run.lr_steps, run.warmup_iters) == (4000, (3200, 3600), 400)
    assert (run.reference_batch_size, run.lr_scaling, run.scale_schedule) == (16, "none", False)
    assert resolve_solver(run, 5000).resolved == run  # a resolved solver resolves to itself (resume)
    assert "lr 0.0002 (0.0004 for batch 64, sqrt scaling to batch 16)" in resolution.summary()


def test_schedule_in_epochs() -> None:
    solver = SolverSection(lr=1e-3, batch_size=8, reference_batch_size=8, epochs=12.0, lr_step_epochs=(8.0, 11.0),
                           warmup_iters=50)
    run = resolve_solver(solver, dataset_size=300).resolved  # 37.5 steps per epoch
    assert (run.max_iter, run.lr_steps, run.warmup_iters, run.lr) == (450, (300, 412), 50, 1e-3)
    with pytest.raises(ValueError, match="lr_step_epochs needs epochs"):
        SolverSection(lr_step_epochs=(1.0,))


def test_trainer_uses_the_resolved_learning_rate(demo: Path, tmp_path: Path) -> None:  # noqa: F811
    recipe = recipe_for(demo, "train.solver.batch_size=2", "train.solver.lr_scaling=linear",
                        "train.solver.reference_batch_size=8", "train.solver.epochs=1")
    trainer = Trainer.from_recipe(recipe, tmp_path / "run")
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 2 / 8)
    assert trainer.recipe.train.solver.max_iter == 3  # 6 images, 2 per step
    stored = json.loads(json.dumps(trainer.recipe.dump()))["train"]["solver"]
    assert stored["lr"] == pytest.approx(2.5e-4) and stored["lr_scaling"] == "none"


@pytest.mark.parametrize(("flags", "expected"), [("fpu sse avx2 fma", "fp32"), ("avx512f avx512_bf16", "bf16")])
def test_auto_training_precision_is_resolved_and_stored(demo: Path, tmp_path: Path, monkeypatch,  # noqa: F811
                                                        flags: str, expected: str) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(predictor_module, "CPU_INFO", str(cpuinfo))
    trainer = Trainer.from_recipe(recipe_for(demo, 'train.precision="auto"'), tmp_path / "run")
    assert trainer.recipe.train.precision == expected  # what recipe.json keeps, so a resume runs the same
    assert trainer.autocast_dtype == {"fp32": None, "bf16": torch.bfloat16}[expected]
    assert trainer.parts.precision_note == f"{expected} (auto)"


# ---------------------------------------------------------------- calibration and dense scenes


def test_calibration_gives_unit_scales_and_leaves_loaded_layers_alone(tmp_path: Path) -> None:
    recipe = load_recipe("r50_giam", SMALL_MODEL)
    model = build_model(recipe)
    images = torch.randn(2, 3, 64, 96) * 3
    everything = {name for name, _ in model.named_parameters()}
    fusion_before = model.encoder.fusion.weight.clone()
    result = calibrate(model, images, everything - {"encoder.fusion.weight"})
    assert "encoder.fusion" not in result.factors and torch.equal(model.encoder.fusion.weight, fusion_before)
    assert result.mask_logit_rms_after == pytest.approx(1.0, rel=1e-3)
    outputs = {}
    hooks = [module.register_forward_hook(lambda m, i, o, n=name: outputs.__setitem__(n, o.clone()))
             for name, module in model.named_modules() if name in result.factors]
    with torch.no_grad():
        logits = model.eval()(images)
    for hook in hooks:
        hook.remove()
    for name in calibration_layers(model, everything - {"encoder.fusion.weight"}):
        assert float(outputs[name].std()) == pytest.approx(1.0, rel=1e-3), name
    assert float(logits.masks.square().mean().sqrt()) == pytest.approx(1.0, rel=1e-3)
    # Prior-bias layers keep the SPEC's initialization.
    assert float(model.decoder.cls_score.bias[0].detach()) == pytest.approx(prior_bias())
    assert MASK_KERNEL in result.factors and "decoder.iam.conv" not in result.factors


def test_downsampled_targets_equal_bilinear_interpolation() -> None:
    for shape, size in (((3, 64, 96), (16, 24)), ((5, 32, 32), (16, 16)), ((2, 48, 48), (8, 8)),
                        ((2, 30, 30), (10, 10)), ((0, 32, 32), (8, 8)), ((4, 40, 64), (10, 12))):
        for dtype in (torch.uint8, torch.bool, torch.float32):
            masks = (torch.rand(shape) > 0.5).to(dtype)
            expected = F.interpolate(masks[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
            assert torch.equal(downsample_target_masks(masks, size), expected), (shape, size, dtype)


DENSE_OVERRIDES = ["input.min_size_test=240", "input.max_size_test=240", "train.augmentation.min_sizes=[240]",
                   "train.augmentation.max_size=240", "model.decoder.num_instances=100", "train.solver.batch_size=1",
                   "train.solver.max_iter=8", "train.solver.lr=1e-4", "train.solver.warmup_iters=0"]
# Mean pixel BCE <= log 2 + mean |logit| <= log 2 + RMS(logit); with the logits calibrated to RMS 1
# and a learning rate that moves them by a fraction of that per step, the weighted term (x5) stays
# under 5 * (log 2 + 2).
MASK_LOSS_BOUND = 5 * (math.log(2) + 2)


def _dense_run(tmp_path: Path, name: str, *extra: str) -> list[dict]:
    scene = tmp_path / "scene"
    annotations = scene / "dense.json" if (scene / "dense.json").is_file() else write_dense_scene(scene)
    recipe = load_recipe("r50_giam", [*TINY_TRAINING, f"data.train.annotations={annotations}",
                                      f"data.train.images={scene / 'images'}", *DENSE_OVERRIDES, *extra])
    torch.manual_seed(0)
    Trainer.from_recipe(recipe, tmp_path / name).run()
    return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def test_dense_scene_losses_stay_bounded(tmp_path: Path) -> None:
    scene = write_dense_scene(tmp_path / "scene")
    data = json.loads(scene.read_text())
    assert len(data["annotations"]) == 100
    assert read_image(tmp_path / "scene" / "images" / "dense.png").shape == (240, 240, 3)
    calibrated = _dense_run(tmp_path, "calibrated")
    assert len(calibrated) == 8
    assert max(r["loss_mask"] for r in calibrated) < MASK_LOSS_BOUND
    assert all(0 <= r["loss_dice"] <= 2.0 and np.isfinite(r["loss"]) for r in calibrated)
    # The SPEC's initialization alone starts with saturated masks: the bound is broken at once.
    plain = _dense_run(tmp_path, "plain", "train.calibrate_init=false")
    assert plain[0]["loss_mask"] > MASK_LOSS_BOUND


# ---------------------------------------------------------------- curves


def test_curves_png_from_a_run_and_by_command(demo: Path, tmp_path: Path) -> None:  # noqa: F811
    trainer = Trainer.from_recipe(recipe_for(demo, "train.solver.batch_size=2", "train.solver.max_iter=3"), tmp_path / "run")
    trainer.run()
    png = tmp_path / "run" / CURVES_FILE
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_image(png).shape == (450, 1500, 3)
    result = CliRunner().invoke(app, ["curves", str(tmp_path / "run"), "--out", str(tmp_path / "again.png")])
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "again.png").shape == (450, 1500, 3)
    missing = CliRunner().invoke(app, ["curves", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "metrics.jsonl: no such file" in missing.output
    assert save_curves(tmp_path / "run") == png


def test_train_command_init_from(demo: Path, tmp_path: Path) -> None:  # noqa: F811
    runner = CliRunner()
    sets = [arg for item in TINY_TRAINING for arg in ("--set", item)]
    data = ["--set", f"data.train.annotations={demo / 'train.json'}", "--set", f"data.train.images={demo / 'train'}",
            "--set", f"data.val.annotations={demo / 'val.json'}", "--set", f"data.val.images={demo / 'val'}",
            "--set", "train.solver.batch_size=2", "--set", "train.solver.max_iter=1"]
    source = tmp_path / "source"
    assert runner.invoke(app, ["train", "r50_giam", "--out", str(source), *sets, *data]).exit_code == 0
    weights = source / "model.safetensors"

    result = runner.invoke(app, ["train", "r50_giam", "--out", str(tmp_path / "tuned"), *sets, *data,
                                 "--init-from", str(weights), "--init-strict"])
    assert result.exit_code == 0, result.output
    assert "init_from" in result.output and "class rows copied" in result.output
    assert "solver: lr 0.001, 1 steps" in result.output
    run = json.loads((tmp_path / "tuned" / "run.json").read_text())
    assert run["init_from"]["class_rows"] == {n: n for n in SOURCE_CLASSES} and run["init_from"]["reinitialized"] == []

    changed = runner.invoke(app, ["train", "r50_giam", "--out", str(tmp_path / "n12"), *sets, *data,
                                  "--set", "model.decoder.num_instances=12", "--init-from", str(weights),
                                  "--init-strict"])
    assert changed.exit_code == 2 and "re-initialized: decoder.iam.conv.weight" in changed.output
    assert "Traceback" not in changed.output and not (tmp_path / "n12" / "last.pt").exists()
    missing = runner.invoke(app, ["train", "r50_giam", "--out", str(tmp_path / "m"), *sets, *data,
                                  "--init-from", str(tmp_path / "nope.safetensors")])
    assert missing.exit_code == 2 and "nope.safetensors: no such file" in missing.output
    both = runner.invoke(app, ["train", "--out", str(source), "--resume", "--init-from", str(weights)])
    assert both.exit_code == 2 and "init_from starts a new run" in both.output and "(--init-from)" in both.output
