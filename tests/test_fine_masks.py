"""Masks drawn at stride 4 (``model.decoder.mask_stride = 4``): the default stays the authors'
stride-8 model bit for bit; the stride-4 model trains, post-processes, runs on the fast path,
takes a stride-8 or authors' model by init_from, and raises the mask AP ceiling."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from components import build
from components.decoder import SparseInstDecoder, coordinate_features
from components.losses import Target, downsample_target_masks
from components.mask_resize import resize_and_threshold
from components.postprocess import postprocess
from sparseinst_cli.analysis.mask_ceiling import mask_ceiling, recipe_mask_stride
from sparseinst_cli.builder import build_model
from sparseinst_cli.checkpoint import save_checkpoint
from sparseinst_cli.cli.app import app
from sparseinst_cli.engine.trainer import Trainer
from sparseinst_cli.engine.transfer import initialize_from, read_source, transfer
from sparseinst_cli.errors import RecipeError
from sparseinst_cli.inference.predictor import Predictor
from sparseinst_cli.recipe import load_recipe

from .conftest import SMALL_MODEL, randomize_frozen_norms, recipe_for, shapes_image
from .official_reference import official_layout, random_official_state_dict

STRIDE_4 = "model.decoder.mask_stride=4"
DETAIL = "decoder.mask_detail.subpixel.weight"
HEIGHT, WIDTH = 480, 640


def small_decoder(**options) -> SparseInstDecoder:
    torch.manual_seed(0)
    return build("decoder", "iam_decoder", in_channels=16, num_classes=3, iam=partial(build, "iam", "group"),
                 num_instances=6, kernel_dim=8, inst_width=16, mask_width=16, inst_depth=2, mask_depth=2, **options)


def stride_8_reference(decoder: SparseInstDecoder, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The decoder's forward as it was before mask_stride existed (SPEC 1.4)."""
    features = torch.cat([coordinate_features(features), features], dim=1)
    _, instance_features = decoder.iam(decoder.inst_convs(features))
    kernels = decoder.mask_kernel(instance_features)
    mask_features = decoder.mask_projection(decoder.mask_convs(features))
    masks = torch.bmm(kernels.float(), mask_features.flatten(2).float()).unflatten(-1, mask_features.shape[-2:])
    masks = F.interpolate(masks, scale_factor=2, mode="bilinear", align_corners=False)
    return decoder.cls_score(instance_features), decoder.objectness(instance_features), masks


@torch.no_grad()
def randomize_detail(model: torch.nn.Module, scale: float = 0.2) -> None:
    """A trained-looking stride-4 detail layer instead of its zero start."""
    weight = dict(model.named_parameters())[DETAIL]
    weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)) * scale)


# ---------------------------------------------------------------- the default is the authors' model


def test_the_default_decoder_is_the_stride_8_one_bit_for_bit() -> None:
    default, explicit = small_decoder(), small_decoder(mask_stride=8)
    assert default.mask_stride == 8 and default.mask_detail is None
    assert list(default.state_dict()) == list(explicit.state_dict())
    assert not any("mask_detail" in key for key in default.state_dict())
    features = torch.randn(2, 16, 7, 9)
    with torch.no_grad():
        out = default(features)
        expected = stride_8_reference(default, features)
        again = explicit(features)
    for actual, wanted in zip(out[:3], expected):
        assert torch.equal(actual, wanted)
    for actual, wanted in zip(out[:3], again[:3]):
        assert torch.equal(actual, wanted)


def test_the_default_model_keeps_its_layout_and_outputs() -> None:
    torch.manual_seed(0)
    default = build_model(load_recipe("r50_giam", SMALL_MODEL)).eval()
    torch.manual_seed(0)
    explicit = build_model(load_recipe("r50_giam", [*SMALL_MODEL, "model.decoder.mask_stride=8"])).eval()
    assert list(default.state_dict()) == list(explicit.state_dict())
    assert load_recipe("r50_giam").model.decoder.mask_stride == 8
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = default(images), explicit(images)
        reference = stride_8_reference(default.decoder, default.encoder(default.backbone(images)))
    assert torch.equal(a.masks, b.masks) and torch.equal(a.masks, reference[2])
    assert torch.equal(a.logits, reference[0]) and torch.equal(a.objectness, reference[1])


# ---------------------------------------------------------------- the stride-4 model


