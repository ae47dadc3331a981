"""The best checkpoint and early stopping: best.safetensors holds the weights of the validation
with the highest mask AP (the EMA's when kept), train.patience stops a run after that many
validations without a higher one, and --resume keeps both."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from typer.testing import CliRunner

from sparseinst_cli.checkpoint import load_model, read_checkpoint
from sparseinst_cli.cli.app import app
from sparseinst_cli.engine.curves import curves_figure, read_metrics
from sparseinst_cli.engine.distributed import Process, barrier
from sparseinst_cli.engine.run_directory import (
    BEST_FILE,
    MODEL_FILE,
    RUN_FILE,
    STATE_FILE,
    RunDirectory,
)
from sparseinst_cli.engine.trainer import EarlyStop, Trainer
from sparseinst_cli.recipe import load_recipe

from .conftest import TINY_TRAINING, StopAfter, recipe_for

TINY = ("train.solver.batch_size=2", "train.checkpoint_period=100", "train.calibrate_init=false")


@pytest.fixture
def no_curves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip curves.png (a second per run on a busy CPU) where a test does not look at it."""
    monkeypatch.setattr(RunDirectory, "draw_curves", lambda self: None)


def forced_validation(aps: dict[int, float], calls: list[int] | None = None):
    """A stand-in for ``Trainer.validate`` whose mask AP at each step is ``aps[step]``."""

    def validate(self: Trainer) -> dict:
        barrier(self.process)
        if calls is not None:
            calls.append(self.step)
        if not self.process.is_main:
            return {}
        ap = aps[self.step]
        return {"AP": ap, "AP50": ap + 20, "AP75": ap / 2, "APs": None, "APm": None, "APl": ap, "images": 2,
                "detections": 8, "failures": [], "warnings": []}

    return validate


def run_json(out: Path) -> dict:
    return json.loads((out / RUN_FILE).read_text())


def evaluated_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]


def best_metadata(out: Path) -> dict[str, str]:
    return read_checkpoint(out / BEST_FILE).metadata


