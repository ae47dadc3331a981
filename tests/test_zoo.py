"""The model zoo against a real HTTP server on 127.0.0.1: download, resume, checks, mirrors,
conversion and the cache, with an authors'-layout checkpoint made here."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import typer
from rich.console import Console
from typer.testing import CliRunner

from components.pretrained import official_to_native
from sparseinst_cli.builder import build_model
from sparseinst_cli.checkpoint import read_checkpoint
from sparseinst_cli.cli.commands.models import models
from sparseinst_cli.cli.progress import PlainCadence, ProgressBar
from sparseinst_cli.errors import WeightsError
from sparseinst_cli.progress import Progress
from sparseinst_cli.recipe import load_recipe
from sparseinst_cli.resources import builtin_recipe_names
from sparseinst_cli.weights import download as download_module
from sparseinst_cli.weights import zoo
from sparseinst_cli.weights.download import DownloadError, download, part_path

from .official_reference import official_layout

NAME = "r50_giam_aug"  # served by the test server; an R-50 G-IAM like the authors'
CUT = 3 << 20  # bytes sent before a cut connection


class FileServer:
    """Serves ``files`` by path, with Range support; ``mode`` makes it misbehave: "cut" (send
    ``CUT`` bytes, then hang up, once), "garbage" (random bytes of the right size), "html",
    "404", "stall" (send ``CUT`` bytes, then nothing)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.mode = files, ""
        self.requests: list[tuple[str, str | None]] = []
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner.handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        self.requests.append((request.path, request.headers.get("Range")))
        body = self.files.get(request.path)
        if body is None or self.mode == "404":
            request.send_error(404)
            return
        if self.mode == "html":
            page = b"<html><body>Too many users have viewed or downloaded this file recently.</body></html>"
            self._headers(request, 200, len(page), "text/html; charset=utf-8")
            request.wfile.write(page)
            return
        if self.mode == "garbage":
            body = torch.randint(0, 256, (len(body),), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
            body = body.numpy().tobytes()
        start = int(request.headers["Range"].removeprefix("bytes=").rstrip("-")) if request.headers["Range"] else 0
        if start >= len(body):
            request.send_error(416)
            return
        self._headers(request, 206 if start else 200, len(body) - start, "application/octet-stream",
                      f"bytes {start}-{len(body) - 1}/{len(body)}" if start else None)
        if self.mode in ("cut", "stall"):
            request.wfile.write(body[start:start + CUT])
            request.wfile.flush()
            if self.mode == "stall":
                self.release.wait(10)
            self.mode = ""
            return
        request.wfile.write(body[start:])

    @staticmethod
    def _headers(request: BaseHTTPRequestHandler, status: int, length: int, kind: str,
                 content_range: str | None = None) -> None:
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(length))
        if content_range:
            request.send_header("Content-Range", content_range)
        request.end_headers()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(authors_checkpoint, tmp_path, monkeypatch) -> Iterator[FileServer]:
    """The authors' file at /drive/NAME.pth, the zoo pointed there, and an empty zoo home."""
    served = FileServer({f"/drive/{NAME}.pth": authors_checkpoint[1]})
    monkeypatch.setattr(zoo, "authors_url", lambda model: f"{served.url}/drive/{model.name}.pth")
    monkeypatch.setenv(zoo.HOME_VARIABLE, str(tmp_path / "home"))
    monkeypatch.delenv(zoo.MIRROR_VARIABLE, raising=False)
    yield served
    served.close()


def drive_requests(server: FileServer) -> list[tuple[str, str | None]]:
    return [r for r in server.requests if r[0].startswith("/drive/")]


def nothing_left(name: str = NAME) -> bool:
    downloaded = zoo.download_path(name)
    return not downloaded.exists() and not zoo.converted_path(name).exists()


class UnitProgress(Progress):
    def __init__(self) -> None:
        self.units: list[str] = []
        self.bytes = 0

    def start(self, task: str, total: int, *, completed: int = 0, unit: str = "img") -> None:
        self.units.append(unit)

    def advance(self, amount: int = 1, *, completed: int | None = None, status: str = "") -> None:
        self.bytes += amount


# --- the catalogue ---------------------------------------------------------------------------


