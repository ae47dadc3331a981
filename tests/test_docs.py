"""The documentation site: it builds in strict mode (a broken link, anchor or API reference
fails), its generated reference pages hold what the code has, and the guides' shell blocks run.

Shell blocks. Every fenced ```bash block of ``GUIDES`` runs line by line (``bash -e -o pipefail
-c LINE``; a line ending in ``\\`` joins the next, ``#`` comment lines are left out), 180 s at
most a line, in a sandbox folder of its own page, with the venv's ``sparseinst`` first on PATH.
Each page starts from a fresh copy of this sandbox:

    data/demo/                    the demo dataset at 64x64: train.json, train/ (4 images),
                                  val.json, val/ (4 images: 000000.png ... 000003.png)
    runs/demo/model.safetensors   a randomly initialized ``demo`` model with the demo classes
                                  (circle, triangle, square, star), predicting at 64x64
    photos/                       photo1.jpg, photo2.jpg, photo3.jpg (demo images)
    street.mp4                    a 6-frame 64x64 video of moving shapes
    labelme/                      a LabelMe folder: scene.png and scene.json (one "car" polygon)
    yolo/images/scene.jpg, yolo/labels/scene.txt, yolo/data.yaml
                                  an Ultralytics dataset with one class ("car") and one polygon
    --weights r50_giam_aug        works offline: SPARSEINST_HOME is an empty cache shared by the
                                  pages and SPARSEINST_MIRROR holds a random r50_giam_aug.pth in
                                  the authors' layout

A block right after a line ``<!-- docs-test: skip, REASON -->`` is only syntax-checked
(``bash -n``); REASON is one of ``SKIP_REASONS``. A block skipped as the quick start must be the
README's quick-start block, which CI runs (.ci/run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest

from .conftest import random_checkpoint, write_clip

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDES = ("getting-started.md", "predicting.md", "data.md")
PLACEHOLDER = "This page is being written."
MIN_BLOCKS = 10  # the guides hold at least this many shell blocks, once written
LINE_TIMEOUT = 180
QUICK_START = "the quick start, run by CI from the README"
SKIP_REASONS = ("needs internet", "needs a GPU", "needs a camera", "needs a stream", QUICK_START)
SKIP_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*skip,\s*(.+?)\s*-->\s*$")
BASH_FENCE = re.compile(r"^(\s*)```bash\s*$")
DEMO_SIZE = 64
ZOO_MODEL = "r50_giam_aug"


# --- the site ---------------------------------------------------------------------------------

def test_the_site_builds_strictly(tmp_path: Path) -> None:
    for module in ("mkdocs", "material", "mkdocstrings"):
        pytest.importorskip(module, reason="the docs tools come with the dev extra: pip install -e '.[dev]'")
    site = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert run.returncode == 0, run.stderr[-4000:]

    pages = {path: path.read_text(encoding="utf-8") for path in site.rglob("*.html")}
    leftover = [str(path.relative_to(site)) for path, html in pages.items() if "<!-- generate:" in html]
    assert not leftover, f"placeholders left in {leftover}"

    cli = page_text(site / "reference/cli/index.html")
    missing = [name for name in command_names() if name not in cli]
    assert not missing and "--conf" in cli, f"the CLI reference lacks {missing}"

    from components.registry import iter_components

    components = (site / "reference/components/index.html").read_text(encoding="utf-8")
    missing = [f"{family} {name}" for family, name, _ in iter_components() if f'id="{family}-{name}"' not in components]
    assert not missing, f"the components reference lacks {missing}"

    from sparseinst_cli.resources import builtin_recipe_names

    recipes = (site / "reference/recipes/index.html").read_text(encoding="utf-8")
    missing = [name for name in builtin_recipe_names() if f'id="recipe-{name.replace("/", "-")}"' not in recipes]
    assert not missing, f"the recipes reference lacks {missing}"
    assert 'id="schema-train-solver"' in recipes and "warmup_iters" in recipes

    from sparseinst_cli.weights.zoo import MODELS

    zoo = page_text(site / "zoo/index.html")
    assert not [model.name for model in MODELS if model.name not in zoo], "the model zoo page lacks models"

    api = (site / "reference/api/index.html").read_text(encoding="utf-8")
    documented = re.findall(r"^::: (\S+)", (DOCS / "reference/api.md").read_text(encoding="utf-8"), re.M)
    assert len(documented) >= 20
    assert not [name for name in documented if f'id="{name}"' not in api], "the API reference lacks objects"


def page_text(path: Path) -> str:
    return unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


def command_names() -> list[str]:
    """``sparseinst``, ``sparseinst predict``, ``sparseinst export onnx``... every visible command."""
    import typer

    from sparseinst_cli.cli.app import app

    names: list[str] = []

    def walk(command, path: str) -> None:
        names.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "sparseinst")
    return names


# --- the shell blocks -------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    body: str
    skip: str | None  # the reason, for a block only syntax-checked


def shell_blocks(page: str, text: str) -> list[Block]:
    """The page's ```bash blocks; a skip marker that is malformed or not right above one fails."""
    lines = text.splitlines()
    blocks, index = [], 0
    while index < len(lines):
        line = lines[index]
        if line.lstrip().startswith("<!-- docs-test"):
            marker = SKIP_MARKER.match(line)
            assert marker and marker.group(1) in SKIP_REASONS, (
                f"{page}:{index + 1}: write <!-- docs-test: skip, REASON --> with REASON one of {SKIP_REASONS}")
            assert index + 1 < len(lines) and BASH_FENCE.match(lines[index + 1]), (
                f"{page}:{index + 1}: a skip marker goes on the line right above a ```bash block")
        fence = BASH_FENCE.match(line)
        if fence is None:
            index += 1
            continue
        indent, start = fence.group(1), index
        body = []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index].removeprefix(indent))
            index += 1
        assert index < len(lines), f"{page}:{start + 1}: the ```bash block is not closed"
        marker = SKIP_MARKER.match(lines[start - 1]) if start else None
        blocks.append(Block(page, start + 1, "\n".join(body), marker.group(1) if marker else None))
        index += 1
    return blocks


