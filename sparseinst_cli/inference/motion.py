"""A constant-velocity Kalman filter on boxes, as SORT and ByteTrack use to predict where a tracked
object is in the next frame, run on all the tracks of a frame at once.

The state is (cx, cy, aspect, height) and their velocities; the noise scales with the box height,
so that a large object may move more pixels per frame than a small one. ``means`` are (N, 8),
``covariances`` (N, 8, 8), boxes (N, 4) XYXY.
"""

from __future__ import annotations

import numpy as np

POSITION_NOISE = 1 / 20  # standard deviation per frame, as a fraction of the box height
VELOCITY_NOISE = 1 / 160
ASPECT_NOISE = 1e-2
ASPECT_VELOCITY_NOISE = 1e-5
MEASUREMENT_ASPECT_NOISE = 1e-1
STATE_SIZE = 8

_TRANSITION = np.eye(STATE_SIZE)
_TRANSITION[:4, 4:] = np.eye(4)  # one frame: position += velocity


def xyah(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) XYXY -> (N, 4) (cx, cy, width / height, height)."""
    width, height = boxes[:, 2] - boxes[:, 0], np.maximum(boxes[:, 3] - boxes[:, 1], 1e-3)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, width / height, height], 1)


def xyxy(means: np.ndarray) -> np.ndarray:
    """(N, 8) states -> (N, 4) XYXY boxes."""
    cx, cy, aspect, height = means[:, 0], means[:, 1], means[:, 2], means[:, 3]
    width = aspect * height
    return np.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], 1)


def _spread(height: np.ndarray, position: float, aspect: float, velocity: float, aspect_velocity: float,
            ) -> np.ndarray:
    """(N, 8) standard deviations for boxes of these heights."""
    ones = np.ones_like(height)
    return np.stack([position * height, position * height, aspect * ones, position * height, velocity * height,
                     velocity * height, aspect_velocity * ones, velocity * height], 1)


def start(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """States for newly seen boxes: at rest, uncertain about their speed."""
    measured = xyah(boxes)
    means = np.concatenate([measured, np.zeros_like(measured)], 1)
    spread = _spread(measured[:, 3], 2 * POSITION_NOISE, ASPECT_NOISE, 10 * VELOCITY_NOISE, ASPECT_VELOCITY_NOISE)
    return means, _diagonal(np.square(spread))


def predict(means: np.ndarray, covariances: np.ndarray, hold_size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame on; where ``hold_size`` (N,) is set the height stops changing (an object not
    seen lately)."""
    means = means.copy()
    means[hold_size, 7] = 0.0
    spread = _spread(means[:, 3], POSITION_NOISE, ASPECT_NOISE, VELOCITY_NOISE, ASPECT_VELOCITY_NOISE)
    means = means @ _TRANSITION.T
    covariances = _TRANSITION @ covariances @ _TRANSITION.T + _diagonal(np.square(spread))
    return means, covariances


def update(means: np.ndarray, covariances: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The states corrected by measured boxes."""
    height = means[:, 3]
    noise = _diagonal(np.square(np.stack([POSITION_NOISE * height, POSITION_NOISE * height,
                                          MEASUREMENT_ASPECT_NOISE * np.ones_like(height), POSITION_NOISE * height], 1)))
    projected = covariances[:, :4, :4] + noise
    gain = np.swapaxes(np.linalg.solve(projected, covariances[:, :4, :]), 1, 2)  # (N, 8, 4)
    innovation = xyah(boxes) - means[:, :4]
    means = means + np.einsum("nij,nj->ni", gain, innovation)
    covariances = covariances - gain @ projected @ np.swapaxes(gain, 1, 2)
    return means, covariances


def _diagonal(values: np.ndarray) -> np.ndarray:
    """(N, k) -> (N, k, k) diagonal matrices."""
    matrices = np.zeros((*values.shape, values.shape[1]))
    index = np.arange(values.shape[1])
    matrices[:, index, index] = values
    return matrices