def test_catalogue_lists_every_readme_row() -> None:
    names = [m.name for m in zoo.MODELS]
    assert len(names) == len(set(names)) == 13
    assert names[:3] == ["r50_base", "r50vd_base", "r50_giam"] and names[-1] == "pvt_b2_li_giam"
    assert {m.name for m in zoo.MODELS if not m.available} == {"cspdarknet53_giam", "pvt_b1_giam", "pvt_b2_li_giam"}
    for model in zoo.MODELS:
        assert model.file_id in model.url and model.url.startswith("https://drive.google.com/file/d/")
        assert model.file_id in zoo.authors_url(model) and model.licence == "MIT"
        assert model.recipe is None or model.recipe in builtin_recipe_names()
    default = zoo.find_model(zoo.DEFAULT_MODEL)
    assert default is not None and default.available and "DCN" not in default.backbone
    assert "640" in zoo.find_model("r50vd_dcn_giam_aug").notes and zoo.find_model("r50_giam_soft").ap_test_dev is None


def _authors_layout(name: str) -> dict[str, tuple[int, ...]]:
    arch = "r50vd" if name.startswith("r50vd") else "r101" if name.startswith("r101") else "r50"
    iam = "sigmoid" if "base" in name else "group_softmax" if "soft" in name else "group"
    return official_layout(arch, dcn="_dcn" in name, iam=iam)


@pytest.mark.parametrize("model", [m for m in zoo.MODELS if m.available], ids=lambda m: m.name)
def test_each_recipe_takes_the_authors_checkpoint_of_its_row(model: zoo.ZooModel) -> None:
    layout = _authors_layout(model.name)
    native = official_to_native({k: torch.empty(s, device="meta") for k, s in layout.items()})
    with torch.device("meta"):
        expected = build_model(load_recipe(model.recipe)).state_dict()
    assert {k: tuple(v.shape) for k, v in native.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert load_recipe(model.recipe).train.augmentation.crop == model.augmented


# --- download, conversion and the cache --------------------------------------------------------


def test_pretrained_downloads_converts_and_then_uses_the_cache(server, authors_checkpoint) -> None:
    progress = UnitProgress()
    path = zoo.pretrained(NAME, progress)
    assert path == zoo.converted_path(NAME) and path.is_file()
    assert progress.units == ["B"] and progress.bytes == len(authors_checkpoint[1])
    checkpoint = read_checkpoint(path)
    assert checkpoint.recipe.input.min_size_test == zoo.find_model(NAME).input_size == 608
    assert checkpoint.metadata["converted_from"] == f"{NAME}.pth"
    expected = official_to_native(authors_checkpoint[0])
    for key in ("backbone.stem.conv1.weight", "decoder.iam.group_fc.weight", "decoder.mask_projection.bias"):
        assert torch.equal(checkpoint.state[key], expected[key])
    assert not part_path(zoo.download_path(NAME)).exists()
    asked = len(server.requests)
    assert zoo.pretrained(NAME) == path and zoo.resolve_weights(NAME) == path
    assert len(server.requests) == asked  # no network at all


def test_a_cut_connection_is_resumed_with_a_range_request(server, authors_checkpoint) -> None:
    server.mode = "cut"
    with pytest.raises(WeightsError, match="incomplete") as failure:
        zoo.fetch_checkpoint(zoo.find_model(NAME))
    assert "\n" not in str(failure.value)
    part = part_path(zoo.download_path(NAME))
    assert part.stat().st_size == CUT and not zoo.download_path(NAME).exists()
    path = zoo.fetch_checkpoint(zoo.find_model(NAME))
    assert drive_requests(server)[-1][1] == f"bytes={CUT}-"
    assert path.read_bytes() == authors_checkpoint[1] and not part.exists()


def test_a_stalled_server_times_out_and_keeps_the_part(server, monkeypatch) -> None:
    monkeypatch.setattr(download_module, "TIMEOUT", 0.5)
    server.mode = "stall"
    with pytest.raises(WeightsError, match="timed out"):
        zoo.fetch_checkpoint(zoo.find_model(NAME))
    assert part_path(zoo.download_path(NAME)).stat().st_size == CUT


def test_a_complete_part_gets_416_and_starts_over(server, authors_checkpoint, tmp_path) -> None:
    dest = tmp_path / "file.pth"
    part_path(dest).write_bytes(b"x" * len(authors_checkpoint[1]))  # as long as the file, but wrong
    download(f"{server.url}/drive/{NAME}.pth", dest)
    assert [r[1] for r in drive_requests(server)] == [f"bytes={len(authors_checkpoint[1])}-", None]
    assert dest.read_bytes() == authors_checkpoint[1]


def test_a_corrupt_download_is_refused_and_removed(server) -> None:
    server.mode = "garbage"
    with pytest.raises(WeightsError) as failure:
        zoo.pretrained(NAME)
    message = str(failure.value)
    assert "\n" not in message and str(zoo.download_path(NAME)) in message and "removed" in message
    assert nothing_left() and not part_path(zoo.download_path(NAME)).exists()


def test_size_and_checksum_are_checked(server, authors_checkpoint, tmp_path) -> None:
    url = f"{server.url}/drive/{NAME}.pth"
    with pytest.raises(DownloadError, match="SHA-256") as failure:
        download(url, tmp_path / "a.pth", sha256="0" * 64)
    assert failure.value.kind == "wrong_file" and not (tmp_path / "a.pth").exists()
    assert not part_path(tmp_path / "a.pth").exists()
    with pytest.raises(DownloadError, match="expected"):
        download(url, tmp_path / "b.pth", expected_size=len(authors_checkpoint[1]) - 1)
    good = download(url, tmp_path / "c.pth", expected_size=len(authors_checkpoint[1]),
                    sha256=download_module.file_sha256(download(url, tmp_path / "d.pth")))
    assert good.read_bytes() == authors_checkpoint[1]


# --- mirrors and failures ------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["path", "file_url"])
def test_a_mirror_folder_is_copied_from_and_the_authors_not_asked(server, authors_checkpoint, tmp_path,
                                                                  monkeypatch, form: str) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"{NAME}.pth").write_bytes(authors_checkpoint[1])
    monkeypatch.setenv(zoo.MIRROR_VARIABLE, str(mirror) if form == "path" else mirror.as_uri())
    path = zoo.fetch_checkpoint(zoo.find_model(NAME))
    assert path == zoo.download_path(NAME) and path.read_bytes() == authors_checkpoint[1]
    assert (mirror / f"{NAME}.pth").read_bytes() == authors_checkpoint[1] and server.requests == []


