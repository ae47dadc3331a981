"""Video, camera and stream prediction, and plain progress lines where there is no terminal."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from sparseinst_cli.cli.app import app
from sparseinst_cli.cli.progress import PlainCadence, ProgressBar
from sparseinst_cli.data.coco import coco_results
from sparseinst_cli.data.images import write_image
from sparseinst_cli.errors import ImageError
from sparseinst_cli.inference.predictor import Predictor
from sparseinst_cli.inference.video import collect_sources, output_stem, predict_video

from .conftest import (
    CLIP_FPS,
    CLIP_FRAMES,
    CLIP_SIZE,
    shapes_image,
    write_clip,
)

FRAMES, (HEIGHT, WIDTH), FPS = CLIP_FRAMES, CLIP_SIZE, CLIP_FPS


def read_frames(path: Path) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path)), []
    while (frame := capture.read())[0]:
        frames.append(frame[1])
    capture.release()
    return frames


@pytest.fixture
def checkpoint(small_demo_checkpoint: Path) -> Path:
    return small_demo_checkpoint


def test_a_video_gives_an_annotated_video_and_one_record_per_frame_equal_to_images(checkpoint, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["predict", str(clip), "--weights", str(checkpoint), "--out", str(out),
                                   "--conf", "0"])  # record every instance, as images do
    assert run.exit_code == 0, run.output
    annotated = read_frames(out / "clip.mp4")
    assert len(annotated) == FRAMES and annotated[0].shape == (HEIGHT, WIDTH, 3)
    records = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert records[3]["time"] == pytest.approx(3 / FPS, abs=1e-3)
    predictor = Predictor.from_checkpoint(checkpoint)
    for index, frame in enumerate(read_frames(clip)):
        expected = coco_results(predictor([frame], bgr=True, conf=0.0)[0], index, predictor.categories)
        got = records[index]["instances"]
        assert len(got) == len(expected) > 0
        assert [r["segmentation"] for r in got] == [r["segmentation"] for r in expected]
        assert [r["score"] for r in got] == [r["score"] for r in expected]
        assert [r["bbox"] for r in got] == [r["bbox"] for r in expected]
        assert [r["category_name"] for r in got] == [predictor.class_names[r["category_id"] - 1] for r in expected]
    summary = json.loads((out / "videos.json").read_text())
    assert summary[0]["frames"] == FRAMES and summary[0]["codec"] == "mp4v" and summary[0]["error"] is None
    assert not list(out.glob(".*partial*"))


def test_stride_max_frames_and_json_only(checkpoint, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    predictor = Predictor.from_checkpoint(checkpoint)
    report = predict_video(predictor, clip, tmp_path / "out", stride=3, max_frames=5, overlays=False)
    records = [json.loads(line) for line in (tmp_path / "out" / "clip.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 3, 6, 9, 12] and report.frames == 5
    assert report.video is None and not (tmp_path / "out" / "clip.mp4").exists()
    every = predictor([read_frames(clip)[0]], bgr=True, conf=0.0)[0]
    confident = int((every.scores >= 0.45).sum())
    assert 0 < confident < len(every)  # the threshold below splits this frame's instances
    predict_video(predictor, clip, tmp_path / "shown", max_frames=1, overlays=False, conf=0.45)
    first = json.loads((tmp_path / "shown" / "clip.jsonl").read_text().splitlines()[0])
    assert len(first["instances"]) == confident and all(i["score"] >= 0.45 for i in first["instances"])


def test_a_truncated_video_is_reported_and_skipped_while_images_go_on(checkpoint, tmp_path):
    clip = write_clip(tmp_path / "broken.mp4")
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    image = tmp_path / "a.png"
    write_image(image, shapes_image(96, 128, seed=1))
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["predict", str(clip), str(image), "--weights", str(checkpoint), "--out", str(out)])
    assert run.exit_code == 1, run.output
    assert "broken.mp4: not a readable video" in run.output and "1 input(s) failed" in run.output
    assert (out / "a.png").exists() and json.loads((out / "summary.json").read_text())["failed"] == 0
    assert json.loads((out / "videos.json").read_text())[0]["error"].startswith(str(clip))
    with pytest.raises(ImageError, match="no such file"):
        predict_video(Predictor.from_checkpoint(checkpoint), tmp_path / "none.mp4", out)


def test_ctrl_c_closes_a_playable_video(checkpoint, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    predictor = Predictor.from_checkpoint(checkpoint)
    calls = {"n": 0}
    predict = predictor.predict

    def interrupted(images, bgr=False, conf=None):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return predict(images, bgr=bgr, conf=conf)

    predictor.predict = interrupted
    with pytest.raises(KeyboardInterrupt):
        predict_video(predictor, clip, tmp_path / "out")
    assert len(read_frames(tmp_path / "out" / "clip.mp4")) == 5
    assert len((tmp_path / "out" / "clip.jsonl").read_text().splitlines()) == 5
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_sources_are_sorted_into_images_videos_cameras_and_streams(tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    write_clip(folder / "b.avi", frames=2)
    write_image(folder / "a.png", shapes_image(32, 32))
    videos_only = tmp_path / "videos"
    videos_only.mkdir()
    write_clip(videos_only / "c.mp4", frames=2)
    images, videos, problems = collect_sources([str(folder), str(videos_only), "0", "rtsp://cam.local/live/1"])
    assert images == [folder / "a.png"]
    assert videos == ["0", "rtsp://cam.local/live/1", str(folder / "b.avi"), str(videos_only / "c.mp4")]
    assert problems == []
    assert output_stem("0") == "camera0" and output_stem("rtsp://cam.local/live/1") == "cam.local_live_1"


def test_plain_progress_lines_come_at_the_expected_steps():
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=False, width=200)
    with ProgressBar(console, PlainCadence(steps=3)) as progress:
        progress.start("train", 10, unit="it")
        for step in range(10):
            progress.advance(status=f"loss {1 / (step + 1):.2f}")
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["3/10", "6/10", "9/10", "10/10"]
    assert "it/s" in lines[0] and "eta" in lines[0] and lines[0].endswith("loss 0.33")


def test_the_log_cadence_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SPARSEINST_LOG_EVERY", "50")
    assert PlainCadence.from_environment() == PlainCadence(steps=50)
    monkeypatch.setenv("SPARSEINST_LOG_EVERY", "5s")
    assert PlainCadence.from_environment() == PlainCadence(seconds=5.0)
    monkeypatch.setenv("SPARSEINST_LOG_EVERY", "often")
    assert PlainCadence.from_environment() == PlainCadence()
