"""Faults: kill -9 at random moments of a training run, SIGTERM, and a full disk. After each,
nothing is half-written, --resume goes on, and the model predicts."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from sparseinst_cli.cli.app import app
from sparseinst_cli.cli.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED
from sparseinst_cli.data.demo_data import generate_demo_dataset

from .conftest import TINY_TRAINING, write_clip

STEPS = 8
WAIT = 120  # seconds a run may take on 2 loaded cores before the test gives up


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    generate_demo_dataset(root, train_images=4, val_images=2, size=(64, 64), seed=0)
    return root


def train_command(demo: Path, out: Path, *extra: str) -> list[str]:
    sets = [*TINY_TRAINING, f"data.train.annotations={demo / 'train.json'}", f"data.train.images={demo / 'train'}",
            "train.solver.batch_size=2", f"train.solver.max_iter={STEPS}", *extra]
    return [sys.executable, "-m", "sparseinst_cli", "train", "r50_giam", "--out", str(out),
            *(arg for item in sets for arg in ("--set", item))]


def resume_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "sparseinst_cli", "train", "--out", str(out), "--resume"]


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def finished(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=WAIT)


def steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' not in line]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_a_random_moment_then_resume_and_predict(demo: Path, tmp_path: Path, seed: int) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(train_command(demo, out, "train.checkpoint_period=1"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    wait_for(out / "last.pt", process)
    time.sleep(random.Random(seed).uniform(0.0, 1.5))  # somewhere in the steps, saves and their renames
    assert process.poll() is None, "the run ended before it could be killed"
    process.kill()
    process.wait()

    resumed = finished(resume_command(out))
    if "nothing to resume from" in resumed.stderr:  # killed before any checkpoint landed: start again
        resumed = finished(train_command(demo, tmp_path / "again", "train.checkpoint_period=1"))
        out = tmp_path / "again"
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert not list(out.glob(".*.tmp")), "a temporary file of the killed run was left behind"
    state_step = json.loads((out / "eval.json").read_text()).get("step") if (out / "eval.json").exists() else STEPS
    assert state_step == STEPS
    steps = steps_logged(out)
    assert steps == sorted(set(steps)) and steps[-1] == STEPS  # no duplicated rows from before the kill

    predicted = CliRunner().invoke(app, ["predict", str(demo / "val"), "--weights", str(out / "model.safetensors"),
                                         "--out", str(tmp_path / "pred"), "--no-overlays"])
    assert predicted.exit_code == 0, predicted.output


@pytest.mark.slow
def test_sigterm_saves_exits_143_and_resumes_exactly(demo: Path, tmp_path: Path) -> None:
    straight = finished(train_command(demo, tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "stopped"
    process = subprocess.Popen(train_command(demo, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(out / "metrics.jsonl", process)  # the first step is done (log_period is 1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=WAIT)
    assert process.returncode == EXIT_TERMINATED, stderr
    assert "SIGTERM at step" in stderr and "--resume" in stderr and "Traceback" not in stderr
    stopped_at = int(stderr.split("SIGTERM at step ")[1].split(";")[0])
    assert 1 <= stopped_at < STEPS

    resumed = finished(resume_command(out))
    assert resumed.returncode == 0, resumed.stderr
    expected, actual = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert expected.keys() == actual.keys()
    assert all((expected[k] == actual[k]).all() for k in expected), "resumed weights differ from a straight run"
    assert steps_logged(out) == steps_logged(tmp_path / "straight")


@pytest.mark.slow
@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, EXIT_TERMINATED), (signal.SIGINT, EXIT_INTERRUPTED)])
def test_a_signal_to_the_whole_process_group_stops_cleanly_with_data_workers(demo: Path, tmp_path: Path, signum: int,
                                                                             exit_code: int) -> None:
    """Ctrl-C in a terminal, ``timeout``, systemd and SLURM signal every process of the job, the
    data workers too: the workers leave stopping to the main process, which saves and exits."""
    out = tmp_path / "run"
    process = subprocess.Popen(train_command(demo, out, "train.workers=2", "train.solver.max_iter=400"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(out / "metrics.jsonl", process)
    os.killpg(process.pid, signum)
    _, stderr = process.communicate(timeout=WAIT)
    assert process.returncode == exit_code, stderr
    name = signal.Signals(signum).name
    assert f"{name} at step" in stderr and "Traceback" not in stderr and "DataLoader worker" not in stderr
    stopped_at = int(stderr.split(f"{name} at step ")[1].split(";")[0])
    assert 1 <= stopped_at < 400
    resumed = finished([*resume_command(out), "--set", "train.solver.max_iter=" + str(stopped_at + 2)])
    assert resumed.returncode == 0, resumed.stderr
    assert steps_logged(out)[-1] == stopped_at + 2


def test_a_full_disk_leaves_no_partial_file_and_one_clear_message(demo: Path, tmp_path: Path, monkeypatch) -> None:
    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("sparseinst_cli.files.os.fsync", full)
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["predict", str(demo / "val"), "--recipe", "demo", "--out", str(out)])
    assert result.exit_code == EXIT_FAILED and "no space left on the device" in result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1
    assert [p for p in out.rglob("*") if p.is_file()] == []  # nothing half-written, no temporary left

    evaluated = CliRunner().invoke(app, ["demo-data", str(tmp_path / "demo2"), "--train-images", "1", "--val-images", "1"])
    assert evaluated.exit_code == EXIT_FAILED and "no space left" in evaluated.output
    assert [p for p in (tmp_path / "demo2").rglob("*") if p.is_file()] == []


def test_a_full_disk_under_a_writer_that_hides_its_errno_is_still_named(demo: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    """safetensors raises its own error type on a full disk, and torch.save a bare "unexpected
    pos": both become the one line about the disk, and training ends without a traceback."""
    from safetensors import SafetensorError

    from sparseinst_cli import files

    def safetensors_full(*args, **kwargs) -> None:
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("sparseinst_cli.checkpoint.save_file", safetensors_full)
    sets = [arg for item in (*TINY_TRAINING, f"data.train.annotations={demo / 'train.json'}",
                             f"data.train.images={demo / 'train'}", "train.solver.batch_size=2",
                             "train.solver.max_iter=2") for arg in ("--set", item)]
    out = tmp_path / "run"
    run = CliRunner().invoke(app, ["train", "r50_giam", "--out", str(out), *sets])
    assert run.exit_code == EXIT_FAILED, run.output
    assert "no space left on the device while writing" in run.output and "Traceback" not in run.output
    assert not list(out.glob(".*.tmp"))

    class Full:
        f_bavail, f_frsize = 3, 4096

    def torch_full(path: Path) -> None:
        path.write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(files.os, "statvfs", lambda path: Full())
    with pytest.raises(OSError) as error:
        files.atomic_write(tmp_path / "last.pt", torch_full)
    assert error.value.errno == errno.ENOSPC and not list(tmp_path.glob(".last.pt.*"))
    Full.f_bavail = 10**9  # plenty of room: the writer's own error stands
    with pytest.raises(RuntimeError, match="unexpected pos"):
        files.atomic_write(tmp_path / "last.pt", torch_full)


def test_a_full_disk_while_writing_a_video_names_it_and_leaves_no_half_file(tmp_path: Path, monkeypatch) -> None:
    from sparseinst_cli.inference import video


    clip = write_clip(tmp_path / "clip.mp4", frames=6)

    def full(*args) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(video, "_write_frame", full)
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["predict", str(clip), "--recipe", "demo", "--out", str(out)])
    assert run.exit_code == EXIT_FAILED and "Traceback" not in run.output
    assert f"no space left on the device while writing {out / 'clip.jsonl'}" in " ".join(run.output.split())
    assert not out.exists()  # neither the video nor its records, half-written or not: the empty folder goes too