def test_a_mirror_url_is_asked_first_and_a_404_falls_through(server, authors_checkpoint, monkeypatch) -> None:
    server.files[f"/mirror/{NAME}.pth"] = authors_checkpoint[1]
    monkeypatch.setenv(zoo.MIRROR_VARIABLE, f"{server.url}/mirror/")
    assert zoo.fetch_checkpoint(zoo.find_model(NAME)).read_bytes() == authors_checkpoint[1]
    assert [r[0] for r in server.requests] == [f"/mirror/{NAME}.pth"]
    zoo.download_path(NAME).unlink()
    del server.files[f"/mirror/{NAME}.pth"]
    assert zoo.fetch_checkpoint(zoo.find_model(NAME)).read_bytes() == authors_checkpoint[1]
    assert [r[0] for r in server.requests[1:]] == [f"/mirror/{NAME}.pth", f"/drive/{NAME}.pth"]


def test_offline_is_one_line_saying_where_to_put_the_file(server, monkeypatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/drive/{NAME}.pth"
    monkeypatch.setattr(zoo, "authors_url", lambda model: dead)
    with pytest.raises(WeightsError) as failure:
        zoo.pretrained(NAME)
    message = str(failure.value)
    assert "\n" not in message and dead in message and str(zoo.download_path(NAME)) in message
    assert zoo.MIRROR_VARIABLE in message and zoo.find_model(NAME).url in message
    assert nothing_left()


def test_a_server_that_404s_everything_is_reported_with_every_url(server, monkeypatch) -> None:
    server.mode = "404"
    monkeypatch.setenv(zoo.MIRROR_VARIABLE, f"{server.url}/mirror")
    with pytest.raises(WeightsError) as failure:
        zoo.pretrained(NAME)
    message = str(failure.value)
    assert f"{server.url}/mirror/{NAME}.pth: HTTP 404" in message and f"{server.url}/drive/{NAME}.pth: HTTP 404" in message
    assert nothing_left()


def test_a_web_page_instead_of_the_file_is_refused(server) -> None:
    server.mode = "html"
    with pytest.raises(WeightsError, match="web page") as failure:
        zoo.pretrained(NAME)
    assert "\n" not in str(failure.value)
    assert nothing_left() and not part_path(zoo.download_path(NAME)).exists()


@pytest.mark.parametrize("name", ["cspdarknet53_giam", "pvt_b1_giam", "pvt_b2_li_giam"])
def test_architectures_not_implemented_are_refused_clearly(server, name: str) -> None:
    with pytest.raises(WeightsError, match="backbone is not implemented") as failure:
        zoo.resolve_weights(name)
    assert zoo.find_model(name).backbone in str(failure.value) and server.requests == []


# --- resolve_weights -------------------------------------------------------------------------------


def test_resolve_weights_leaves_paths_alone_and_suggests_names(server, tmp_path, monkeypatch) -> None:
    existing = tmp_path / NAME  # a file named like a model is a file
    existing.write_bytes(b"")
    assert zoo.resolve_weights(existing) == existing and zoo.resolve_weights(str(existing)) == existing
    assert zoo.resolve_weights("missing/model.safetensors") == Path("missing/model.safetensors")
    assert zoo.is_model_name(NAME) and not zoo.is_model_name(f"{NAME}.pth")
    monkeypatch.chdir(tmp_path)
    assert not zoo.is_model_name(NAME)
    with pytest.raises(WeightsError, match=r"'r50_giam_agu': no such file, and not a model name .*did you mean "
                                           r"'r50_giam_aug'\?") as failure:
        zoo.resolve_weights("r50_giam_agu")
    assert failure.value.setting == "weights" and server.requests == []


def test_resolve_weights_on_a_name_fetches_from_the_mirror_and_converts(server, authors_checkpoint, tmp_path,
                                                                       monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"{NAME}.pth").write_bytes(authors_checkpoint[1])
    monkeypatch.setenv(zoo.MIRROR_VARIABLE, str(mirror))
    path = zoo.resolve_weights(NAME)
    assert path == zoo.converted_path(NAME) and read_checkpoint(path).recipe.input.min_size_test == 608
    assert server.requests == [] and (mirror / f"{NAME}.pth").is_file()


# --- the command and the progress display -------------------------------------------------------


def test_models_command_lists_every_model_and_writes_json(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(zoo.HOME_VARIABLE, str(tmp_path / "home"))
    zoo.converted_path("r50_giam").parent.mkdir(parents=True)
    zoo.converted_path("r50_giam").write_bytes(b"")
    app = typer.Typer()
    app.command()(models)
    result = CliRunner().invoke(app, ["--json", str(tmp_path / "models.json")])
    assert result.exit_code == 0, result.output
    for model in zoo.MODELS:
        assert model.name in result.output
    assert "not available here" in result.output and str(tmp_path / "home") in result.output
    data = json.loads((tmp_path / "models.json").read_text())
    assert [row["name"] for row in data["models"]] == [m.name for m in zoo.MODELS]
    assert data["default_model"] == zoo.DEFAULT_MODEL
    rows = {row["name"]: row for row in data["models"]}
    assert rows["r50_giam"]["cached"] and not rows[NAME]["cached"]
    assert rows[NAME]["url"] == zoo.find_model(NAME).url and rows[NAME]["licence"] == "MIT"
    assert set(rows[NAME]) >= {"recipe", "backbone", "input_size", "augmented", "ap_val", "ap_test_dev", "fps_2080ti",
                               "file_id", "sha256", "size", "notes"}


def test_models_name_shows_one_model_with_its_source(tmp_path, monkeypatch) -> None:
    from sparseinst_cli.cli.app import app as real_app

    monkeypatch.setenv(zoo.HOME_VARIABLE, str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    model = zoo.find_model("r50vd_dcn_giam_aug")
    card = CliRunner().invoke(real_app, ["models", model.name])
    assert card.exit_code == 0, card.output
    for text in (model.url, "37.4", "37.9", "MIT", "608", str(zoo.converted_path(model.name)), "(not yet)",
                 "38.1 AP test-dev"):
        assert text in card.output, text
    typo = CliRunner().invoke(real_app, ["models", "r50_gam"])
    assert typo.exit_code == 2 and "did you mean 'r50_giam'?" in typo.output
    listed = CliRunner().invoke(real_app, ["models"])
    assert listed.exit_code == 0 and "MIT" in listed.output and "sparseinst models NAME" in listed.output


def test_plain_progress_of_a_download_is_in_megabytes() -> None:
    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    with ProgressBar(console, PlainCadence(steps=1)) as progress:
        progress.start("downloading r50_giam_aug", 4_000_000, unit="B")
        progress.advance(2_000_000)
    line = console.file.getvalue().splitlines()[0]
    assert line.startswith("downloading r50_giam_aug: 2.0/4.0 MB ") and "MB/s" in line


def test_the_zoo_and_the_models_command_import_no_torch() -> None:
    code = "import sys, sparseinst_cli.weights.zoo, sparseinst_cli.cli.commands.models; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