def test_stride_4_masks_are_drawn_on_the_stride_4_grid() -> None:
    decoder = small_decoder(mask_stride=4).eval()
    assert decoder.mask_stride == 4 and isinstance(decoder.mask_detail.subpixel, torch.nn.ConvTranspose2d)
    assert not decoder.mask_detail.subpixel.weight.detach().any()  # starts at zero
    features = torch.randn(2, 16, 7, 9)
    with torch.no_grad():
        start = decoder(features)
        stride_8 = stride_8_reference(decoder, features)
    assert start.masks.shape == stride_8[2].shape == (2, 6, 14, 18)  # (B, N, H/4, W/4), as at stride 8
    # At its zero start the detail adds nothing: the stride-8 model's masks, to float rounding.
    torch.testing.assert_close(start.masks, stride_8[2], rtol=1e-5, atol=1e-5)
    assert torch.equal(start.logits, stride_8[0])
    with torch.no_grad():
        decoder.mask_detail.subpixel.weight.normal_()
        out = decoder(features)
        branch = decoder.mask_convs(torch.cat([coordinate_features(features), features], dim=1))
        fine = decoder.mask_detail(branch, decoder.mask_projection(branch))
        kernels = decoder.mask_kernel(decoder.iam(decoder.inst_convs(
            torch.cat([coordinate_features(features), features], dim=1)))[1])
    assert fine.shape == (2, 8, 14, 18)
    # The product is taken at stride 4, with no upsampling after it.
    torch.testing.assert_close(out.masks, torch.bmm(kernels, fine.flatten(2)).unflatten(-1, (14, 18)))
    # Each 2x2 block of stride-4 cells has its own values: not a bilinear upsampling of a stride-8 map.
    smooth = F.interpolate(F.avg_pool2d(out.masks, 2), scale_factor=2, mode="bilinear", align_corners=False)
    assert float((out.masks - smooth).abs().max()) > 0.1


def test_mask_stride_is_validated() -> None:
    with pytest.raises(RecipeError, match="mask_stride: Input should be 8 or 4"):
        load_recipe("finetune_lite", ["model.decoder.mask_stride=2"])
    with pytest.raises(ValueError, match="mask_stride must be 8 or 4"):
        SparseInstDecoder(16, 3, partial(build, "iam", "sigmoid"), mask_stride=16)


def test_a_training_step_at_stride_4_reaches_the_new_layer(demo: Path, tmp_path: Path) -> None:
    recipe = recipe_for(demo, "train.solver.batch_size=2", STRIDE_4)
    trainer = Trainer.from_recipe(recipe, tmp_path / "run")
    batch = next(iter(trainer.data.loader(trainer.step, trainer.process)))
    output = trainer.model(batch.images)
    assert output.masks.shape[-2:] == (batch.images.shape[-2] // 4, batch.images.shape[-1] // 4)
    targets = [Target(labels, downsample_target_masks(masks, tuple(output.masks.shape[-2:])))
               for masks, labels in zip(batch.masks, batch.labels)]
    assert all(t.masks.shape[-2:] == output.masks.shape[-2:] for t in targets)
    trainer.model.zero_grad()
    losses = trainer.train_step([batch])
    assert all(np.isfinite(value) for value in losses.values())
    detail = dict(trainer.model.named_parameters())[DETAIL]
    assert detail.grad is not None and float(detail.grad.abs().sum()) > 0
    assert bool(detail.detach().any())  # the optimizer moved it off zero
    assert all(torch.isfinite(p.grad).all() for p in trainer.model.parameters() if p.grad is not None)


def test_stride_4_post_processing_equals_the_reference() -> None:
    torch.manual_seed(0)
    model = build_model(load_recipe("r50_giam", [*SMALL_MODEL, STRIDE_4])).eval()
    randomize_detail(model)
    with torch.no_grad():
        output = model(torch.randn(2, 3, 128, 160))
    assert output.masks.shape == (2, 10, 32, 40)
    probs = output.masks[0].float().sigmoid()
    assert resize_and_threshold(probs, (128, 160), (120, 150), (250, 310), 0.45) is not None  # the kernel runs
    sizes = {"input_size": (128, 160), "image_sizes": [(120, 150), (128, 101)],
             "original_sizes": [(250, 310), (128, 101)]}
    fast = postprocess(output, **sizes, fast_masks=True)
    reference = postprocess(output, **sizes, fast_masks=False)
    for a, b in zip(fast, reference):
        assert len(a) > 0 and torch.equal(a.masks, b.masks) and torch.equal(a.boxes, b.boxes)
        assert torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)


