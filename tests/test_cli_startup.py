"""The command line answers at once: help, the version and usage errors load no torch,
torchvision, onnx, OpenVINO, NNCF, numba, OpenCV or numpy (read from ``python -X importtime``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sparseinst_cli.cli.app import app

HEAVY = {"torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "openvino", "nncf", "numba", "cv2", "numpy"}
COMMANDS = sorted(name for name in (c.name for c in app.registered_commands))
GROUPS = {group.name: [c.name for c in group.typer_instance.registered_commands] for group in app.registered_groups}


def imported_modules(*args: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """The top-level packages ``python -X importtime -m sparseinst_cli ARGS`` imports, and its run."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "sparseinst_cli", *args], capture_output=True,
                         text=True, timeout=120)
    lines = [line.split("|")[-1] for line in run.stderr.splitlines() if line.startswith("import time:")]
    return {line.strip().split(".")[0] for line in lines}, run


@pytest.mark.parametrize("args", [
    ["--help"], ["--version"], ["predict", "--bogus"], ["nonsense"], ["eval"],
    *([command, "--help"] for command in COMMANDS),
    *([group, command, "--help"] for group, commands in GROUPS.items() for command in commands),
], ids=" ".join)
def test_help_version_and_usage_errors_load_nothing_heavy(args: list[str]) -> None:
    modules, run = imported_modules(*args)
    assert "typer" in modules, run.stderr[-2000:]  # the reading works: the app itself was imported
    assert run.returncode in (0, 2), run.stderr[-2000:]
    assert not modules & HEAVY, f"{' '.join(args)} imported {sorted(modules & HEAVY)}"


def test_every_command_is_checked() -> None:
    assert {"predict", "models", "eval", "time", "viz-iam", "train", "tide", "convert"} <= set(COMMANDS)
    assert GROUPS["export"] == ["onnx", "int8", "openvino"] and "ceiling" in GROUPS["data"]


def test_the_version_answers() -> None:
    _, run = imported_modules("--version")
    assert run.returncode == 0 and run.stdout.startswith("sparseinst ")
