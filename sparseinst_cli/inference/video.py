"""Running a predictor over a video file, a camera or a stream.

Decoding, inference and encoding overlap: a reader thread decodes frames into a small queue, the
calling thread runs the model, and a writer thread draws the overlays, encodes the annotated
video and writes one JSON line per frame. OpenCV's decoders and encoders release the GIL, so on
a multi-core CPU the throughput approaches the model's own latency.

Outputs per source, in the output folder: ``STEM.mp4`` (the annotated video: same size, the
source's frame rate divided by the stride, codec ``VIDEO_CODEC``) and ``STEM.jsonl`` (per
frame: index, time in seconds, instances best first with COCO RLE masks, scores, category ids and
names, boxes). With tracking (``track=True``) each instance also has a ``track_id`` that holds
while the object stays in view, the overlay colours and labels instances by track, and
``STEM.tracks.json`` sums up each track (``tracking.Tracker.summary``).
All are written under temporary names and renamed when the source ends or on Ctrl-C (the
video is closed, so it stays playable); a killed run leaves no half file under the final names.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2

from ..data.images import (
    MAX_PIXELS_VARIABLE,
    collect_images,
    files_under,
    max_image_pixels,
)
from ..errors import ImageError
from ..files import not_found, output_folder, refuse_overwriting, write_json
from ..progress import SILENT, Progress
from .drawing import draw_instances
from .results import ImagePredictor, Prediction
from .tracking import Tracker

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
VIDEO_CODEC = "mp4v"  # MPEG-4 Part 2 in an .mp4 file: every OpenCV build can write it
STREAM_FPS = 25.0  # the frame rate written when a camera or stream does not tell its own
QUEUE_FRAMES = 4  # frames in flight between the threads
VIDEOS_FILE = "videos.json"
TRACKS_SUFFIX = ".tracks.json"
_END = object()


def is_camera(source: str | Path) -> bool:
    return str(source).isdigit()


def is_stream(source: str | Path) -> bool:
    return str(source).lower().startswith(STREAM_SCHEMES)


def is_video_source(source: str | Path) -> bool:
    """A video file (by suffix), a camera index ("0") or a stream URL."""
    return is_camera(source) or is_stream(source) or Path(str(source)).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class VideoReport:
    source: str
    frames: int = 0  # frames predicted
    seconds: float = 0.0  # wall time from the first frame read to the last one written
    frames_per_second: float = 0.0  # throughput of the whole pipeline
    source_fps: float = 0.0
    width: int = 0
    height: int = 0
    video: str | None = None  # the annotated video (None with overlays off)
    records: str | None = None  # the JSON-lines file
    tracks: str | None = None  # the tracks summary (with tracking)
    track_count: int | None = None
    codec: str = VIDEO_CODEC
    interrupted: bool = False
    error: str | None = None


def predict_video(
    predictor: ImagePredictor,
    source: str | Path,
    out_dir: Path,
    *,
    stride: int = 1,
    max_frames: int | None = None,
    conf: float | None = None,
    overlays: bool = True,
    name: str | None = None,
    track: bool = False,
    progress: Progress = SILENT,
) -> VideoReport:
    """Predict every ``stride``-th frame of ``source`` (a video file, a camera index or a stream
    URL), at most ``max_frames``; returns the report. Frames record (and show) the instances
    scoring at least ``conf`` (default: the model's ``inference.conf``; 0: all); with ``track``,
    also the less sure ones that continue a track, each with its ``track_id``. An output that
    would replace the source is refused before anything is written; an unreadable source raises
    ``ImageError`` naming it; Ctrl-C closes the outputs, then propagates."""
    if stride < 1:
        raise ImageError(f"the frame stride must be at least 1, got {stride}")
    output_folder(out_dir)
    stem = name or output_stem(source)
    records_path, video_path = out_dir / f"{stem}.jsonl", out_dir / f"{stem}.mp4"
    tracks_path = out_dir / f"{stem}{TRACKS_SUFFIX}"
    if not (is_camera(source) or is_stream(source)):
        refuse_overwriting([records_path, video_path, tracks_path], [Path(source)])
    conf = predictor.recipe.inference.conf if conf is None else conf
    tracker = Tracker(conf) if track else None
    model_conf = tracker.low_score if tracker else conf
    capture = _open(source)
    report = VideoReport(str(source), source_fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
                         width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    partial_records, partial_video = (path.with_name(f".{path.name}.partial{path.suffix}")
                                      for path in (records_path, video_path))
    fps = (report.source_fps if report.source_fps > 0 else STREAM_FPS) / stride
    writer = None
    if overlays:
        writer = cv2.VideoWriter(str(partial_video), cv2.VideoWriter_fourcc(*VIDEO_CODEC), fps,
                                 (report.width, report.height))
        if not writer.isOpened():
            capture.release()
            raise ImageError(f"{video_path}: OpenCV cannot write {VIDEO_CODEC} video here")
    frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    total = -(-frame_count // stride) if frame_count > 0 else 0
    total = min(total, max_frames) if max_frames and total else (max_frames or total)
    progress.start(stem, total, unit="frame")
    stop = threading.Event()
    frames: queue.Queue = queue.Queue(QUEUE_FRAMES)
    results: queue.Queue = queue.Queue(QUEUE_FRAMES)
    reader = threading.Thread(target=_read, args=(capture, frames, stride, max_frames, report.source_fps, stop),
                              daemon=True, name="video-reader")
    records = partial_records.open("w")
    failures: list[BaseException] = []
    encoder = threading.Thread(target=_write, args=(results, writer, records, tracker, failures),
                               daemon=True, name="video-writer")
    start = time.perf_counter()
    reader.start()
    encoder.start()
    try:
        while (item := frames.get()) is not _END:
            index, timestamp, frame = item
            instances = predictor.predict([frame], bgr=True, conf=model_conf)[0].to("cpu")
            results.put((index, timestamp, frame, instances))
            report.frames += 1
            progress.advance()
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        stop.set()
        results.put(_END)
        encoder.join()
        reader.join()
        capture.release()
        try:
            records.close()
        except OSError as error:
            failures.append(error)
        if writer is not None:
            writer.release()
        if failures and isinstance(failures[0], OSError) and failures[0].errno == errno.ENOSPC:
            for partial in (partial_records, partial_video):  # nothing half-written under the final names
                partial.unlink(missing_ok=True)
            failures[0] = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(records_path))
        else:
            if writer is not None:
                partial_video.replace(video_path)
                report.video = str(video_path)
            partial_records.replace(records_path)
            report.records = str(records_path)
            if tracker is not None:
                write_json(tracks_path, {"source": str(source), "frames": report.frames, "tracks": tracker.summary()})
                report.tracks, report.track_count = str(tracks_path), len(tracker.tracks)
        report.seconds = round(time.perf_counter() - start, 3)
        report.frames_per_second = round(report.frames / report.seconds, 2) if report.seconds else 0.0
        progress.stop()
    if failures:
        raise failures[0]
    return report


def track_frames(predictor: ImagePredictor, source: str | Path | Iterable, *, conf: float | None = None, stride: int = 1,
                 max_frames: int | None = None) -> Iterator[Prediction]:
    """Tracked predictions, one per frame, as they come: ``source`` is a video file, a camera
    index or a stream URL (every ``stride``-th frame, at most ``max_frames``), or an iterable of
    images (paths, or RGB arrays). Each ``Prediction`` holds the frame (``plot()``) and its
    instances' ``track_ids``; see ``predict_video`` for which instances are kept."""
    conf = predictor.recipe.inference.conf if conf is None else conf
    tracker = Tracker(conf)
    if isinstance(source, (str, Path)):
        capture = _open(source)
        try:
            index = taken = 0
            while max_frames is None or taken < max_frames:
                ok, frame = capture.read()
                if not ok:
                    return
                if index % stride == 0:
                    taken += 1
                    yield tracker.update(predictor.predict([frame], bgr=True, conf=tracker.low_score)[0], frame=index)
                index += 1
        finally:
            capture.release()
    else:
        for index, image in enumerate(source):
            yield tracker.update(predictor.predict([image], conf=tracker.low_score)[0], frame=index)


def collect_sources(inputs: Sequence[str]) -> tuple[list[Path], list[str], list[str]]:
    """(images, video sources, problems) for what a user named: image files and folders (searched
    recursively for images and videos), video files, camera indices and stream URLs."""
    videos = [text for text in inputs if is_video_source(text)]
    others = [text for text in inputs if not is_video_source(text)]
    images, problems = collect_images(others)
    for folder in (Path(text) for text in others if Path(text).is_dir()):
        found = [str(p) for p in files_under(folder, VIDEO_SUFFIXES)]
        videos.extend(found)
        if found:  # a folder of videos is not a folder without images
            problems = [p for p in problems if not p.startswith(f"{folder}: folder holds no images")]
    return images, videos, problems


def predict_videos(predictor: ImagePredictor, sources: Sequence[str], out_dir: Path, *, stride: int = 1,
                   max_frames: int | None = None, conf: float | None = None, overlays: bool = True,
                   track: bool = False, progress: Progress = SILENT) -> list[VideoReport]:
    """``predict_video`` for each source in turn; an unreadable one is recorded and skipped.
    ``videos.json`` in ``out_dir`` lists the reports, rewritten after each source."""
    reports: list[VideoReport] = []
    used: set[str] = set()
    for source in sources:
        stem, counter = output_stem(source), 1
        while stem in used:
            counter += 1
            stem = f"{output_stem(source)}_{counter}"
        used.add(stem)
        try:
            report = predict_video(predictor, source, out_dir, stride=stride, max_frames=max_frames,
                                   conf=conf, overlays=overlays, name=stem, track=track, progress=progress)
        except ImageError as error:
            report = VideoReport(str(source), error=str(error))
            progress.note(f"failed: {error}")
        reports.append(report)
        write_json(out_dir / VIDEOS_FILE, [asdict(r) for r in reports])
    return reports


def output_stem(source: str | Path) -> str:
    """A file-name stem for a source: the file's stem, "camera0", or the URL made safe."""
    text = str(source)
    if is_camera(text):
        return f"camera{text}"
    if is_stream(text):
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text.split("://", 1)[1]).strip("_") or "stream"
    return Path(text).stem


