"""Shared test helpers: narrow models with the real structure, so tests stay fast on CPU."""

from __future__ import annotations

import io

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
