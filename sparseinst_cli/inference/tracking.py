"""Following instances across the frames of a video: ByteTrack's association on boxes and masks.

Each frame's instances are matched to the tracks of the frames before in two rounds (ByteTrack):
first the confident ones (score at least ``conf``) to every track, then the less sure ones (down
to ``TRACK_LOW_SCORE``) to the tracks still unmatched that were seen in the frame before, so that
an object that is partly hidden and scores lower keeps its id. Each track's next box comes from a
constant-velocity Kalman filter (``motion``) and its next mask is its last one moved by
that motion; a pair's similarity is the mean of their box IoU and mask IoU (masks compared on a
coarse grid, ``MASK_GRID`` cells on the long side). A confident instance that matches nothing
starts a track, unless it repeats one already matched in this frame (mask IoU at least
``DUPLICATE_IOU``: the model makes no NMS). A track unseen for ``TRACK_BUFFER`` frames ends; one
seen once only ends as soon as it is missed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from . import motion
from .results import Prediction

TRACK_LOW_SCORE = 0.1  # instances between this and conf only continue tracks (ByteTrack's low threshold)
TRACK_BUFFER = 30  # frames a lost track waits to be found again
MATCH_SIMILARITY = 0.2  # least similarity of a confident instance to its track (ByteTrack: IoU 0.2)
LOW_MATCH_SIMILARITY = 0.5  # the same for the less sure instances (ByteTrack: IoU 0.5)
MASK_WEIGHT = 0.5  # similarity = (1 - MASK_WEIGHT) * box IoU + MASK_WEIGHT * mask IoU
DUPLICATE_IOU = 0.8
MASK_GRID = 160


@dataclass(eq=False)
class Track:
    """One object followed through the frames."""

    id: int
    mean: np.ndarray  # (8,) the motion state: box center, aspect, height and their velocities
    covariance: np.ndarray  # (8, 8)
    mask: np.ndarray  # (grid h, grid w) bool: the last mask seen, on the grid
    mask_center: np.ndarray  # the box center, in pixels, when that mask was seen
    first_frame: int
    last_frame: int
    last_update: int  # the update that last saw it
    hits: int = 1
    labels: Counter = field(default_factory=Counter)
    score_sum: float = 0.0
    ended: bool = False

    @property
    def center(self) -> np.ndarray:
        return self.mean[:2].copy()

    def see(self, mask: np.ndarray, label: int, score: float, frame: int, update: int) -> None:
        """Seen again (its motion corrected beforehand)."""
        self.mask, self.mask_center = mask, self.center
        self.last_frame, self.last_update = frame, update
        self.hits += 1
        self.labels[label] += 1
        self.score_sum += score


class Tracker:
    """Gives each instance of successive frames a track id that persists while the object does.

    >>> tracker = Tracker(conf=0.3)
    >>> for frame in frames:  # feed predictions made with conf=TRACK_LOW_SCORE
    ...     tracked = tracker.update(predictor(frame, bgr=True, conf=TRACK_LOW_SCORE)[0])
    ...     tracked.track_ids  # one id per instance kept

    ``update`` keeps the confident instances and the less sure ones that continue a track; ids
    start at 1 and are never reused. ``summary()`` describes every track so far.
    """

    def __init__(self, conf: float = 0.3, *, low_score: float = TRACK_LOW_SCORE, buffer: int = TRACK_BUFFER) -> None:
        self.conf, self.low_score, self.buffer = conf, min(low_score, conf), buffer
        self.tracks: list[Track] = []  # every track, in order of id
        self.categories: list[dict] = []
        self.updates = 0
        self.step = 1  # pixels per mask grid cell, from the frame size

    @property
    def live(self) -> list[Track]:
        return [track for track in self.tracks if not track.ended]

    def update(self, prediction: Prediction, frame: int | None = None) -> Prediction:
        """The instances of ``prediction`` (one frame, best first) that belong to tracks, with
        ``track_ids``; ``frame`` is the frame's index in its video (default: the count of updates)."""
        frame = self.updates if frame is None else frame
        self.updates += 1
        self.categories = prediction.categories or self.categories
        scores = prediction.scores.cpu().numpy()
        boxes = prediction.boxes.cpu().numpy().astype(np.float64)
        labels = prediction.labels.cpu().numpy()
        self.step = grid_step(*prediction.image_size)
        masks = grid_masks(prediction, self.step)
        live = self.live
        if live:
            means, covariances = motion.predict(np.stack([t.mean for t in live]), np.stack([t.covariance for t in live]),
                                                np.array([t.last_update < self.updates - 2 for t in live]))
            for track, mean, covariance in zip(live, means, covariances):
                track.mean, track.covariance = mean, covariance

        confident = np.flatnonzero(scores >= self.conf)
        unsure = np.flatnonzero((scores >= self.low_score) & (scores < self.conf))
        owner: dict[int, Track] = {}  # instance index -> its track
        first = self._match(live, confident, boxes, masks, MATCH_SIMILARITY)
        owner.update(first)
        recent = [t for t in live if t not in first.values() and t.last_update == self.updates - 2]
        owner.update(self._match(recent, unsure, boxes, masks, LOW_MATCH_SIMILARITY))
        if owner:
            seen = list(owner.items())
            means, covariances = motion.update(np.stack([t.mean for _, t in seen]),
                                               np.stack([t.covariance for _, t in seen]),
                                               boxes[[index for index, _ in seen]])
            for (index, track), mean, covariance in zip(seen, means, covariances):
                track.mean, track.covariance = mean, covariance
                track.see(masks[index], int(labels[index]), float(scores[index]), frame, self.updates - 1)

        for index in confident:
            if index in owner or self._repeats(index, list(owner), masks):
                continue
            owner[index] = self._start(boxes[index], masks[index], int(labels[index]), float(scores[index]), frame)
        matched = set(map(id, owner.values()))
        for track in live:
            missed = id(track) not in matched
            if missed and (track.hits == 1 or self.updates - 1 - track.last_update > self.buffer):
                track.ended = True
        keep = sorted(owner)
        prefix = keep == list(range(len(keep)))  # the usual case: a view, not a copy of the masks
        tracked = prediction.select(slice(0, len(keep)) if prefix else np.array(keep, dtype=np.int64))
        tracked.track_ids = [owner[index].id for index in keep]
        return tracked

    def summary(self) -> list[dict[str, Any]]:
        """One record per track: ``id``, ``first_frame``, ``last_frame``, ``frames`` (how many it
        was seen in), ``category_id`` and ``category_name`` (its most frequent class), and
        ``mean_score``."""
        records = []
        for track in self.tracks:
            label = track.labels.most_common(1)[0][0]
            category = self.categories[label] if label < len(self.categories) else {"id": label, "name": str(label)}
            records.append({"id": track.id, "first_frame": track.first_frame, "last_frame": track.last_frame,
                            "frames": track.hits, "category_id": category["id"], "category_name": category["name"],
                            "mean_score": round(track.score_sum / track.hits, 4)})
        return records

    def _start(self, box: np.ndarray, mask: np.ndarray, label: int, score: float, frame: int) -> Track:
        means, covariances = motion.start(box[None])
        track = Track(len(self.tracks) + 1, means[0], covariances[0], mask, means[0, :2].copy(), frame, frame,
                      self.updates - 1,
                      labels=Counter({label: 1}), score_sum=score)
        self.tracks.append(track)
        return track

    def _match(self, tracks: list[Track], candidates: np.ndarray, boxes: np.ndarray, masks: np.ndarray,
               least: float) -> dict[int, Track]:
        """Hungarian matching of ``candidates`` (instance indices) to ``tracks`` on similarity."""
        if not tracks or not len(candidates):
            return {}
        similarity = self._similarity(tracks, boxes[candidates], masks[candidates])
        rows, columns = linear_sum_assignment(similarity, maximize=True)
        return {int(candidates[c]): tracks[r] for r, c in zip(rows, columns) if similarity[r, c] >= least}

    def _similarity(self, tracks: list[Track], boxes: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """(tracks, instances): the mean of box IoU and mask IoU, or box IoU alone where a mask is
        too small to show on the grid."""
        predicted = motion.xyxy(np.stack([track.mean for track in tracks]))
        box_iou = pairwise_box_iou(predicted, boxes)
        moved = np.stack([shift(track.mask, (track.center - track.mask_center) / self.step)
                          if track.mask.shape == masks.shape[1:] else np.zeros(masks.shape[1:], bool)
                          for track in tracks])  # a frame of another size: boxes alone
        mask_iou, both = pairwise_mask_iou(moved, masks)
        return np.where(both, (1 - MASK_WEIGHT) * box_iou + MASK_WEIGHT * mask_iou, box_iou)

    @staticmethod
    def _repeats(index: int, kept: list[int], masks: np.ndarray) -> bool:
        if not kept:
            return False
        iou, both = pairwise_mask_iou(masks[index][None], masks[kept])
        return bool((both & (iou >= DUPLICATE_IOU)).any())


def grid_step(height: int, width: int) -> int:
    """Pixels per grid cell for a frame of this size."""
    return max(1, math.ceil(max(height, width) / MASK_GRID))


def grid_masks(prediction: Prediction, step: int) -> np.ndarray:
    """(K, grid h, grid w) bool: each mask sampled every ``step`` pixels."""
    return prediction.masks[:, step // 2::step, step // 2::step].cpu().numpy()


def shift(mask: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``mask`` moved by ``offset`` (dx, dy) grid cells, rounded; what leaves the grid is lost."""
    dx, dy = (int(round(v)) for v in offset)
    if dx == 0 and dy == 0:
        return mask
    moved = np.zeros_like(mask)
    height, width = mask.shape
    if abs(dx) >= width or abs(dy) >= height:
        return moved
    moved[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        mask[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return moved


def pairwise_box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) XYXY -> (N, M) IoU."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-9), 0.0)


def pairwise_mask_iou(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, h, w) x (M, h, w) bool -> (N, M) IoU, and where both masks are non-empty. Counted on
    packed bits: no BLAS threads, which would fight the model's for the cores."""
    a, b = np.packbits(a.reshape(len(a), -1), 1), np.packbits(b.reshape(len(b), -1), 1)
    intersection = np.bitwise_count(a[:, None] & b[None]).sum(-1, dtype=np.int64)
    area_a, area_b = np.bitwise_count(a).sum(-1, dtype=np.int64), np.bitwise_count(b).sum(-1, dtype=np.int64)
    union = area_a[:, None] + area_b[None] - intersection
    both = (area_a[:, None] > 0) & (area_b[None] > 0)
    return np.where(both, intersection / np.maximum(union, 1), 0.0), both