def _open(source: str | Path) -> cv2.VideoCapture:
    text = str(source)
    file = not (is_camera(text) or is_stream(text))
    if file and not Path(text).is_file():
        raise ImageError(not_found(Path(text)))
    # FFmpeg and OpenCV would print their own lines about a broken file or a missing camera; the
    # one line below says it.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    capture = cv2.VideoCapture(int(text) if is_camera(text) else text)
    if not capture.isOpened():
        capture.release()
        if is_camera(text):
            raise ImageError(f"camera {text}: cannot be opened (no such camera, or another program is using it)")
        if is_stream(text):
            raise ImageError(f"{text}: the stream cannot be opened (unreachable, refused, or not a video stream)")
        raise ImageError(f"{text}: not a readable video (corrupt, truncated or an unsupported format)")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width * height > max_image_pixels():  # checked before a frame is decoded, as images are
        capture.release()
        raise ImageError(f"{text}: its {width}x{height} frames are larger than the {max_image_pixels():,} pixels "
                         f"read at most (raise it with the environment variable {MAX_PIXELS_VARIABLE})")
    if file:
        ok, _ = capture.read()  # a file that opens but yields no frame is as unreadable
        if not ok:
            capture.release()
            raise ImageError(f"{text}: not a readable video (no frame could be decoded)")
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    return capture


