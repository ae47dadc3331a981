"""What a prediction gives for one image: the instances, best first, ready to use alone (class
names, the image they were found in), to draw and to hand to other tools (COCO, supervision)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from components import Instances

from ..data.coco import coco_results
from ..data.images import ImageInput, write_image
from ..errors import ImageError, SparseInstError
from .drawing import draw_instances

PLOT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(eq=False)
class Prediction(Instances):
    """The instances found in one image, sorted by score (best first), none with an empty mask.

    ``masks`` (K, H, W) bool at the image's own size, ``scores`` (K,), ``labels`` (K,) class
    indices into ``class_names``, ``boxes`` (K, 4) XYXY pixels from the masks; ``names`` gives
    each instance's class name. ``image`` is the RGB image (H, W, 3) they were found in and
    ``source`` its file, when it came from one. ``track_ids`` gives each instance's track (video
    frames through a ``Tracker``), else None.
    """

    categories: list[dict] = field(default_factory=list)  # COCO style, by label: {"id": int, "name": str}
    image: np.ndarray | None = field(default=None, repr=False)
    source: str | None = None
    track_ids: list[int] | None = None

    @classmethod
    def of(cls, instances: Instances, categories: list[dict], image: np.ndarray | None = None,
           source: str | Path | None = None) -> Prediction:
        return cls(instances.masks, instances.scores, instances.labels, instances.boxes, instances.image_size,
                   categories, image, None if source is None else str(source))

    def select(self, keep: Any) -> Prediction:
        """The instances ``keep`` picks (a boolean mask, indices or a slice), their track ids with them."""
        keep = keep if isinstance(keep, slice) else torch.as_tensor(keep)
        chosen = super().select(keep)
        if self.track_ids is not None:
            chosen.track_ids = [self.track_ids[i] for i in torch.arange(len(self))[keep].tolist()]
        return chosen

    @property
    def class_names(self) -> list[str]:
        """The model's class names, by label."""
        return [c["name"] for c in self.categories]

    @property
    def names(self) -> list[str]:
        """Each instance's class name."""
        names = self.class_names
        return [names[label] if label < len(names) else str(label) for label in self.labels.tolist()]

    def __repr__(self) -> str:
        found = ", ".join(f"{name} {score:.2f}" for name, score in zip(self.names, self.scores.tolist()))
        where = f"{self.source}: " if self.source else ""
        return f"Prediction({where}{len(self)} instance(s) in {self.image_size[1]}x{self.image_size[0]}: {found})"

    def plot(self, image: np.ndarray | None = None, *, labels: bool = True) -> np.ndarray:
        """The overlay as an RGB array (H, W, 3): each mask tinted and outlined, with "class score"
        labels. ``image`` replaces the one the prediction was made on (same size, RGB)."""
        image = self.image if image is None else image
        if image is None:
            raise SparseInstError("this prediction holds no image (it was made from a tensor); pass plot(image)")
        if tuple(image.shape[:2]) != tuple(self.image_size):
            raise SparseInstError(f"plot: the image is {image.shape[1]}x{image.shape[0]} but the masks are "
                                  f"{self.image_size[1]}x{self.image_size[0]}")
        return draw_instances(image, self, self.class_names, labels=labels, track_ids=self.track_ids)

    def save(self, path: str | Path, *, labels: bool = True) -> Path:
        """Write the overlay (``plot()``) to ``path`` (.png, .jpg, .bmp or .webp), atomically; the
        image the prediction was made from is never overwritten."""
        path = Path(path)
        if path.suffix.lower() not in PLOT_SUFFIXES:
            raise ImageError(f"{path}: expected a {', '.join(PLOT_SUFFIXES)} file")
        if self.source is not None and path.exists() and path.samefile(self.source):
            raise SparseInstError(f"{path}: is the image this prediction was made from; save the overlay elsewhere",
                                  setting="out")
        write_image(path, self.plot(labels=labels))
        return path

    def to_coco(self, image_id: int = 1) -> list[dict[str, Any]]:
        """One COCO annotation per instance: ``image_id``, ``category_id`` (the dataset id of its
        class), ``segmentation`` (compressed RLE), ``bbox`` (XYWH), ``area``, ``score`` and
        ``iscrowd`` 0, and ``track_id`` when tracked; a results file for COCO evaluation, or
        pre-annotations once given ids."""
        records = coco_results(self, image_id, self.categories)
        if self.track_ids is not None:
            for record, track_id in zip(records, self.track_ids):
                record["track_id"] = track_id
        return records

    def to_supervision(self) -> Any:
        """The instances as ``supervision.Detections`` (``pip install 'sparseinst[supervision]'``):
        ``xyxy``, ``mask``, ``confidence``, ``class_id`` and ``data["class_name"]``."""
        try:
            import supervision
        except ImportError:
            raise SparseInstError("to_supervision needs the supervision package: pip install "
                                  "'sparseinst[supervision]'") from None
        cpu = self.to("cpu")
        return supervision.Detections(
            xyxy=cpu.boxes.numpy().astype(np.float32).reshape(-1, 4),
            mask=cpu.masks.numpy().astype(bool),
            confidence=cpu.scores.numpy().astype(np.float32),
            class_id=cpu.labels.numpy().astype(int),
            tracker_id=None if self.track_ids is None else np.array(self.track_ids, dtype=int),
            data={"class_name": np.array(self.names, dtype=str)},
        )


class ImagePredictor(Protocol):
    """What video, tracking and tiled inference need of a model: ``Predictor``'s ``recipe`` (its
    ``inference.conf``) and ``predict``."""

    recipe: Any

    def predict(self, images: Sequence[ImageInput], bgr: bool = False,
                conf: float | None = None) -> list[Prediction]: ...

