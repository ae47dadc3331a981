"""TIDE error analysis of instance masks (Bolya et al., ECCV 2020), with the reference ``tidecv``'s rules.

Everything is measured at one foreground threshold t_f (``pos_threshold``, 0.5) and one
background threshold t_b (``background_threshold``, 0.1); IoU is mask IoU of COCO RLEs.

Matching, per image: the ``max_detections`` highest-scoring predictions are taken in descending
score order, and each one takes the unmatched ground truth (GT) of its own class with which it has
the highest IoU, if that IoU is >= t_f. Crowd annotations (``iscrowd=1``) are not GT: a prediction
left unmatched that has at least t_f of its own area inside a crowd region of its class is ignored
(neither a true nor a false positive, and no error), as in COCO. AP is COCOeval's 101-point
interpolated AP at t_f (same recall grid), in percent, averaged over the classes that have GT.

With t_f = 0.5 this AP equals COCOeval's AP50 when no image has more than ``max_detections``
predictions (COCO caps per image and class, ``tidecv`` and this module per image).

Each remaining false positive gets the first error type that applies, in this order:

- ``loc``  t_b <= IoU <= t_f with a GT of its own class (best such GT, matched or not);
- ``cls``  IoU >= t_f with a GT of another class;
- ``dupe`` IoU >= t_f with a GT of its own class that a higher-scoring prediction matched;
- ``bkg``  IoU <= t_b with every GT (and every prediction of an image without GT);
- ``both`` anything else: in effect, the wrong class with t_b < IoU < t_f.

A GT left unmatched is a ``miss`` unless a ``cls`` or ``loc`` error points at it.

Fixes (dAP of a type is the AP with only that type fixed minus the AP, floored at 0):

- ``cls``: if the GT is unmatched and this is the highest-scoring ``cls``/``loc`` error pointing
  at it, the prediction becomes a true positive of the GT's class; otherwise it is removed.
- ``loc``: the same, keeping the prediction's class (as if its mask were perfect).
- ``both``, ``dupe``, ``bkg``: the prediction is removed.
- ``miss``: the GT is taken out of its class's GT count (no prediction is invented).

Special errors: ``false_pos`` scores every true positive above every false positive (perfect
precision, same recall); ``false_neg`` takes every unmatched GT out of the GT counts (perfect
recall, same precision).

Where ``tidecv`` and COCO differ, COCO is followed: a class without GT is left out of the mean
AP (``tidecv`` counts it as AP 0 whenever it has predictions); a crowd overlap of exactly t_f
ignores a prediction (``tidecv`` needs more); the recall grid is COCOeval's ``linspace`` (``tidecv``
uses i / 100, which differs in the last bit at ten thresholds). A class whose GT count drops to
zero through a fix is left out only if it has no predictions left (``tidecv``'s rule). Predictions
for images the ground truth does not list are left out, as in ``tidecv``. Ignored predictions get
no error, as in ``tidecv``'s repository (its 1.0.1 release still classifies them, so that every
fixed AP counts them as false positives).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pycocotools import mask as mask_utils

from components.postprocess import (
    MAX_DETECTIONS,  # predictions scored per image, as tidecv and COCO do
)

from ..data.coco import segmentation_rle
from ..data.datasets import CocoInstances
from ..defaults import DATASET_BATCH_SIZE, TIDE_BACKGROUND_THRESHOLD, TIDE_POS_THRESHOLD
from ..deploy.backends import ModelSource
from ..errors import SparseInstError
from ..inference.batches import predict_dataset
from ..progress import SILENT, Progress
from .coco_eval import (  # they check ids, mask sizes and RLE form
    ground_truth_index,
    load_ground_truth,
    load_results,
    reader_notices,
)

RECALL_POINTS = 101
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, RECALL_POINTS)  # COCOeval's recThrs: 0.00, 0.01, ..., 1.00
PERCENT = 100.0
MAIN_ERRORS = ("cls", "loc", "both", "dupe", "bkg", "miss")
SPECIAL_ERRORS = ("false_pos", "false_neg")
ERROR_LABELS = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupe": "Dupe", "bkg": "Bkg", "miss": "Miss",
                "false_pos": "FalsePos", "false_neg": "FalseNeg"}


@dataclass
class TideReport:
    """AP50 and TIDE's dAP (percentage points); ``main`` keyed by ``MAIN_ERRORS``, ``special`` by
    ``SPECIAL_ERRORS``, ``counts`` the number of errors of each main type."""

    ap: float
    main: dict[str, float]
    special: dict[str, float]
    counts: dict[str, int]
    true_positives: int = 0
    ground_truth: int = 0  # non-crowd GT instances
    predictions: int = 0  # predictions analysed (after the per-image cap)
    pos_threshold: float = TIDE_POS_THRESHOLD
    background_threshold: float = TIDE_BACKGROUND_THRESHOLD

    def to_json(self) -> dict[str, Any]:
        return {"ap50": self.ap, "main": dict(self.main), "special": dict(self.special),
                "counts": dict(self.counts), "true_positives": self.true_positives,
                "ground_truth": self.ground_truth, "predictions": self.predictions,
                "pos_threshold": self.pos_threshold, "background_threshold": self.background_threshold}


class _Det(NamedTuple):
    """A scored prediction as AP sees it; ``rank`` (its index in the results) breaks score ties."""

    category: int
    score: float
    rank: int


@dataclass
class _Error:
    kind: str
    category: int  # the prediction's class, or the missed GT's
    prediction: _Det | None = None  # None for ``miss``
    fix: _Det | None = None  # the true positive the fix makes; None: the prediction is removed
    target: tuple[int, int] | None = None  # (image, GT) a cls/loc fix needs to win


@dataclass
class _Collector:
    """True positives, errors and GT counts gathered image by image."""

    pos: float
    bg: float
    true_positives: list[_Det] = field(default_factory=list)
    errors: list[_Error] = field(default_factory=list)
    gt_counts: Counter = field(default_factory=Counter)
    false_negatives: Counter = field(default_factory=Counter)
    best: dict[tuple[int, int], _Det] = field(default_factory=dict)  # top cls/loc claim per unmatched GT

    def add_image(self, image: int, truths: list[tuple[int, dict]], crowds: list[tuple[int, dict]],
                  preds: list[tuple[_Det, dict]]) -> None:
        """One image: ``truths``/``crowds`` are (category, RLE); ``preds`` sorted by descending score."""
        gt_cls = np.array([c for c, _ in truths], dtype=np.int64)
        self.gt_counts.update(gt_cls.tolist())
        det_cls = np.array([d.category for d, _ in preds], dtype=np.int64)
        iou = _iou([r for _, r in preds], [r for _, r in truths], crowd=False)  # (P, G)
        same = det_cls[:, None] == gt_cls[None, :]  # (P, G)
        matched, used = self._match(np.where(same, iou, 0.0))
        crowd_iou = _iou([r for _, r in preds], [r for _, r in crowds], crowd=True)  # (P, C)
        crowd_cls = np.array([c for c, _ in crowds], dtype=np.int64)
        ignored = ((crowd_iou >= self.pos) & (det_cls[:, None] == crowd_cls[None, :])).any(axis=1)
        claimed = np.zeros(len(truths), dtype=bool)  # GT that a cls/loc error points at
        for p, (det, _) in enumerate(preds):
            if matched[p] >= 0:
                self.true_positives.append(det)
            elif not ignored[p]:
                self._add_error(det, image, iou[p], same[p], used, gt_cls, claimed)
        for g in np.flatnonzero(~used):
            self.false_negatives[int(gt_cls[g])] += 1
            if not claimed[g]:
                self.errors.append(_Error("miss", int(gt_cls[g])))

    def _match(self, cls_iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy matching in row (score) order; returns (GT index or -1 per prediction, GT used)."""
        matched = np.full(cls_iou.shape[0], -1)
        used = np.zeros(cls_iou.shape[1], dtype=bool)
        if cls_iou.shape[1] == 0:
            return matched, used
        for p in range(cls_iou.shape[0]):
            free = np.where(used, 0.0, cls_iou[p])
            g = int(free.argmax())
            if free[g] >= self.pos:
                matched[p], used[g] = g, True
        return matched, used

    def _add_error(self, det: _Det, image: int, iou: np.ndarray, same: np.ndarray, used: np.ndarray,
                   gt_cls: np.ndarray, claimed: np.ndarray) -> None:
        """Classify one false positive from its IoU (G,) with the image's GT, in tidecv's order."""
        kind, g = _error_kind(iou, same, used, self.pos, self.bg)
        error = _Error(kind, det.category, det)
        if kind in ("cls", "loc") and not used[g]:
            error.fix = _Det(int(gt_cls[g]) if kind == "cls" else det.category, det.score, det.rank)
            error.target = (image, g)
            claimed[g] = True
            if error.target not in self.best or self.best[error.target].score < det.score:
                self.best[error.target] = det
        self.errors.append(error)

    def resolve(self) -> None:
        """Keep a cls/loc fix only for the highest-scoring error pointing at its GT."""
        for error in self.errors:
            if error.target is not None and self.best[error.target].rank != error.prediction.rank:
                error.fix = None


