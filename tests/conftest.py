"""Shared fixtures and helpers: narrow models with the real structure (so tests stay fast on CPU),
a random checkpoint, tiny training settings and their demo data, COCO files and video clips."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sparseinst_cli.progress import Progress

# Narrow but structurally complete: every stage, branch and IAM is there, just thinner.
SMALL_MODEL = [
    "model.backbone.stem_width=8",
    "model.backbone.base_width=8",
    "model.encoder.channels=32",
    "model.decoder.inst_width=32",
    "model.decoder.mask_width=32",
    "model.decoder.kernel_dim=16",
    "model.decoder.num_instances=10",
    "model.num_classes=3",
]


# A narrow model, small fixed-size images, no randomness in the augmentation: training in seconds.
TINY_TRAINING = [
    "model.backbone.name=resnet18",
    "model.backbone.stem_width=16",
    "model.backbone.base_width=16",
    "model.encoder.channels=32",
    "model.decoder.inst_width=32",
    "model.decoder.mask_width=32",
    "model.decoder.kernel_dim=16",
    "model.decoder.num_instances=8",
    "model.decoder.inst_depth=2",
    "model.decoder.mask_depth=2",
    "input.min_size_test=64",
    "input.max_size_test=64",
    "train.augmentation.min_sizes=[64]",
    "train.augmentation.max_size=64",
    "train.augmentation.flip=false",
    "train.workers=0",
    "train.log_period=1",
    "train.solver.lr=1e-3",
    "train.solver.lr_scaling=none",
    "train.solver.warmup_iters=0",
    "train.solver.lr_steps=[1000]",
]

COCO_SIZE = (40, 60)  # (height, width) of make_coco's default image
RECT = [10, 5, 30, 5, 30, 25, 10, 25]  # x from 10 to 30, y from 5 to 25: 20 x 20 pixels (pycocotools)

CLIP_FRAMES, CLIP_SIZE, CLIP_FPS = 24, (96, 128), 12.0  # write_clip's video: frames, (height, width), rate


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def authors_checkpoint() -> tuple[dict[str, torch.Tensor], bytes]:
    """A random R-50 G-IAM state dict and its bytes as the authors save it (~130 MB, made once):
    what the model zoo downloads for r50_giam_aug."""
    from .official_reference import official_layout, random_official_state_dict

    state = random_official_state_dict(official_layout("r50", iam="group"), seed=3)
    buffer = io.BytesIO()
    torch.save({"model": state, "iteration": 269999, "__author__": "detectron2"}, buffer)
    return state, buffer.getvalue()


def shapes_image(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image with a few filled shapes on noise."""
    import cv2

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.circle(image, (width // 3, height // 2), min(height, width) // 5, (220, 40, 40), -1)
    cv2.rectangle(image, (width // 2, height // 4), (width - 10, height - 10), (30, 160, 230), -1)
    return image


class RecordingProgress(Progress):
    """Keeps every call the library makes, for tests of what long work reports."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.done = 0

    def start(self, task: str, total: int, *, completed: int = 0, unit: str = "img") -> None:
        self.events.append(("start", task, total, completed))
        self.done = completed

    def advance(self, amount: int = 1, *, completed: int | None = None, status: str = "") -> None:
        self.done = completed if completed is not None else self.done + amount
        self.events.append(("advance", self.done))

    def note(self, message: str) -> None:
        self.events.append(("note", message))

    def stop(self) -> None:
        self.events.append(("stop",))


def random_checkpoint(path: Path, recipe: str = "r50_giam", overrides: Sequence[str] = (), *, seed: int = 0,
                      categories: list[dict] | None = None, frozen_norms: bool = False) -> Path:
    """``path``: a checkpoint of ``recipe`` with random (seeded) weights, the recipe's classes or
    ``categories``; ``frozen_norms`` gives the frozen batch norms statistics worth folding."""
    from sparseinst_cli.checkpoint import save_checkpoint
    from sparseinst_cli.inference.predictor import Predictor

    predictor = Predictor.from_recipe(recipe, overrides=overrides, seed=seed)
    if frozen_norms:
        randomize_frozen_norms(predictor.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, predictor.model, predictor.recipe, categories or predictor.categories)


@torch.no_grad()
def randomize_frozen_norms(model: torch.nn.Module) -> None:
    """Give every frozen batch norm non-trivial statistics, so folding has something to fold."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            n = module.weight.numel()
            module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A demo dataset of six 64x64 training and two validation images, for TINY_TRAINING runs."""
    from sparseinst_cli.data.demo_data import generate_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(root, train_images=6, val_images=2, size=(64, 64), seed=0)
    return root


def recipe_for(demo: Path, *extra: str, annotations: str = "train.json") -> Any:
    """A TINY_TRAINING recipe on the ``demo`` data (``annotations``: another file of its training images)."""
    from sparseinst_cli.recipe import load_recipe

    data = [f"data.train.annotations={demo / annotations}", f"data.train.images={demo / 'train'}",
            f"data.val.annotations={demo / 'val.json'}", f"data.val.images={demo / 'val'}"]
    return load_recipe("r50_giam", [*TINY_TRAINING, *data, *extra])


class StopAfter:
    """Stands in for Ctrl-C arriving during step ``step`` (a ``StopRequest``)."""

    def __init__(self, trainer: Any, step: int) -> None:
        self.trainer, self.step = trainer, step

    @property
    def requested(self) -> bool:
        return self.trainer.step >= self.step


def make_coco(
    root: Path,
    images: list[dict] | None = None,
    annotations: list[dict] | None = None,
    categories: list[dict] | None = None,
    write: bool = True,
) -> tuple[Path, Path]:
    """A COCO JSON and PNG images (noise, seeded by id) under ``root``; returns (json, image folder)."""
    from sparseinst_cli.data.images import write_image

    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    height, width = COCO_SIZE
    images = [{"id": 1, "file_name": "a.png", "height": height, "width": width}] if images is None else images
    for entry in images:
        if write and isinstance(entry, dict) and "file_name" in entry and "height" in entry:
            rng = np.random.default_rng(entry.get("id", 0))
            pixels = rng.integers(0, 256, (entry["height"], entry["width"], 3), dtype=np.uint8)
            write_image(folder / entry["file_name"], pixels)
    data = {
        "images": images,
        "annotations": annotations or [],
        "categories": categories or [{"id": 1, "name": "thing"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path, folder


def ann(ann_id: int, segmentation: Any, image_id: int = 1, category_id: int = 1, **extra: Any) -> dict:
    """A COCO annotation."""
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": segmentation, **extra}


def write_clip(path: Path, frames: int = CLIP_FRAMES, size: tuple[int, int] = CLIP_SIZE) -> Path:
    """A video of two moving shapes, ``size`` (height, width), written with OpenCV (BGR)."""
    import cv2

    height, width = size
    scale_y, scale_x = height / CLIP_SIZE[0], width / CLIP_SIZE[1]

    def at(x: float, y: float) -> tuple[int, int]:
        return round(x * scale_x), round(y * scale_y)

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), CLIP_FPS, (width, height))
    for i in range(frames):
        frame = np.full((height, width, 3), 30, np.uint8)
        cv2.circle(frame, at(16 + 3 * i, 48), round(14 * min(scale_x, scale_y)), (0, 200, 255), -1)
        cv2.rectangle(frame, at(80, 8 + 2 * i), at(112, 36 + 2 * i), (255, 80, 0), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="session")
def small_demo_checkpoint(tmp_path_factory) -> Path:
    """A random ``demo`` checkpoint predicting at 96x128: quick enough for every frame of a clip."""
    return random_checkpoint(tmp_path_factory.mktemp("small_demo") / "model.safetensors", "demo",
                             ["input.min_size_test=96", "input.max_size_test=128"], seed=1)