def test_best_is_the_highest_real_validation_and_eval_agrees(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = Trainer.from_recipe(recipe_for(demo, *TINY, "train.solver.max_iter=4", "train.eval_period=2"), out).run()

    evaluations = read_metrics(out)[1]
    assert [step for step, _ in evaluations] == [2, 4]
    highest = max(metrics["AP"] for _, metrics in evaluations)
    first_step = next(step for step, metrics in evaluations if metrics["AP"] == highest)
    best = run_json(out)["best"]
    assert best == {"step": first_step, "AP": highest, "AP50": dict(evaluations)[first_step]["AP50"],
                    "path": BEST_FILE}
    assert result.best is not None and (result.best.step, result.best.ap) == (first_step, highest)
    assert result.best_path == out / BEST_FILE and "stopped_early" not in run_json(out)
    metadata = best_metadata(out)
    assert (metadata["step"], float(metadata["AP"]), metadata["weights"]) == (str(first_step), highest, "live")

    scored = CliRunner().invoke(app, ["eval", "--weights", str(out / BEST_FILE), "--data", str(demo / "val.json"),
                                      "--images", str(demo / "val"), "--out", str(tmp_path / "eval")])
    assert scored.exit_code == 0, scored.output
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["AP"] == pytest.approx(highest, abs=0.05)


@pytest.mark.parametrize("ema", [False, True])
def test_best_holds_the_weights_validation_scored(demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  no_curves: None, ema: bool) -> None:
    monkeypatch.setattr(Trainer, "validate", forced_validation({1: 5.0, 2: 12.5, 3: 8.0, 4: 12.5}))
    extra = ("train.ema=true", "train.ema_decay=0.9", "train.ema_warmup=1") if ema else ()
    trainer = Trainer.from_recipe(recipe_for(demo, *TINY, "train.solver.max_iter=4", "train.eval_period=1", *extra),
                                  tmp_path / "run")
    scored: dict[int, dict[str, torch.Tensor]] = {}
    live: dict[int, dict[str, torch.Tensor]] = {}
    trainer.add_callback("on_validation_end", lambda trainer, metrics: (
        scored.__setitem__(trainer.step, {k: v.clone() for k, v in trainer.inference_model.state_dict().items()}),
        live.__setitem__(trainer.step, {k: v.clone() for k, v in trainer.model.state_dict().items()})))
    result = trainer.run()

    assert result.best.step == 2 and result.best.ap == 12.5 and result.best.since == 2  # 12.5 at step 4 is no higher
    assert run_json(tmp_path / "run")["best"] == {"step": 2, "AP": 12.5, "AP50": 32.5, "path": BEST_FILE}
    metadata = best_metadata(tmp_path / "run")
    assert (metadata["step"], metadata["AP"], metadata["weights"]) == ("2", "12.5", "ema" if ema else "live")
    saved = load_file(tmp_path / "run" / BEST_FILE)
    assert saved.keys() == scored[2].keys()
    assert all(torch.equal(saved[name], scored[2][name]) for name in saved)
    moved = [name for name in saved if not torch.equal(saved[name], scored[4][name])]
    assert len(moved) > 20  # not the last weights: those are in model.safetensors
    final = load_file(tmp_path / "run" / MODEL_FILE)
    assert all(torch.equal(final[name], scored[4][name]) for name in final)
    apart = [name for name in saved if saved[name].is_floating_point() and not torch.equal(saved[name], live[2][name])]
    assert bool(apart) == ema  # with EMA, the average, not the live weights of that step
    load_model(tmp_path / "run" / BEST_FILE)  # a native checkpoint, as predict and eval read it


def test_patience_stops_the_run_and_resume_keeps_the_best_and_the_count(demo: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    aps = {1: 5.0, 2: 10.0, 3: 8.0, 4: 10.0, 5: 9.0, 6: 11.0, 7: 3.0}
    calls: list[int] = []
    monkeypatch.setattr(Trainer, "validate", forced_validation(aps, calls))
    out = tmp_path / "run"
    recipe = recipe_for(demo, *TINY, "train.solver.max_iter=20", "train.eval_period=1", "train.patience=2")
    result = Trainer.from_recipe(recipe, out).run()

    # Step 3 is lower and step 4 only equal: two validations without a higher AP.
    assert result.stopped_early == EarlyStop(4, 2) and result.step == 4 and not result.interrupted
    assert calls == [1, 2, 3, 4] and evaluated_steps(out) == [1, 2, 3, 4]  # no second validation at the end
    assert run_json(out)["stopped_early"] == {"step": 4, "patience": 2}
    assert run_json(out)["best"] == {"step": 2, "AP": 10.0, "AP50": 30.0, "path": BEST_FILE}
    assert read_checkpoint(out / MODEL_FILE).metadata["step"] == "4"  # written as at a normal end
    state = torch.load(out / STATE_FILE, weights_only=True)
    assert state["step"] == 4 and state["best"] == {"step": 2, "ap": 10.0, "ap50": 30.0, "since": 2, "validated": 4}
    assert result.metrics["AP"] == 10.0 and (out / "curves.png").is_file()
    best_bytes = (out / BEST_FILE).read_bytes()

    again = Trainer.from_recipe(recipe, out, initialize=False)  # the same patience: stopped already
    again.resume()
    result = again.run()
    assert result.stopped_early == EarlyStop(4, 2) and result.step == 4 and calls == [1, 2, 3, 4]
    assert result.metrics["AP"] == 10.0  # the evaluation of step 4, from eval.json
    assert (out / BEST_FILE).read_bytes() == best_bytes

    longer = Trainer.from_recipe(recipe_for(demo, *TINY, "train.solver.max_iter=20", "train.eval_period=1",
                                            "train.patience=3"), out, initialize=False)
    longer.resume()
    assert (longer.best.step, longer.best.ap, longer.best.since) == (2, 10.0, 2)
    result = longer.run()
    assert result.stopped_early == EarlyStop(5, 3) and calls[-1] == 5  # one more without a higher AP
    assert (out / BEST_FILE).read_bytes() == best_bytes and run_json(out)["best"]["step"] == 2
    assert run_json(out)["stopped_early"] == {"step": 5, "patience": 3}

    free = Trainer.from_recipe(recipe_for(demo, *TINY, "train.solver.max_iter=7", "train.eval_period=1"), out,
                               initialize=False)
    free.resume()
    result = free.run()  # patience 0: never stops early; step 6 is a new best
    assert result.step == 7 and result.stopped_early is None and calls[-2:] == [6, 7]
    assert run_json(out)["best"] == {"step": 6, "AP": 11.0, "AP50": 31.0, "path": BEST_FILE}
    assert "stopped_early" not in run_json(out) and best_metadata(out)["step"] == "6"
    assert result.best.since == 1 and evaluated_steps(out) == [1, 2, 3, 4, 5, 6, 7]


def test_a_best_file_written_after_the_checkpoint_is_kept(demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          no_curves: None) -> None:
    """A kill between best.safetensors and the checkpoint after it: the resumed run knows the file."""
    monkeypatch.setattr(Trainer, "validate", forced_validation({1: 5.0, 2: 10.0, 3: 40.0, 4: 20.0}))
    out = tmp_path / "run"
    recipe = recipe_for(demo, *TINY, "train.solver.max_iter=4", "train.eval_period=1")
    first = Trainer.from_recipe(recipe, out)
    assert first.run(StopAfter(first, 2)).step == 2
    first.run_dir.save_best(first.inference_model, first.recipe, first.categories, step=3, ema=False, ap=40.0,
                            ap50=60.0)  # as the validation of step 3 would have, before a kill
    resumed = Trainer.from_recipe(recipe, out, initialize=False)
    resumed.resume()
    assert (resumed.best.step, resumed.best.ap) == (3, 40.0)
    result = resumed.run()
    assert (result.best.step, result.best.ap, result.best.since) == (3, 40.0, 1)  # step 3 replayed: the same best
    assert best_metadata(out)["step"] == "3" and run_json(out)["best"]["AP"] == 40.0


def test_without_validation_data_there_is_no_best_and_no_stop(demo: Path, tmp_path: Path, no_curves: None) -> None:
    recipe = recipe_for(demo, *TINY, "train.solver.max_iter=3", "train.eval_period=1", "train.patience=1",
                        "train.checkpoint_period=2")
    recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"val": None})})
    checkpoints: list[int] = []
    trainer = Trainer.from_recipe(recipe, tmp_path / "run")
    trainer.add_callback("on_checkpoint", lambda trainer, path: checkpoints.append(trainer.step))
    result = trainer.run()
    assert result.step == 3 and result.stopped_early is None and result.best is None and result.best_path is None
    assert not (tmp_path / "run" / BEST_FILE).exists() and checkpoints == [2, 3]
    assert "best" not in run_json(tmp_path / "run") and "stopped_early" not in run_json(tmp_path / "run")


