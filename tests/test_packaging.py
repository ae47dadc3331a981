"""A wheel built from the project carries the built-in recipes and sample images, and its
``sparseinst`` runs the main job from outside the checkout, installed without ``-e``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "sparseinst_cli", "components", "recipes", "samples")
TIMEOUT = 600  # seconds per step; each takes seconds to a minute on 2 cores

pytestmark = pytest.mark.slow  # builds and installs a wheel


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of its sources (the checkout stays untouched)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        origin = PROJECT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / name)
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), "."], source)
    return next(dist.glob("sparseinst-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> Path:
    """A fresh environment with the wheel installed (no ``-e``); its dependencies come from this
    environment's site-packages, whose editable install of the project is left out."""
    env = tmp_path_factory.mktemp("env")
    run([sys.executable, "-m", "venv", str(env)], env)
    python = env / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env).stdout.strip())
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], env)
    return env


def test_the_wheel_holds_recipes_and_samples(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_recipes = {p.relative_to(PROJECT / "recipes").as_posix() for p in (PROJECT / "recipes").rglob("*.toml")}
    assert {f"sparseinst_cli/recipes/{name}" for name in shipped_recipes} <= names
    assert "sparseinst_cli/recipes/ablations/table4_group1.toml" in names
    assert "sparseinst_cli/samples/shapes.png" in names
    modules = {p.relative_to(PROJECT).as_posix() for package in ("sparseinst_cli", "components")
               for p in (PROJECT / package).rglob("*.py")}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"


def test_the_installed_command_runs_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    command = str(installed / "bin" / "sparseinst")
    location = run([str(installed / "bin" / "python"), "-c", "import sparseinst_cli; print(sparseinst_cli.__file__)"],
                   tmp_path).stdout.strip()
    assert Path(location).is_relative_to(installed) and not Path(location).is_relative_to(PROJECT)

    recipes = run([command, "recipes"], tmp_path).stdout.split()
    assert {"demo", "r50_giam", "finetune_lite", "ablations/table4_group1"} <= set(recipes)
    assert "resnet50" in run([command, "components", "backbone"], tmp_path).stdout
    resolved = json.loads(run([command, "recipes", "r50vd_dcn_giam"], tmp_path).stdout)  # extends two built-ins
    assert resolved["model"]["backbone"]["deform_stages"] == [4, 5]

    run([command, "predict", "--recipe", "demo", "--out", "predictions", "--no-overlays"], tmp_path)
    summary = json.loads((tmp_path / "predictions" / "summary.json").read_text())
    assert [Path(image["file_name"]).name for image in summary["images"]] == ["shapes.png"]
    assert summary["failed"] == 0 and summary["images"][0]["height"] > 0


def test_the_installed_command_trains_the_demo(installed: Path, tmp_path: Path) -> None:
    """The README's main job (demo data, then ``train demo``), shortened to two steps."""
    command = str(installed / "bin" / "sparseinst")
    run([command, "demo-data", "data/demo", "--train-images", "4", "--val-images", "2"], tmp_path)
    run([command, "train", "demo", "--out", "runs/demo", "--set", "train.solver.max_iter=2",
         "--set", "train.workers=0"], tmp_path)
    assert (tmp_path / "runs" / "demo" / "model.safetensors").stat().st_size > 0
    assert json.loads((tmp_path / "runs" / "demo" / "eval.json").read_text())["step"] == 2