@pytest.fixture(scope="module")
def stride_4_checkpoint(tmp_path_factory) -> Path:
    """A small ResNet-18 model with masks at stride 4, non-trivial frozen norms and detail layer."""
    predictor = Predictor.from_recipe("r50_giam", overrides=[*SMALL_MODEL, STRIDE_4, "model.backbone.name=resnet18",
                                                             "input.min_size_test=96", "input.max_size_test=128",
                                                             "inference.conf=0.05"], seed=3)
    randomize_frozen_norms(predictor.model)
    randomize_detail(predictor.model)
    path = tmp_path_factory.mktemp("stride4") / "model.safetensors"
    return save_checkpoint(path, predictor.model, predictor.recipe, predictor.categories)


def test_the_fast_path_gives_the_plain_instances_at_stride_4(stride_4_checkpoint: Path) -> None:
    fast = Predictor.from_checkpoint(stride_4_checkpoint)
    plain = Predictor.from_checkpoint(stride_4_checkpoint, fast=False)
    assert plain.model.decoder.mask_stride == 4 and fast.model is not fast.plain_model
    image = shapes_image(90, 120, seed=2)
    a, b = fast([image])[0], plain([image])[0]
    assert len(a) == len(b) > 0 and torch.equal(a.labels, b.labels)
    assert torch.allclose(a.scores, b.scores, atol=1e-4)
    assert (a.masks == b.masks).float().mean() >= 0.999


def test_onnx_export_at_stride_4(stride_4_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from sparseinst_cli.deploy.onnx_export import export_onnx
    from sparseinst_cli.inference.onnx_runtime import OnnxModel

    model = Predictor.from_checkpoint(stride_4_checkpoint, fast=False).model
    exported = export_onnx(stride_4_checkpoint, tmp_path / "model.onnx", size=(64, 96))
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(images)
    actual = OnnxModel(exported)(images)
    assert actual.masks.shape == expected.masks.shape == (1, 10, 16, 24)
    for a, b in zip(expected[:3], actual[:3]):
        torch.testing.assert_close(torch.as_tensor(b), a, rtol=2e-4, atol=2e-4 * float(a.abs().max()))


# ---------------------------------------------------------------- init_from


def test_init_from_a_stride_8_checkpoint_loads_everything_that_fits(tmp_path: Path) -> None:
    source_recipe = load_recipe("r50_giam", SMALL_MODEL)
    torch.manual_seed(1)
    source = build_model(source_recipe).eval()
    randomize_frozen_norms(source)
    names = [f"class_{i}" for i in range(3)]
    path = save_checkpoint(tmp_path / "stride8.safetensors", source, source_recipe,
                           [{"id": i + 1, "name": name} for i, name in enumerate(names)])
    recipe = load_recipe("r50_giam", [*SMALL_MODEL, STRIDE_4, f'model.init_from="{path}"',
                                      f"model.class_names={json.dumps(names)}"])
    torch.manual_seed(0)
    model = build_model(recipe).eval()
    report = initialize_from(model, recipe)
    assert report.reinitialized == [DETAIL] and report.unused == [] and report.fresh_classes == []
    assert len(report.loaded) == len(source.state_dict()) == len(model.state_dict()) - 1
    assert report.fresh_parameters(model) == {DETAIL}
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = source(images), model(images)
    assert torch.equal(a.logits, b.logits)
    torch.testing.assert_close(b.masks, a.masks, rtol=1e-4, atol=1e-4 * float(a.masks.abs().max()))


def test_init_from_an_authors_checkpoint_into_a_stride_4_model(tmp_path: Path) -> None:
    official = random_official_state_dict(official_layout("r50", iam="group", dim=32, kernel_dim=16, num_instances=10),
                                          seed=3)
    path = tmp_path / "sparse_inst_r50_giam.pth"
    torch.save({"model": official}, path)
    narrow = [item for item in SMALL_MODEL if not item.startswith("model.backbone.")]
    recipe = load_recipe("r50_giam", [*narrow, STRIDE_4, "model.num_classes=2", 'model.class_names=["dog", "person"]',
                                      f'model.init_from="{path}"'])
    assert recipe_mask_stride(recipe) == 4
    source = read_source(path, recipe)  # converted strictly at the authors' stride 8
    assert DETAIL not in source.state
    model = build_model(recipe)
    report = transfer(model, source, ["dog", "person"])
    assert report.reinitialized == [DETAIL] and report.unused == [] and report.fresh_classes == []
    assert len(report.loaded) == len(official)


# ---------------------------------------------------------------- the ceiling


def write_coco(path: Path, boxes: list[tuple[int, int, int, int]]) -> Path:
    """One 480 x 640 image whose objects are the given rectangles (x, y, w, h)."""
    annotations = [{"id": k + 1, "image_id": 1, "category_id": 1, "area": w * h, "bbox": [x, y, w, h], "iscrowd": 0,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]} for k, (x, y, w, h) in enumerate(boxes)]
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "1.jpg", "height": HEIGHT, "width": WIDTH}],
                                "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}))
    return path


