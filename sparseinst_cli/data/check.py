"""``sparseinst data check``: read a COCO dataset exactly as training does and report what is in
it and every problem, grouped by kind."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pycocotools import mask as mask_utils

from ..errors import ImageError
from ..progress import SILENT, Progress
from .coco import segmentation_rle
from .datasets import CocoInstances, Issue
from .images import header_size, read_image

SMALL_AREA, LARGE_AREA = 32**2, 96**2  # COCO's size ranges: small < 32², medium, large >= 96² pixels
UNREADABLE_IMAGE = "unreadable image"
IMAGE_SIZE_MISMATCH = "image size differs from the JSON"


@dataclass
class DatasetCheck:
    """What a dataset holds as training reads it, and its problems (``Issue`` kind, name, reason)."""

    annotations: str
    images_folder: str | None
    images: int
    instances: int
    instances_per_class: dict[str, int]
    image_sizes: dict[str, int]  # min/median/max of height and width
    instance_sizes: dict[str, int]  # small / medium / large instances
    images_without_instances: int
    crowd_regions: int
    problems: list[Issue] = field(default_factory=list)
    areas: list[float] = field(default_factory=list, repr=False)  # each instance's mask area, for the figure

    @property
    def problem_counts(self) -> dict[str, int]:
        return dict(Counter(issue.kind for issue in self.problems).most_common())

    def to_json(self) -> dict:
        record = asdict(self)
        del record["areas"]
        record["problem_counts"] = self.problem_counts
        record["problems"] = [issue._asdict() for issue in self.problems]
        return record


def check_dataset(annotations: str | Path, images: str | Path | None = None, *, decode: bool = True,
                  progress: Progress = SILENT) -> DatasetCheck:
    """Read ``annotations`` (and the files in ``images``) as training does: the reader's skipped
    and repaired entries, plus each image file that cannot be read (decoded in full with
    ``decode``, else its header only) or whose size differs from the JSON's. Problems that stop
    a training run (no such file, not COCO, no categories) raise ``DatasetError``."""
    dataset = CocoInstances(annotations, images)
    summary = dataset.summary
    problems = summary.issues
    per_class = Counter()
    areas: list[float] = []
    heights, widths = [], []
    progress.start("checking images", len(dataset))
    for index in range(len(dataset)):
        info = dataset.image_info(index)
        labels, segmentations = dataset.annotations_of(index)
        per_class.update(labels)
        areas.extend(float(mask_utils.area(segmentation_rle(s, info.height, info.width))) for s in segmentations)
        heights.append(info.height)
        widths.append(info.width)
        if images is not None:
            problem = _image_problem(Path(images) / info.file_name, (info.height, info.width), decode)
            if problem is not None:
                problems.append(Issue(f"image {info.file_name!r}", *problem))
        progress.advance()
    progress.stop()
    return DatasetCheck(
        annotations=str(annotations), images_folder=None if images is None else str(images),
        images=len(dataset), instances=summary.annotations,
        instances_per_class={name: per_class[label] for label, name in enumerate(dataset.class_names)},
        image_sizes={"min_height": min(heights), "median_height": int(statistics.median(heights)),
                     "max_height": max(heights), "min_width": min(widths),
                     "median_width": int(statistics.median(widths)), "max_width": max(widths)},
        instance_sizes={"small": sum(a < SMALL_AREA for a in areas),
                        "medium": sum(SMALL_AREA <= a < LARGE_AREA for a in areas),
                        "large": sum(a >= LARGE_AREA for a in areas)},
        images_without_instances=summary.empty_images, crowd_regions=summary.crowd, problems=problems, areas=areas)


def _image_problem(path: Path, size: tuple[int, int], decode: bool) -> tuple[str, str] | None:
    """(reason, kind) when the file cannot be read or is not ``size`` (height, width)."""
    try:
        found = read_image(path).shape[:2] if decode else header_size(path)
    except ImageError as error:
        return str(error).removeprefix(f"{path}: "), UNREADABLE_IMAGE
    if found is None:
        return "the file's header tells no image size", UNREADABLE_IMAGE
    if tuple(found) != tuple(size):
        return f"the file is {found[0]}x{found[1]}, the JSON says {size[0]}x{size[1]}", IMAGE_SIZE_MISMATCH
    return None
