"""Training: learning on one image, exact resume, DDP equivalence, the train command."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from typer.testing import CliRunner

from sparseinst_cli.checkpoint import load_model
from sparseinst_cli.cli.app import app
from sparseinst_cli.engine.distributed import Process
from sparseinst_cli.engine.trainer import Trainer
from sparseinst_cli.errors import TrainingError

from .conftest import TINY_TRAINING, StopAfter, recipe_for


def one_image_subset(demo: Path, index: int, name: str) -> str:
    data = json.loads((demo / "train.json").read_text())
    image = data["images"][index]
    data["images"] = [image]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == image["id"]]
    (demo / name).write_text(json.dumps(data))
    return name


def test_overfitting_one_image_halves_the_loss(demo: Path, tmp_path: Path) -> None:
    subset = one_image_subset(demo, 1, "one.json")
    recipe = recipe_for(demo, "train.solver.batch_size=1", "train.solver.max_iter=40", annotations=subset)
    trainer = Trainer.from_recipe(recipe, tmp_path / "run")
    trainer.run()
    losses = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    totals = [record["loss"] for record in losses if "loss" in record]
    assert len(totals) == 40
    assert sum(totals[-5:]) / 5 <= 0.5 * sum(totals[:5]) / 5
    assert trainer.recipe.model.num_classes == 4
    assert trainer.recipe.model.class_names == ("circle", "triangle", "square", "star")


def test_interrupted_and_resumed_run_matches_a_straight_run(demo: Path, tmp_path: Path) -> None:
    recipe = recipe_for(demo, "train.solver.batch_size=2", "train.solver.max_iter=6", "train.checkpoint_period=100")
    straight = Trainer.from_recipe(recipe, tmp_path / "straight")
    straight.run()

    first = Trainer.from_recipe(recipe, tmp_path / "resumed")
    result = first.run(StopAfter(first, 3))
    assert result.interrupted and result.step == 3
    assert (tmp_path / "resumed" / "last.pt").is_file()
    second = Trainer.from_recipe(recipe, tmp_path / "resumed")
    second.resume()
    assert second.step == 3
    second.run()

    for (name, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert second.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
               if '"loss"' in line] for run in ("straight", "resumed")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)

    model, checkpoint = load_model(tmp_path / "resumed" / "model.safetensors")
    assert checkpoint.metadata["step"] == "6"
    assert [c["name"] for c in checkpoint.categories] == ["circle", "triangle", "square", "star"]


def test_non_finite_loss_names_the_step_and_term(demo: Path, tmp_path: Path) -> None:
    recipe = recipe_for(demo, "train.solver.batch_size=2", "train.solver.max_iter=3")
    trainer = Trainer.from_recipe(recipe, tmp_path / "run")
    with torch.no_grad():
        trainer.model.decoder.mask_projection.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"step 1: non-finite loss in loss_dice"):
        trainer.run()
    assert not (tmp_path / "run" / "last.pt").exists()


def test_clipping_bounds_the_gradient_norm_and_logs_it_before(demo: Path, tmp_path: Path) -> None:
    clip = 0.05
    trainer = Trainer.from_recipe(recipe_for(demo, "train.solver.batch_size=2", f"train.solver.clip_grad_norm={clip}"),
                      tmp_path / "run")
    losses = trainer.train_step([next(iter(trainer.data.loader(trainer.step, trainer.process)))])
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.model.parameters()
                                                  if p.grad is not None]))
    assert losses["grad_norm"] > 10 * clip  # a tiny model's first step: far above the bound
    assert float(after) == pytest.approx(clip, rel=1e-4)
    assert losses["loss"] == pytest.approx(sum(v for k, v in losses.items() if k.startswith("loss_")))


def test_grad_norm_is_logged_as_its_own_mean(demo: Path, tmp_path: Path) -> None:
    recipe = recipe_for(demo, "train.solver.batch_size=2", "train.solver.max_iter=2", "train.log_period=2",
                        "train.solver.clip_grad_norm=0.05")
    Trainer.from_recipe(recipe.model_copy(update={"data": recipe.data.model_copy(update={"val": None})}), tmp_path / "run").run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss" in r]
    assert [r["step"] for r in logged] == [2]
    assert 0.5 < logged[0]["grad_norm"] < 1e4
    assert logged[0]["loss"] == pytest.approx(sum(v for k, v in logged[0].items() if k.startswith("loss_")))


def test_recipe_that_disagrees_with_the_data(demo: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="num_classes: the recipe says 80 but the training data has 4"):
        Trainer.from_recipe(recipe_for(demo, "model.num_classes=80"), tmp_path / "run")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gradients(trainer: Trainer) -> dict[str, torch.Tensor]:
    batches = trainer.data.loader(trainer.step, trainer.process)
    trainer.train_step([next(iter(batches))])
    return {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}


def _ddp_worker(rank: int, port: int, demo: str, subset: str, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    recipe = recipe_for(Path(demo), "train.solver.batch_size=2", annotations=subset)
    trainer = Trainer.from_recipe(recipe, Path(out) / f"rank{rank}", Process(rank, 2, torch.device("cpu")))
    gradients = _gradients(trainer)
    if rank == 0:
        torch.save(gradients, Path(out) / "ddp.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_whole_batch(demo: Path, tmp_path: Path) -> None:
    # Two images with the same number of instances, so per-process means equal the global mean.
    data = json.loads((demo / "train.json").read_text())
    counts = {}
    for annotation in data["annotations"]:
        counts[annotation["image_id"]] = counts.get(annotation["image_id"], 0) + 1
    by_count: dict[int, list[int]] = {}
    for image_id, count in counts.items():
        by_count.setdefault(count, []).append(image_id)
    pair = next(ids[:2] for ids in by_count.values() if len(ids) >= 2)
    data["images"] = [i for i in data["images"] if i["id"] in pair]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in pair]
    (demo / "pair.json").write_text(json.dumps(data))

    mp.spawn(_ddp_worker, args=(_free_port(), str(demo), "pair.json", str(tmp_path)), nprocs=2, join=True)
    distributed = torch.load(tmp_path / "ddp.pt")

    torch.manual_seed(0)
    single = _gradients(Trainer.from_recipe(recipe_for(demo, "train.solver.batch_size=2", annotations="pair.json"),
                                tmp_path / "single"))
    assert distributed.keys() == single.keys() and len(single) > 20
    for name, gradient in single.items():
        scale = float(gradient.abs().max())  # float noise relative to the tensor's own gradients
        assert scale > 0, name
        torch.testing.assert_close(distributed[name], gradient, rtol=1e-3, atol=1e-4 * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_train_command_end_to_end(demo: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    sets = [arg for item in TINY_TRAINING for arg in ("--set", item)]
    data = ["--set", f"data.train.annotations={demo / 'train.json'}", "--set", f"data.train.images={demo / 'train'}",
            "--set", f"data.val.annotations={demo / 'val.json'}", "--set", f"data.val.images={demo / 'val'}"]
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "r50_giam", "--out", str(out), *sets, *data,
                                 "--set", "train.solver.batch_size=2", "--set", "train.solver.max_iter=2"])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "last.pt", "recipe.json", "run.json", "metrics.jsonl", "eval.json"):
        assert (out / name).is_file(), name
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["images"] == 2 and 0 <= evaluation["AP"] <= 100
    assert set(evaluation["per_class"]) == {"circle", "triangle", "square", "star"}

    again = runner.invoke(app, ["train", "r50_giam", "--out", str(out), *sets, *data])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, ["train", "--out", str(out), "--resume", "--set", "train.solver.max_iter=3"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "eval.json").read_text())["step"] == 3

    missing = runner.invoke(app, ["train", "r50_giam", "--out", str(tmp_path / "x"), *sets,
                                  "--set", f"data.train.annotations={tmp_path / 'nope.json'}",
                                  "--set", f"data.train.images={demo / 'train'}"])
    assert missing.exit_code == 2 and "nope.json" in missing.output and "Traceback" not in missing.output
    no_data = runner.invoke(app, ["train", "r50_giam", "--out", str(tmp_path / "y")])
    assert no_data.exit_code == 2 and "data.train" in no_data.output