def _error_kind(iou: np.ndarray, same: np.ndarray, used: np.ndarray, pos: float, bg: float
                ) -> tuple[str, int]:
    """The error type of a false positive and the GT index it refers to (-1 for none)."""
    if iou.size == 0:
        return "bkg", -1
    own = np.where(same, iou, 0.0)
    g = int(own.argmax())
    if bg <= own[g] <= pos:
        return "loc", g
    other = np.where(same, 0.0, iou)
    g = int(other.argmax())
    if other[g] >= pos:
        return "cls", g
    taken = np.where(same & used, iou, 0.0)
    g = int(taken.argmax())
    if taken[g] >= pos:
        return "dupe", g
    if iou.max() <= bg:
        return "bkg", -1
    return "both", -1


def _iou(dets: list[dict], gts: list[dict], crowd: bool) -> np.ndarray:
    """Mask IoU (D, G); with ``crowd`` the union is the detection's own area, as in COCO."""
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    return np.asarray(mask_utils.iou(dets, gts, [int(crowd)] * len(gts)), dtype=np.float64)


def class_ap(is_true: np.ndarray, num_gt: int) -> float:
    """COCO 101-point interpolated AP in percent of one class's predictions, sorted by score (N,)."""
    if num_gt <= 0 or is_true.size == 0:
        return 0.0
    hits = np.cumsum(is_true)
    recall = hits / num_gt
    precision = hits / np.arange(1, is_true.size + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
    at = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    return float(precision[at[at < precision.size]].sum() / RECALL_POINTS * PERCENT)


def _mean_ap(true: list[_Det], false: list[_Det], gt_counts: Mapping[int, int], classes: Iterable[int]) -> float:
    """Mean AP over ``classes``; a class with no GT left and no predictions is left out."""
    points: dict[int, list[tuple[float, int, bool]]] = defaultdict(list)
    for dets, is_true in ((true, True), (false, False)):
        for det in dets:
            points[det.category].append((-det.score, det.rank, is_true))
    aps = []
    for category in classes:
        if gt_counts.get(category, 0) <= 0 and not points[category]:
            continue
        ordered = np.array([t for _, _, t in sorted(points[category])], dtype=bool)
        aps.append(class_ap(ordered, gt_counts.get(category, 0)))
    return float(np.mean(aps)) if aps else 0.0


def _fixed_ap(found: _Collector, classes: list[int], kind: str) -> float:
    """AP with the errors of ``kind`` fixed and every other error left as it is."""
    true, false, counts = list(found.true_positives), [], Counter(found.gt_counts)
    for error in found.errors:
        if error.kind != kind:
            if error.prediction is not None:
                false.append(error.prediction)
        elif kind == "miss":
            counts[error.category] -= 1
        elif error.fix is not None:
            true.append(error.fix)
    return _mean_ap(true, false, counts, classes)


def tide_analysis(ground_truth: dict, results: list[dict], *, pos_threshold: float = TIDE_POS_THRESHOLD,
                  background_threshold: float = TIDE_BACKGROUND_THRESHOLD,
                  max_detections: int = MAX_DETECTIONS) -> TideReport:
    """TIDE report of COCO ``results`` (RLE masks) against a COCO instances dict ``ground_truth``."""
    if not 0.0 < background_threshold <= pos_threshold <= 1.0:
        raise ValueError(f"need 0 < background_threshold ({background_threshold}) <= "
                         f"pos_threshold ({pos_threshold}) <= 1")
    sizes = {image["id"]: (image["height"], image["width"]) for image in ground_truth["images"]}
    truths, crowds, preds = defaultdict(list), defaultdict(list), defaultdict(list)
    for ann in ground_truth["annotations"]:
        if ann["image_id"] not in sizes:
            raise ValueError(f"annotation {ann.get('id')!r} is for image {ann['image_id']!r}, which is not listed")
        target = crowds if ann.get("iscrowd", 0) else truths
        target[ann["image_id"]].append((ann["category_id"], segmentation_rle(ann["segmentation"], *sizes[ann["image_id"]])))
    for rank, record in enumerate(results):
        if record["image_id"] in sizes:
            det = _Det(record["category_id"], float(record["score"]), rank)
            preds[record["image_id"]].append((det, segmentation_rle(record["segmentation"], *sizes[record["image_id"]])))
    found = _Collector(pos_threshold, background_threshold)
    analysed = 0
    for image, image_id in enumerate(sizes):
        ranked = sorted(preds[image_id], key=lambda item: (-item[0].score, item[0].rank))[:max_detections]
        analysed += len(ranked)
        found.add_image(image, truths[image_id], crowds[image_id], ranked)
    found.resolve()
    return _report(found, analysed)


def _report(found: _Collector, analysed: int) -> TideReport:
    classes = sorted(c for c, n in found.gt_counts.items() if n > 0)
    false = [e.prediction for e in found.errors if e.prediction is not None]
    ap = _mean_ap(found.true_positives, false, found.gt_counts, classes)
    main = {kind: max(_fixed_ap(found, classes, kind) - ap, 0.0) for kind in MAIN_ERRORS}
    ranked_first = [d._replace(score=1.0) for d in found.true_positives]
    ranked_last = [d._replace(score=0.0) for d in false]
    fewer_gt = found.gt_counts - found.false_negatives
    special = {"false_pos": _mean_ap(ranked_first, ranked_last, found.gt_counts, classes) - ap,
               "false_neg": _mean_ap(found.true_positives, false, fewer_gt, classes) - ap}
    counts = Counter(e.kind for e in found.errors)
    return TideReport(ap=ap, main=main, special=special, counts={k: counts[k] for k in MAIN_ERRORS},
                      true_positives=len(found.true_positives), ground_truth=sum(found.gt_counts.values()),
                      predictions=analysed, pos_threshold=found.pos, background_threshold=found.bg)


def tide_analysis_files(annotations: str | Path, results: str | Path, **options: float) -> TideReport:
    """``tide_analysis`` of a COCO annotations file and a COCO results file (both JSON); ``options``
    are ``tide_analysis``'s keyword arguments."""
    coco = load_ground_truth(annotations)
    return tide_analysis(coco.dataset, load_results(results, coco), **options)


def comparison_rows(reports: Mapping[str, TideReport], digits: int = 2) -> list[list[str]]:
    """A table of reports side by side: a header row ``["", *names]``, then AP50, the main and
    special dAP, and the error counts, one row each, values formatted with ``digits`` decimals."""
    rows = [["", *reports], ["AP50", *(f"{r.ap:.{digits}f}" for r in reports.values())]]
    for kind in MAIN_ERRORS:
        rows.append([f"dAP {ERROR_LABELS[kind]}", *(f"{r.main[kind]:.{digits}f}" for r in reports.values())])
    for kind in SPECIAL_ERRORS:
        rows.append([f"dAP {ERROR_LABELS[kind]}", *(f"{r.special[kind]:.{digits}f}" for r in reports.values())])
    for kind in MAIN_ERRORS:
        rows.append([f"# {ERROR_LABELS[kind]}", *(str(r.counts[kind]) for r in reports.values())])
    return rows



def run_names(paths: Sequence[str | Path]) -> list[str]:
    """Short distinct names for runs: file stems, or their folders' names when the stems repeat."""
    paths = [Path(p) for p in paths]
    for naming in (lambda p: p.stem, lambda p: p.parent.name, lambda p: str(p)):
        names = [naming(path) for path in paths]
        if len(set(names)) == len(names) and all(names):
            return names
    return [f"run{i + 1}" for i in range(len(paths))]


def analyse_runs(annotations: Path, *, results: Sequence[Path] = (), models: Sequence[ModelSource] = (),
                 images: Path | None = None, names: Sequence[str] | None = None,
                 pos_threshold: float = TIDE_POS_THRESHOLD, background_threshold: float = TIDE_BACKGROUND_THRESHOLD,
                 batch_size: int = DATASET_BATCH_SIZE, progress: Progress = SILENT) -> dict[str, TideReport]:
    """TIDE reports, by run name, of results files or of models run on the dataset's ``images``
    (one kind or the other). ``names`` default to ``run_names`` of the files."""
    if bool(results) == bool(models):
        raise SparseInstError("give results files or models (with images), not both or neither", setting="results")
    sources = [str(r) for r in results] or [str(m.weights or m.recipe) for m in models]
    labels = list(names) if names else run_names(sources)
    if len(labels) != len(sources) or len(set(labels)) != len(labels):
        raise SparseInstError(f"need {len(sources)} distinct run names, got {labels}", setting="names")
    if not 0 < background_threshold <= pos_threshold <= 1:
        raise SparseInstError("thresholds: need 0 < background_threshold <= pos_threshold <= 1",
                              setting="background_threshold")
    options = {"pos_threshold": pos_threshold, "background_threshold": background_threshold}
    truth = CocoInstances(annotations)
    for notice in reader_notices(truth):  # what the reader skipped or repaired, as eval lists it
        progress.note(f"warning: {notice}")
    ground_truth = ground_truth_index(truth)
    if results:
        return {label: tide_analysis(ground_truth.dataset, load_results(path, ground_truth), **options)
                for label, path in zip(labels, results)}
    if images is None:
        raise SparseInstError("running a model needs images, the folder of the annotations' images", setting="images")
    dataset = CocoInstances(annotations, images)
    reports = {}
    for label, model in zip(labels, models):
        predictions, _, _ = predict_dataset(model.open(dataset.categories, progress), dataset, batch_size, progress,
                                            task=f"tide {label}")
        reports[label] = tide_analysis(ground_truth.dataset, predictions, **options)
    return reports