def test_the_recipe_refuses_a_negative_patience() -> None:
    assert load_recipe("r50_giam").train.patience == 0
    with pytest.raises(Exception, match="patience"):
        load_recipe("r50_giam", ["train.patience=-1"])


def test_curves_mark_the_best_validation_and_the_stop() -> None:
    series = {"loss": [(1, 3.0), (2, 2.0), (3, 1.5), (4, 1.4)], "lr": [(step, 1e-3) for step in range(1, 5)]}
    evaluations = [(1, {"AP": 5.0, "AP50": 25.0}), (2, {"AP": 10.0, "AP50": 30.0}), (3, {"AP": 8.0, "AP50": 28.0}),
                   (4, {"AP": 10.0, "AP50": 30.0})]
    figure = curves_figure(series, evaluations, "run", stopped_early=(4, 2))
    ap_axes = figure.axes[2]
    star = next(line for line in ap_axes.lines if line.get_marker() == "*")
    assert star.get_label() == "best AP 10.0 at step 2" and list(star.get_xdata()) == [2]  # the first of equals
    stops = [line for axes in figure.axes for line in axes.lines if list(line.get_xdata()) == [4, 4]]
    assert len(stops) == 3  # a line across each panel
    assert "stopped early at step 4" in figure.get_suptitle()
    assert any("2 validations without a higher AP" in text.get_text() for text in figure.axes[0].texts)


def test_train_command_reports_the_stop_and_the_best_that_predict_reads(demo: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Trainer, "validate", forced_validation({1: 5.0, 2: 10.0, 3: 8.0, 4: 9.0}))
    sets = [*TINY_TRAINING, f"data.train.annotations={demo / 'train.json'}", f"data.train.images={demo / 'train'}",
            f"data.val.annotations={demo / 'val.json'}", f"data.val.images={demo / 'val'}", *TINY,
            "train.solver.max_iter=9", "train.eval_period=1", "train.patience=2"]
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, ["train", "r50_giam", "--out", str(out), *(a for s in sets for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "stopped early at step 4: 2 validations in a row without a higher mask AP (train.patience=2)" in text
    assert "trained 4 steps" in text
    assert "best: mask AP 10.0, AP50 30.0 at step 2:" in text
    assert str(out / BEST_FILE) in result.output.replace("\n", "")  # a long path may be folded
    assert "step 2: mask AP 10.0 AP50 30.0 AP75 5.0 (new best: best.safetensors) step 3: mask AP 8.0 AP50 28.0 " \
           "AP75 4.0 step 4" in text  # each validation's note says when it is a new best

    image = next((demo / "val").iterdir())
    predicted = runner.invoke(app, ["predict", str(image), "--weights", str(out / BEST_FILE),
                                    "--out", str(tmp_path / "predicted")])
    assert predicted.exit_code == 0, predicted.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, port: int, demo: str, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    Trainer.validate = forced_validation({1: 5.0, 2: 4.0, 3: 3.0})  # only the main process sees an AP
    RunDirectory.draw_curves = lambda self: None
    recipe = recipe_for(Path(demo), *TINY, "train.solver.max_iter=6", "train.eval_period=1", "train.patience=2")
    result = Trainer.from_recipe(recipe, Path(out) / "run", Process(rank, 2, torch.device("cpu"))).run()
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"step": result.step, "stopped": result.stopped_early
                                                            is not None}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_every_process_stops_at_the_main_process_decision(demo: Path, tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(_free_port(), str(demo), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks == [{"step": 3, "stopped": True}] * 2
    assert run_json(tmp_path / "run")["stopped_early"] == {"step": 3, "patience": 2}
    assert best_metadata(tmp_path / "run")["step"] == "1"