# One large rectangle and five small ones of 6-8 px, 5-6 px at 384 x 512: under a stride-8 cell.
SMALL_OBJECTS = [(120, 100, 200, 150), (203, 301, 6, 6), (401, 57, 7, 6), (530, 400, 6, 8), (33, 420, 8, 7),
                 (300, 40, 7, 7)]


def test_the_ceiling_is_computed_on_the_recipe_s_mask_grid(tmp_path: Path) -> None:
    path = write_coco(tmp_path / "small.json", SMALL_OBJECTS)
    runner = CliRunner()
    reports = {}
    for recipe in ("finetune_lite", "finetune_small_objects"):
        result = runner.invoke(app, ["data", "ceiling", str(path), "--recipe", recipe, "--out", str(tmp_path / recipe)])
        assert result.exit_code == 0, result.output
        reports[recipe] = json.loads((tmp_path / recipe / "ceiling.json").read_text())
    lite, small = reports["finetune_lite"], reports["finetune_small_objects"]
    assert (lite["mask_stride"], small["mask_stride"]) == (8, 4)
    assert [(s["min_size"], s["max_size"]) for s in small["sizes"]] == [(384, 512)]  # the recipe's test size
    lite_at, small_at = lite["sizes"][0], small["sizes"][0]
    # At stride 8 three of the five small objects stay under IoU 0.5 whatever the logits; at stride 4
    # every one is reached. Perfect ranking: precision 1 up to the recall reached, on 101 points.
    assert lite_at["reached"]["0.5"] == {"all": 50.0, "small": 40.0, "medium": None, "large": 100.0}
    assert small_at["reached"]["0.5"] == {"all": 100.0, "small": 100.0, "medium": None, "large": 100.0}
    assert lite_at["metrics"]["AP50"] == pytest.approx(100 * 51 / 101, abs=1e-3)
    assert small_at["metrics"]["AP50"] == pytest.approx(100.0)
    assert lite_at["metrics"]["APs"] == pytest.approx(16.436, abs=1e-3)
    assert small_at["metrics"]["APs"] == pytest.approx(64.158, abs=1e-3)
    # Without --recipe, as before: stride 8 at the default sizes; the API agrees with the command.
    result = runner.invoke(app, ["data", "ceiling", str(path), "--size", "384", "--out", str(tmp_path / "plain")])
    plain = json.loads((tmp_path / "plain" / "ceiling.json").read_text())
    assert result.exit_code == 0 and plain["mask_stride"] == 8 and plain["sizes"] == lite["sizes"]
    api = mask_ceiling(path, [(384, 512)], 32, mask_stride=4).sizes[0]
    assert api.metrics == small_at["metrics"]


def test_the_ceiling_command_refuses_set_without_a_recipe(tmp_path: Path) -> None:
    path = write_coco(tmp_path / "small.json", SMALL_OBJECTS[:1])
    result = CliRunner().invoke(app, ["data", "ceiling", str(path), "--set", STRIDE_4, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--recipe" in result.output
    with pytest.raises(ValueError, match="mask_stride must be one of 8, 4"):
        mask_ceiling(path, [(384, 512)], 32, mask_stride=2)


# ---------------------------------------------------------------- the recipe


def test_the_small_object_recipe_is_finetune_lite_at_stride_4() -> None:
    small, lite = load_recipe("finetune_small_objects"), load_recipe("finetune_lite")
    assert recipe_mask_stride(small) == 4 and recipe_mask_stride(lite) == 8
    assert "stride-4" in small.description
    changed = small.dump()
    changed["model"]["decoder"]["mask_stride"] = 8
    changed["description"] = lite.description
    assert changed == lite.dump()
    model = build_model(load_recipe("finetune_small_objects", ["model.backbone.weights=null"]))
    assert model.decoder.mask_stride == 4 and DETAIL in model.state_dict()