def commands(body: str) -> list[str]:
    """A block's commands: ``\\``-continued lines joined, blank and comment lines left out."""
    found, pending = [], ""
    for line in body.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        found.append(pending + line)
        pending = ""
    if pending.strip():
        found.append(pending)
    return found


def readme_quick_start() -> str:
    """The fenced block after ``<!-- ci: quickstart -->`` in README.md, as .ci/run reads it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- ci: quickstart -->\s*\n```[^\n]*\n(.*?)\n```", text, re.S)
    assert match, "README.md has no quick-start block after <!-- ci: quickstart -->"
    return match.group(1)


def is_placeholder(text: str) -> bool:
    return PLACEHOLDER in text and len([line for line in text.splitlines() if line.strip()]) <= 2


def test_every_shell_block_runs(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> None:
    written = {page: text for page in GUIDES
               if not is_placeholder(text := (DOCS / page).read_text(encoding="utf-8"))}
    if not written:
        pytest.skip(f"{', '.join(GUIDES)} are still placeholders")
    blocks = [block for page, text in written.items() for block in shell_blocks(page, text)]
    assert len(blocks) >= MIN_BLOCKS, f"{', '.join(written)} hold {len(blocks)} ```bash blocks, fewer than {MIN_BLOCKS}"

    failures = []
    for block in blocks:
        where = f"{block.page}:{block.line}"
        check = subprocess.run(["bash", "-n", "-c", block.body], capture_output=True, text=True, timeout=30)
        if check.returncode:
            failures.append(f"{where}: not valid bash: {check.stderr.strip()}")
        if block.skip == QUICK_START and block.body.strip() != readme_quick_start().strip():
            failures.append(f"{where}: differs from the README's quick-start block")
    assert not failures, "\n".join(failures)

    runnable = [block for block in blocks if block.skip is None]
    if not runnable:
        return
    base = tmp_path_factory.mktemp("docs-sandbox")
    template = make_sandbox(base / "template")
    env = sandbox_env(base, request.getfixturevalue("authors_checkpoint")[1])
    for page in written:
        folder = base / page.removesuffix(".md")
        shutil.copytree(template, folder)
        for block in (block for block in runnable if block.page == page):
            for command in commands(block.body):
                failure = run_line(command, folder, env)
                if failure:
                    failures.append(f"{page}:{block.line}: {failure}")
    assert not failures, "\n\n".join(failures)


def run_line(command: str, cwd: Path, env: dict[str, str]) -> str | None:
    """None when ``command`` exits 0, else what went wrong."""
    try:
        run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=LINE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"`{command}` ran past {LINE_TIMEOUT} s"
    if run.returncode == 0:
        return None
    return f"`{command}` exited {run.returncode}:\n{(run.stdout + run.stderr)[-2000:]}"


def sandbox_env(base: Path, authors_bytes: bytes) -> dict[str, str]:
    mirror = base / "mirror"
    mirror.mkdir()
    (mirror / f"{ZOO_MODEL}.pth").write_bytes(authors_bytes)
    (base / "zoo-home").mkdir()
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "SPARSEINST_HOME": str(base / "zoo-home"), "SPARSEINST_MIRROR": str(mirror), "MPLBACKEND": "Agg"}


def make_sandbox(folder: Path) -> Path:
    """The files the guides' commands use (see the top of this file)."""
    from sparseinst_cli.data.demo_data import DEMO_CLASSES, generate_demo_dataset
    from sparseinst_cli.data.images import read_image, write_image

    demo = generate_demo_dataset(folder / "data/demo", train_images=4, val_images=4, size=(DEMO_SIZE, DEMO_SIZE))
    names = ", ".join(f'"{name}"' for name in DEMO_CLASSES)
    for sub in ("runs/demo", "photos", "labelme", "yolo/images", "yolo/labels"):
        (folder / sub).mkdir(parents=True)
    random_checkpoint(folder / "runs/demo/model.safetensors", "demo", [
        f"input.min_size_test={DEMO_SIZE}", f"input.max_size_test={DEMO_SIZE}",
        f"model.num_classes={len(DEMO_CLASSES)}", f"model.class_names=[{names}]"], seed=0)

    images = sorted(demo.val_dir.glob("*.png"))
    for number, image in enumerate(images[:3], 1):
        write_image(folder / "photos" / f"photo{number}.jpg", read_image(image))
    write_clip(folder / "street.mp4", frames=6, size=(DEMO_SIZE, DEMO_SIZE))

    scene = read_image(images[0])
    write_image(folder / "labelme/scene.png", scene)
    polygon = [[10, 10], [40, 12], [44, 40], [12, 44]]
    (folder / "labelme/scene.json").write_text(json.dumps({
        "version": "5.4.1", "flags": {}, "imagePath": "scene.png", "imageData": None,
        "imageHeight": DEMO_SIZE, "imageWidth": DEMO_SIZE,
        "shapes": [{"label": "car", "points": polygon, "group_id": None, "shape_type": "polygon", "flags": {}}],
    }))
    write_image(folder / "yolo/images/scene.jpg", scene)
    normalized = " ".join(f"{value / DEMO_SIZE:.4f}" for point in polygon for value in point)
    (folder / "yolo/labels/scene.txt").write_text(f"0 {normalized}\n")
    (folder / "yolo/data.yaml").write_text("path: .\ntrain: images\nval: images\nnames:\n  0: car\n")
    return folder
