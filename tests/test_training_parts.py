"""Training built from parts: a dataset in memory, events a user can follow, the run's files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseinst_cli.checkpoint import load_model
from sparseinst_cli.data.datasets import ImageInfo, Sample
from sparseinst_cli.engine.build import build_training
from sparseinst_cli.engine.callbacks import EVENTS, Callbacks, TrainingStart
from sparseinst_cli.engine.run_directory import (
    MODEL_FILE,
    RECIPE_FILE,
    RUN_FILE,
    STATE_FILE,
)
from sparseinst_cli.engine.run_log import LogWindow
from sparseinst_cli.engine.trainer import Trainer
from sparseinst_cli.errors import SparseInstError
from sparseinst_cli.recipe import load_recipe

from .conftest import TINY_TRAINING

SIZE = 64


class InMemoryShapes:
    """Squares and discs drawn in numpy: a dataset that is nowhere on disk."""

    categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "disc"}]
    class_names = ("square", "disc")

    def __init__(self, count: int) -> None:
        self.samples = [self._draw(seed) for seed in range(count)]
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Sample:
        self.loaded.append(index)
        return self.samples[index]

    def image_info(self, index: int) -> ImageInfo:
        return ImageInfo(index, f"memory:{index}", SIZE, SIZE)

    @staticmethod
    def _draw(seed: int) -> Sample:
        rng = np.random.default_rng(seed)
        image = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
        yy, xx = np.mgrid[:SIZE, :SIZE]
        x, y = rng.integers(8, 24, 2)
        square = ((xx >= x) & (xx < x + 16) & (yy >= y) & (yy < y + 16)).astype(np.uint8)
        cx, cy = rng.integers(36, 52, 2)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 <= 81).astype(np.uint8)
        image[square == 1] = (230, 60, 40)
        image[disc == 1] = (40, 120, 230)
        return Sample(image, np.stack([square, disc]), np.array([0, 1], dtype=np.int64), seed, f"memory:{seed}")


def tiny_recipe(*extra: str):
    return load_recipe("r50_giam", [*TINY_TRAINING, "train.solver.batch_size=2", "train.solver.max_iter=4",
                                    "train.checkpoint_period=2", "train.log_period=2", *extra])


def test_a_run_trains_from_a_dataset_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_disk(*args: object, **kwargs: object) -> None:
        raise AssertionError("the in-memory run read an image file")

    monkeypatch.setattr("sparseinst_cli.data.datasets.read_image", no_disk)
    dataset = InMemoryShapes(4)
    recipe = tiny_recipe()
    assert recipe.data.train is None  # nothing in the recipe names files
    parts = build_training(recipe, train_set=dataset)
    assert parts.recipe.model.num_classes == 2 and parts.recipe.model.class_names == ("square", "disc")
    assert parts.val_set is None and parts.data.dataset is dataset
    before = {name: p.detach().clone() for name, p in parts.model.named_parameters()}

    trainer = Trainer(parts, tmp_path / "run")
    result = trainer.run()

    assert result.step == 4 and not result.interrupted and result.metrics == {}
    assert len(dataset.loaded) == 4 * 2 and set(dataset.loaded) <= {0, 1, 2, 3}
    changed = [name for name, p in parts.model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert len(changed) > 0.9 * len(before)  # every trained layer moved (frozen norms are buffers)
    run = tmp_path / "run"
    assert {MODEL_FILE, STATE_FILE, RECIPE_FILE, RUN_FILE, "metrics.jsonl"} <= {p.name for p in run.iterdir()}
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged] == [2, 4]
    assert all(np.isfinite(entry["loss"]) and entry["loss"] > 0 for entry in logged)
    assert json.loads((run / RUN_FILE).read_text())["train_images"] == 4
    model, checkpoint = load_model(run / MODEL_FILE)
    assert [c["name"] for c in checkpoint.categories] == ["square", "disc"]
    saved, trained = model.state_dict(), trainer.inference_model.state_dict()
    assert all(torch.equal(saved[name], trained[name]) for name in saved)


def test_events_follow_the_run_in_order(tmp_path: Path) -> None:
    seen: list[tuple[str, object]] = []
    callbacks = Callbacks()
    for event in EVENTS:
        callbacks.add(event, lambda trainer, payload, event=event: seen.append((event, payload)))
    trainer = Trainer(build_training(tiny_recipe(), train_set=InMemoryShapes(4)), tmp_path / "run",
                      callbacks=callbacks)
    steps: list[int] = []
    trainer.add_callback("on_step_end", lambda trainer, losses: steps.append(trainer.step))
    result = trainer.run()

    events = [event for event, _ in seen]
    assert events[0] == "on_train_start" and events[-1] == "on_train_end"
    assert events[1] == "on_calibrated"  # a run from scratch calibrates its fresh layers on the first batch
    assert events.count("on_step_end") == 4 and steps == [1, 2, 3, 4]
    assert events.count("on_log") == 2 and events.count("on_checkpoint") == 2  # step 2, and the end
    assert "on_validation_end" not in events  # no validation data
    start = seen[0][1]
    assert isinstance(start, TrainingStart) and (start.step, start.max_iter) == (0, 4)
    assert start.datasets == {} and start.transfer is None and "fp32" in start.precision
    logs = [payload for event, payload in seen if event == "on_log"]
    assert [log["step"] for log in logs] == [2, 4] and all("loss" in log and "lr" in log for log in logs)
    assert [payload for event, payload in seen if event == "on_checkpoint"] == [tmp_path / "run" / STATE_FILE] * 2
    assert seen[-1][1] is result
    losses = [payload for event, payload in seen if event == "on_step_end"]
    assert all(set(entry) >= {"loss", "loss_cls", "loss_dice", "loss_mask", "loss_objectness"} for entry in losses)


def test_a_handler_sees_each_validation(tmp_path: Path) -> None:
    from sparseinst_cli.data.datasets import CocoInstances
    from sparseinst_cli.data.demo_data import generate_demo_dataset

    generate_demo_dataset(tmp_path / "demo", train_images=2, val_images=2, size=(64, 64), seed=0)
    train = CocoInstances(tmp_path / "demo" / "train.json", tmp_path / "demo" / "train", keep_ground_truth=False)
    val = CocoInstances(tmp_path / "demo" / "val.json", tmp_path / "demo" / "val")
    trainer = Trainer(build_training(tiny_recipe("train.solver.max_iter=2"), train_set=train, val_set=val),
                      tmp_path / "run")
    validations: list[tuple[int, float]] = []
    trainer.add_callback("on_validation_end", lambda trainer, metrics: validations.append((trainer.step,
                                                                                           metrics["AP"])))
    result = trainer.run()
    assert validations == [(2, result.metrics["AP"])] and result.metrics["images"] == 2
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["step"] == 2


def test_an_unknown_event_is_named_with_the_closest_one() -> None:
    with pytest.raises(SparseInstError, match="unknown training event 'on_step'.*did you mean 'on_step_end'"):
        Callbacks().add("on_step", lambda trainer, payload: None)


def test_a_log_window_means_each_value_over_the_steps_it_was_finite() -> None:
    window = LogWindow()
    window.add({"loss": 1.0, "grad_norm": math.inf}, images=2)  # an fp16 step skipped for overflow
    window.add({"loss": 3.0, "grad_norm": 4.0}, images=2)
    saved = window.state_dict()
    record = window.record(step=2, lr=0.5)
    assert {key: record[key] for key in ("step", "lr", "loss", "grad_norm")} == {"step": 2, "lr": 0.5, "loss": 2.0,
                                                                                "grad_norm": 4.0}
    assert record["images_per_s"] > 0 and window.state_dict() == {"sums": {}, "counts": {}}
    resumed = LogWindow()
    resumed.load_state_dict(saved)
    assert resumed.record(step=2, lr=0.5)["loss"] == 2.0
    older = LogWindow()  # checkpoints from before per-value counts kept one count of steps
    older.load_state_dict({"sums": {"loss": 6.0}, "steps": 3})
    assert older.record(step=3, lr=0.5)["loss"] == 2.0
