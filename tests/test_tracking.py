"""Tracking: ids that hold through a drawn scene of moving, crossing, hiding, entering and leaving
shapes; the video outputs with ids; the CLI and Python entry points."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from components import Instances
from components.postprocess import masks_to_boxes
from sparseinst_cli.cli.app import app
from sparseinst_cli.inference.drawing import draw_instances, instance_color
from sparseinst_cli.inference.predictor import Predictor
from sparseinst_cli.inference.results import Prediction
from sparseinst_cli.inference.tracking import TRACK_BUFFER, Tracker
from sparseinst_cli.inference.video import predict_video, track_frames

from .conftest import write_clip

SCENE_SIZE = (240, 320)  # (height, width)
SCENE_FRAMES = 60
CLASSES = ("circle", "triangle", "square", "star")
# name, class, colour (BGR), first frame, start (x, y), velocity per frame (dx, dy), size (radius).
# The red circle passes behind the blue square (up to ~75% hidden, so it scores below conf for a
# few frames); the two magenta circles share colour and class and cross, so the stand-in model
# sees one merged region for a few frames; the triangle leaves at the bottom, the magenta circles
# at the sides, the star enters from the right.
OBJECTS = (
    ("red circle", 0, (40, 40, 230), 0, (60, 70), (3, 0), 14),
    ("blue square", 2, (230, 90, 30), 0, (260, 84), (-3, 0), 22),
    ("green triangle", 1, (40, 200, 40), 0, (160, 20), (0, 6), 18),
    ("yellow star", 3, (30, 220, 230), 20, (340, 160), (-4, 0), 18),
    ("magenta circle a", 0, (200, 40, 200), 0, (40, 210), (5, -1), 14),
    ("magenta circle b", 0, (200, 40, 200), 0, (280, 190), (-5, 1), 14),
)
ID_SWITCHES_ALLOWED = 0
COLOUR_TOLERANCE = 60  # summed |BGR difference| that still counts as an object's colour (video coding shifts it)


def draw_shape(canvas: np.ndarray, label: int, center: tuple[float, float], size: int, colour) -> None:
    x, y = (int(round(v)) for v in center)
    if label == 0:
        cv2.circle(canvas, (x, y), size, colour, -1)
    elif label == 2:
        cv2.rectangle(canvas, (x - size, y - size), (x + size, y + size), colour, -1)
    else:
        corners = 3 if label == 1 else 10
        angles = np.linspace(-np.pi / 2, 3 * np.pi / 2, corners, endpoint=False)
        radii = np.where(np.arange(corners) % 2, size * 0.45, size) if label == 3 else np.full(corners, size)
        polygon = np.stack([x + radii * np.cos(angles), y + radii * np.sin(angles)], 1).round().astype(np.int32)
        cv2.fillPoly(canvas, [polygon], colour)


def scene() -> list[tuple[np.ndarray, dict[int, np.ndarray]]]:
    """Per frame: the BGR image, and each object in view with its whole (unhidden) mask."""
    frames = []
    for t in range(SCENE_FRAMES):
        image = np.full((*SCENE_SIZE, 3), 35, np.uint8)
        truth = {}
        for k, (_, label, colour, first, (x, y), (dx, dy), size) in enumerate(OBJECTS):
            if t < first:
                continue
            center = (x + dx * (t - first), y + dy * (t - first))
            alone = np.zeros(SCENE_SIZE, np.uint8)
            draw_shape(alone, label, center, size, 1)
            draw_shape(image, label, center, size, colour)
            if alone.any():
                truth[k] = alone.astype(bool)
        frames.append((image, truth))
    return frames


class ColourSegmenter:
    """Stands in for a model: an instance per connected region of an object colour, scored by the
    share of the shape's area in view (a hidden part lowers the score, as it does a real model's)."""

    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    class_names = list(CLASSES)
    recipe = SimpleNamespace(inference=SimpleNamespace(conf=0.3))

    def predict(self, images, bgr: bool = False, conf: float | None = None) -> list[Prediction]:
        image = images[0] if bgr else images[0][..., ::-1]
        masks, scores, labels = [], [], []
        colours = {}
        for _, label, colour, *_, size in OBJECTS:
            colours.setdefault(colour, (label, size))
        for colour, (label, size) in colours.items():
            near = (np.abs(image.astype(int) - colour).sum(-1) < COLOUR_TOLERANCE).astype(np.uint8)
            count, regions = cv2.connectedComponents(near)
            whole = {0: np.pi * size**2, 1: 1.3 * size**2, 2: (2 * size + 1) ** 2, 3: 1.1 * size**2}[label]
            for region in range(1, count):
                mask = regions == region
                score = min(0.95, 0.95 * mask.sum() / whole)
                if mask.sum() >= 15 and score >= (conf or 0):
                    masks.append(mask), scores.append(score), labels.append(label)
        order = np.argsort(scores)[::-1].tolist()
        stacked = torch.from_numpy(np.stack([masks[i] for i in order])) if order else torch.zeros(0, *SCENE_SIZE,
                                                                                                  dtype=torch.bool)
        instances = Instances(stacked, torch.tensor([scores[i] for i in order], dtype=torch.float32),
                              torch.tensor([labels[i] for i in order], dtype=torch.int64),
                              masks_to_boxes(stacked).float(), SCENE_SIZE)
        return [Prediction.of(instances, self.categories, np.ascontiguousarray(image[..., ::-1]))]


def owners(prediction: Prediction, truth: dict[int, np.ndarray]) -> list[int]:
    """For each instance, the object in view its mask overlaps most (IoU)."""
    found = []
    for mask in prediction.masks.numpy():
        found.append(max(truth, key=lambda k: (truth[k] & mask).sum() / (truth[k] | mask).sum()))
    return found


def id_switches(sequences: dict[int, list[int]]) -> int:
    return sum(a != b for ids in sequences.values() for a, b in zip(ids, ids[1:]))


def test_ids_hold_through_crossings_hiding_and_leaving():
    frames = scene()
    tracker, model = Tracker(conf=0.3), ColourSegmenter()
    ids: dict[int, list[int]] = defaultdict(list)
    seen_in: dict[int, list[int]] = defaultdict(list)
    scores: dict[int, list[float]] = defaultdict(list)
    for t, (image, truth) in enumerate(frames):
        tracked = tracker.update(model.predict([image], bgr=True, conf=tracker.low_score)[0], frame=t)
        assert tracked.track_ids is not None and len(tracked.track_ids) == len(tracked)
        assert len(set(tracked.track_ids)) == len(tracked)  # one instance per track in a frame
        for k, track_id, score in zip(owners(tracked, truth), tracked.track_ids, tracked.scores.tolist()):
            ids[k].append(track_id)
            seen_in[k].append(t)
            scores[k].append(score)
    assert id_switches(ids) <= ID_SWITCHES_ALLOWED, dict(ids)
    assert len(tracker.tracks) == len(OBJECTS)  # no object split into two tracks, no spurious track
    summary = {record["id"]: record for record in tracker.summary()}
    for k, (name, label, *_) in enumerate(OBJECTS):
        record = summary[ids[k][0]]
        assert record["category_name"] == CLASSES[label], name
        assert (record["first_frame"], record["last_frame"]) == (seen_in[k][0], seen_in[k][-1]), name
        assert record["frames"] == len(seen_in[k])
        in_view = [t for t, (_, truth) in enumerate(frames) if k in truth]
        assert len(seen_in[k]) >= 0.9 * len(in_view), name  # the partly hidden frames are kept too
    red, triangle = 0, 2
    assert min(scores[red]) < tracker.conf  # partly hidden, it scored below conf and kept its track
    assert summary[ids[triangle][0]]["last_frame"] < SCENE_FRAMES - 10  # its track ended when it left


def test_a_lost_object_keeps_its_id_within_the_buffer_and_gets_a_new_one_after():
    model = ColourSegmenter()
    image = np.full((*SCENE_SIZE, 3), 35, np.uint8)
    draw_shape(image, 2, (160, 120), 20, (230, 90, 30))
    empty = np.full((*SCENE_SIZE, 3), 35, np.uint8)
    for gap, same in ((3, True), (TRACK_BUFFER + 2, False)):
        tracker = Tracker()
        sequence = [image, image] + [empty] * gap + [image]
        ids = [tracker.update(model.predict([frame], bgr=True)[0]).track_ids for frame in sequence]
        assert ids[:2] == [[1], [1]] and all(i == [] for i in ids[2:-1])
        assert ids[-1] == ([1] if same else [2])


def test_unsure_instances_only_continue_tracks_and_repeats_start_none():
    categories = ColourSegmenter.categories
    masks = torch.zeros(3, 60, 80, dtype=torch.bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 10:30, 10:31] = True  # a repeat of the first (the model makes no NMS)
    masks[2, 40:55, 50:70] = True

    def frame(scores):
        instances = Instances(masks, torch.tensor(scores), torch.zeros(3, dtype=torch.int64),
                              masks_to_boxes(masks).float(), (60, 80))
        return Prediction.of(instances, categories)

    tracker = Tracker(conf=0.5)
    first = tracker.update(frame([0.9, 0.8, 0.2]))  # the unsure third starts nothing
    assert first.track_ids == [1] and len(tracker.tracks) == 1
    second = tracker.update(frame([0.3, 0.25, 0.2]))  # all unsure: the first continues its track
    assert second.track_ids == [1] and second.scores.tolist() == pytest.approx([0.3])


def test_overlays_colour_by_track_and_records_carry_ids():
    masks = torch.zeros(2, 40, 40, dtype=torch.bool)
    masks[0, 5:15, 5:15] = True
    masks[1, 20:35, 20:35] = True
    instances = Instances(masks, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), masks_to_boxes(masks).float(),
                          (40, 40))
    prediction = Prediction.of(instances, ColourSegmenter.categories, np.zeros((40, 40, 3), np.uint8))
    prediction.track_ids = [7, 3]
    drawn = draw_instances(prediction.image, prediction, prediction.class_names, labels=False,
                           track_ids=prediction.track_ids)
    tint = np.array(instance_color(3), np.float32) * 0.5
    assert np.abs(drawn[27, 27].astype(float) - tint).max() <= 1  # instance 2 in track 3's colour
    assert [r["track_id"] for r in prediction.to_coco()] == [7, 3]
    assert prediction.select(torch.tensor([False, True])).track_ids == [3]
    assert prediction.to_supervision().tracker_id.tolist() == [7, 3]


def write_scene(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, SCENE_SIZE[::-1])
    for image, _ in scene():
        writer.write(image)
    writer.release()
    return path


def test_a_tracked_video_writes_ids_overlays_and_a_summary_that_agree(tmp_path):
    video = write_scene(tmp_path / "scene.mp4")
    report = predict_video(ColourSegmenter(), video, tmp_path / "out", track=True)
    records = [json.loads(line) for line in (tmp_path / "out" / "scene.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "out" / "scene.tracks.json").read_text())
    assert report.tracks == str(tmp_path / "out" / "scene.tracks.json") and report.track_count == len(OBJECTS)
    assert summary["frames"] == SCENE_FRAMES and len(summary["tracks"]) == len(OBJECTS)
    frames_of = defaultdict(list)
    for record in records:
        for instance in record["instances"]:
            frames_of[instance["track_id"]].append(record["frame"])
    for track in summary["tracks"]:
        seen = frames_of[track["id"]]
        assert (track["first_frame"], track["last_frame"], track["frames"]) == (seen[0], seen[-1], len(seen))
    capture = cv2.VideoCapture(str(tmp_path / "out" / "scene.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == SCENE_FRAMES
    capture.release()
    # the Python generator gives the same ids as the video pipeline
    python_ids = [p.track_ids for p in track_frames(ColourSegmenter(), video)]
    assert python_ids == [[i["track_id"] for i in r["instances"]] for r in records]


@pytest.fixture
def checkpoint(small_demo_checkpoint: Path) -> Path:
    return small_demo_checkpoint


def test_the_cli_tracks_a_video_and_refuses_images_alone(checkpoint, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["predict", str(clip), "--weights", str(checkpoint), "--out", str(out),
                                   "--track", "--conf", "0.05"])
    assert run.exit_code == 0, run.output
    assert "tracks" in run.output
    records = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    ids = {i["track_id"] for r in records for i in r["instances"]}
    summary = json.loads((out / "clip.tracks.json").read_text())
    assert ids and ids == {t["id"] for t in summary["tracks"]}
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    refused = CliRunner().invoke(app, ["predict", str(image), "--weights", str(checkpoint), "--track",
                                       "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "--track follows objects through video frames" in refused.output


def test_predictor_track_takes_a_video_or_a_list_of_frames(checkpoint, tmp_path):
    predictor = Predictor.from_checkpoint(checkpoint)
    clip = write_clip(tmp_path / "clip.mp4", frames=6)
    from_video = list(predictor.track(clip, conf=0.05, max_frames=4))
    assert len(from_video) == 4 and all(len(p.track_ids) == len(p) for p in from_video)
    assert from_video[0].image is not None and from_video[0].plot().shape == (*from_video[0].image_size, 3)
    frames = [p.image for p in from_video]
    from_list = list(predictor.track(frames, conf=0.05))
    assert [p.track_ids for p in from_list] == [p.track_ids for p in from_video]