def _put(target: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            target.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _read(capture: cv2.VideoCapture, frames: queue.Queue, stride: int, max_frames: int | None, fps: float,
          stop: threading.Event) -> None:
    index = taken = 0
    start = time.perf_counter()
    try:
        while not stop.is_set() and (max_frames is None or taken < max_frames):
            if index % stride:
                if not capture.grab():
                    break
                index += 1
                continue
            ok, frame = capture.read()
            if not ok:
                break
            timestamp = index / fps if fps > 0 else time.perf_counter() - start
            if not _put(frames, (index, timestamp, frame), stop):
                break
            index += 1
            taken += 1
    finally:
        while True:  # the end mark must arrive even when the queue is full
            try:
                frames.put(_END, timeout=0.1)
                break
            except queue.Full:
                if stop.is_set():
                    break


def _write(results: queue.Queue, writer, records, tracker: Tracker | None, failures: list[BaseException]) -> None:
    """The writer thread; tracking runs here, in frame order, beside the model's next frame."""
    while (item := results.get()) is not _END:
        if failures:
            continue  # keep taking frames so that the model's thread never blocks
        try:
            index, timestamp, frame, instances = item
            if tracker is not None:
                instances = tracker.update(instances, frame=index)
            _write_frame(index, timestamp, frame, instances, writer, records)
        except Exception as error:  # noqa: BLE001 - re-raised in the calling thread
            failures.append(error)


def _write_frame(index: int, timestamp: float, frame, instances: Prediction, writer, records) -> None:
    detections = [{key: value for key, value in record.items() if key != "image_id"} | {"category_name": name}
                  for record, name in zip(instances.to_coco(index), instances.names)]
    records.write(json.dumps({"frame": index, "time": round(timestamp, 4), "instances": detections},
                             separators=(",", ":")) + "\n")
    if writer is not None:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        drawn = draw_instances(rgb, instances, instances.class_names, track_ids=instances.track_ids)
        writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
