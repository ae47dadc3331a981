"""TIDE error analysis on hand-built 20x20 images with rectangle masks.

Every expected AP below is worked out by hand with COCO's 101-point interpolation:
AP = 100 * (sum over recall thresholds r = 0.00, 0.01, ..., 1.00 of the best precision reached at
recall >= r) / 101. A class ranked by score as ``TP FP`` etc. has precision and recall after each
prediction; thresholds beyond the highest recall count as precision 0.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sparseinst_cli.analysis.tide import (
    MAIN_ERRORS,
    SPECIAL_ERRORS,
    TideReport,
    class_ap,
    comparison_rows,
    tide_analysis,
    tide_analysis_files,
)
from sparseinst_cli.analysis.tide_plot import DPI, FIGURE_INCHES, save_summary_plot
from sparseinst_cli.data.coco import encode_rle

SIZE = 20
CAT, DOG = 1, 2
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def rect(x0: int, y0: int, x1: int, y1: int) -> dict:
    """RLE of the pixels x0 <= x < x1, y0 <= y < y1 of a SIZE x SIZE image."""
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return encode_rle(mask)


def ground_truth(*annotations: tuple, images: int = 1) -> dict:
    """COCO instances dict; each annotation is (image_id, category, segmentation[, iscrowd])."""
    anns = []
    for number, (image_id, category, segmentation, *crowd) in enumerate(annotations, start=1):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, SIZE, SIZE)) \
            if isinstance(segmentation, list) else segmentation
        anns.append({"id": number, "image_id": image_id, "category_id": category, "segmentation": segmentation,
                     "iscrowd": crowd[0] if crowd else 0, "area": float(mask_utils.area(rle))})
    return {"images": [{"id": i, "file_name": f"{i}.png", "height": SIZE, "width": SIZE}
                       for i in range(1, images + 1)],
            "annotations": anns,
            "categories": [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"}]}


def result(image_id: int, category: int, score: float, segmentation: dict) -> dict:
    return {"image_id": image_id, "category_id": category, "score": score, "segmentation": segmentation}


def assert_only(report: TideReport, kind: str, value: float) -> None:
    """``kind``'s dAP is ``value`` and every other main dAP is exactly 0."""
    assert report.main[kind] == pytest.approx(value)
    assert {k: v for k, v in report.main.items() if k != kind} == {k: 0.0 for k in MAIN_ERRORS if k != kind}


A, C = rect(0, 0, 10, 10), rect(10, 10, 20, 20)  # two 100-pixel squares that do not touch


def test_perfect_predictions_have_ap_100_and_no_error() -> None:
    polygon = [[2, 2, 12, 2, 12, 14, 2, 14]]
    exact = encode_rle(mask_utils.decode(mask_utils.frPyObjects(polygon, SIZE, SIZE))[..., 0])
    gt = ground_truth((1, CAT, A), (1, DOG, C), (2, CAT, polygon), images=2)
    report = tide_analysis(gt, [result(1, CAT, 0.9, A), result(1, DOG, 0.8, C), result(2, CAT, 0.7, exact)])
    assert report.ap == 100.0
    assert report.main == dict.fromkeys(MAIN_ERRORS, 0.0)
    assert report.special == dict.fromkeys(SPECIAL_ERRORS, 0.0)
    assert report.counts == dict.fromkeys(MAIN_ERRORS, 0)
    assert (report.true_positives, report.ground_truth, report.predictions) == (3, 3, 3)


def test_class_error_is_relabelled() -> None:
    # The dog's mask is predicted as a cat (IoU 1 with a GT of another class): a cls error.
    # cat: TP .9, FP .8 with 1 GT -> precision 1 at every recall -> AP 100; dog: 1 GT, nothing -> 0.
    # AP = (100 + 0) / 2 = 50. Fixing relabels the FP as a dog true positive: dog AP 100 -> 100.
    gt = ground_truth((1, CAT, A), (1, DOG, C))
    report = tide_analysis(gt, [result(1, CAT, 0.9, A), result(1, CAT, 0.8, C)])
    assert report.ap == pytest.approx(50.0)
    assert_only(report, "cls", 50.0)
    assert report.counts == {"cls": 1, "loc": 0, "both": 0, "dupe": 0, "bkg": 0, "miss": 0}
    # false_neg: the dog GT leaves the counts, and with no dog prediction left the class leaves
    # the mean: AP = cat's 100. false_pos: cat's TP already ranks first, so nothing changes.
    assert report.special == {"false_pos": 0.0, "false_neg": pytest.approx(50.0)}


def test_localization_error_gets_a_perfect_mask() -> None:
    # The cat pred (0,0)-(10,3) lies inside A: IoU 30 / 100 = 0.3, in [0.1, 0.5] -> loc error.
    # cat ranked FP .9, TP .8 with 2 GT: precision 0, 1/2 at recall 0, 1/2; the interpolated
    # precision is 1/2 up to recall 0.5 (51 thresholds) -> AP = 51 * 0.5 / 101 = 25.2475.
    # Fixed: TP, TP -> AP 100, dAP 74.7525.
    gt = ground_truth((1, CAT, A), (1, CAT, C))
    report = tide_analysis(gt, [result(1, CAT, 0.9, rect(0, 0, 10, 3)), result(1, CAT, 0.8, C)])
    assert report.ap == pytest.approx(100 * 51 * 0.5 / 101)
    assert_only(report, "loc", 100 - 100 * 51 * 0.5 / 101)
    assert report.counts["loc"] == 1 and report.counts["miss"] == 0  # A is accounted for by the loc error
    # false_pos: TP ranked first -> precision 1 up to recall 0.5 -> 51 / 101 = 50.495 (+25.2475).
    # false_neg: A leaves the counts (1 GT): FP, TP -> precision 1/2 at recall 1 -> 50 (+24.7525).
    assert report.special["false_pos"] == pytest.approx(100 * 51 / 101 - 100 * 25.5 / 101)
    assert report.special["false_neg"] == pytest.approx(50 - 100 * 25.5 / 101)


def test_duplicate_is_suppressed() -> None:
    # A second cat mask (0,0)-(10,8) has IoU 0.8 with A, which the .9 prediction already took.
    # cat ranked TP .9, FP .8, TP .7 with 2 GT: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    # Interpolated: 1 up to recall 0.5 (51 thresholds), 2/3 above (50) -> AP = (51 + 100/3) / 101.
    gt = ground_truth((1, CAT, A), (1, CAT, C))
    report = tide_analysis(gt, [result(1, CAT, 0.9, A), result(1, CAT, 0.8, rect(0, 0, 10, 8)),
                                result(1, CAT, 0.7, C)])
    ap = 100 * (51 + 100 / 3) / 101  # 83.498
    assert report.ap == pytest.approx(ap)
    assert_only(report, "dupe", 100 - ap)
    assert report.counts["dupe"] == 1
    assert report.special == {"false_pos": pytest.approx(100 - ap), "false_neg": 0.0}


def test_background_error_is_suppressed() -> None:
    # Image 1: a cat pred on empty ground (IoU 0 with every GT); image 2 has no GT at all.
    # cat ranked FP .95, FP .9, TP .7 with 1 GT: precision 1/3 at recall 1 -> AP 33.333.
    gt = ground_truth((1, CAT, A), images=2)
    report = tide_analysis(gt, [result(1, CAT, 0.7, A), result(1, CAT, 0.9, rect(12, 12, 20, 20)),
                                result(2, CAT, 0.95, rect(0, 0, 5, 5))])
    assert report.ap == pytest.approx(100 / 3)
    assert_only(report, "bkg", 100 - 100 / 3)
    assert report.counts["bkg"] == 2
    assert report.special == {"false_pos": pytest.approx(200 / 3), "false_neg": 0.0}


def test_missed_ground_truth_leaves_the_counts() -> None:
    # Three cat GT (image 2 has no prediction at all), one found: precision 1 at recall 1/3,
    # which covers thresholds 0.00..0.33 (34) -> AP = 34 / 101 = 33.663. Fixing both misses
    # leaves 1 GT -> AP 100.
    gt = ground_truth((1, CAT, A), (1, CAT, C), (2, CAT, rect(5, 5, 15, 15)), images=2)
    report = tide_analysis(gt, [result(1, CAT, 0.9, A)])
    assert report.ap == pytest.approx(100 * 34 / 101)
    assert_only(report, "miss", 100 - 100 * 34 / 101)
    assert report.counts["miss"] == 2
    assert report.special == {"false_pos": 0.0, "false_neg": pytest.approx(100 - 100 * 34 / 101)}


def test_wrong_class_and_poor_mask_is_both() -> None:
    # The cat pred (0,0)-(10,3) has IoU 0.3 with the dog A (another class) and 0 with the cat C.
    # cat: FP .9, TP .8 with 1 GT -> 50; dog: TP -> 100. AP 75; suppressing it gives 100.
    gt = ground_truth((1, DOG, A), (1, CAT, C))
    report = tide_analysis(gt, [result(1, DOG, 0.95, A), result(1, CAT, 0.9, rect(0, 0, 10, 3)),
                                result(1, CAT, 0.8, C)])
    assert report.ap == pytest.approx(75.0)
    assert_only(report, "both", 25.0)
    assert report.counts["both"] == 1
    assert report.special == {"false_pos": pytest.approx(25.0), "false_neg": 0.0}


def test_localization_is_tested_before_classification() -> None:
    # The cat pred (7,0)-(20,10): IoU 30 / 200 = 0.15 with the cat A, 100 / 130 = 0.77 with the
    # dog (10,0)-(20,10). tidecv tests loc first, so it is a loc error pointing at A.
    # AP: cat FP -> 0, dog nothing -> 0. Fixing loc: cat 100 -> mean 50. The dog GT is a miss;
    # fixing it alone empties the dog class, leaving cat's 0.
    gt = ground_truth((1, CAT, A), (1, DOG, rect(10, 0, 20, 10)))
    report = tide_analysis(gt, [result(1, CAT, 0.9, rect(7, 0, 20, 10))])
    assert report.counts == {"cls": 0, "loc": 1, "both": 0, "dupe": 0, "bkg": 0, "miss": 1}
    assert report.ap == 0.0
    assert_only(report, "loc", 50.0)


def test_only_the_top_claim_on_a_ground_truth_is_fixed() -> None:
    # On the cat A: a dog pred with IoU 1 (cls, .9) and a cat pred with IoU 0.3 (loc, .8). The
    # cls error scores higher, so only it is turned into a true positive; the loc one is removed.
    # The dog class has no GT and is left out of the mean. AP: cat FP with 1 GT -> 0.
    # Fix cls: cat TP .9, FP .8 -> 100. Fix loc: the loc pred is removed, cat keeps 0 -> dAP 0.
    gt = ground_truth((1, CAT, A))
    report = tide_analysis(gt, [result(1, DOG, 0.9, A), result(1, CAT, 0.8, rect(0, 0, 10, 3))])
    assert report.counts["cls"] == 1 and report.counts["loc"] == 1
    assert report.ap == 0.0
    assert_only(report, "cls", 100.0)


def test_class_without_ground_truth_is_left_out_of_the_mean() -> None:
    # A dog pred on background with no dog GT anywhere: a bkg error, but AP is cat's 100 alone
    # (COCO's rule; tidecv would average in a dog AP of 0 and report 50).
    gt = ground_truth((1, CAT, A))
    report = tide_analysis(gt, [result(1, CAT, 0.9, A), result(1, DOG, 0.8, C)])
    assert report.ap == 100.0
    assert report.counts["bkg"] == 1
    assert report.main["bkg"] == 0.0


def test_prediction_inside_a_crowd_region_is_ignored() -> None:
    gt = ground_truth((1, CAT, A), (1, CAT, rect(0, 10, 20, 20), 1))
    report = tide_analysis(gt, [result(1, CAT, 0.9, A), result(1, CAT, 0.8, rect(0, 12, 10, 20))])
    assert report.ap == 100.0
    assert report.counts == dict.fromkeys(MAIN_ERRORS, 0)
    assert (report.true_positives, report.ground_truth, report.predictions) == (1, 1, 2)


def test_max_detections_caps_each_image() -> None:
    # Only the .9 prediction is kept: 1 TP of 2 GT -> 51 / 101; C becomes a miss.
    gt = ground_truth((1, CAT, A), (1, CAT, C))
    report = tide_analysis(gt, [result(1, CAT, 0.9, A), result(1, CAT, 0.7, C)], max_detections=1)
    assert report.ap == pytest.approx(100 * 51 / 101)
    assert report.counts["miss"] == 1 and report.predictions == 1


def test_class_ap_follows_coco_interpolation() -> None:
    assert class_ap(np.array([True, False, True]), 2) == pytest.approx(100 * (51 + 100 / 3) / 101)
    assert class_ap(np.array([], dtype=bool), 3) == 0.0
    assert class_ap(np.array([False]), 0) == 0.0


def test_ap_agrees_with_cocoeval_ap50(tmp_path) -> None:
    from sparseinst_cli.analysis.coco_eval import load_ground_truth, mask_ap

    gt = ground_truth((1, CAT, A), (1, DOG, C), (2, CAT, rect(5, 5, 15, 15)), (2, DOG, rect(0, 0, 6, 20)),
                      (2, CAT, rect(14, 0, 20, 20), 1), images=2)
    results = [result(1, CAT, 0.9, A), result(1, CAT, 0.85, C), result(1, DOG, 0.6, rect(10, 10, 20, 16)),
               result(2, CAT, 0.8, rect(5, 5, 15, 12)), result(2, DOG, 0.75, rect(0, 0, 6, 14)),
               result(2, CAT, 0.5, rect(15, 0, 20, 20)), result(2, DOG, 0.4, rect(0, 0, 6, 20))]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    expected = mask_ap(load_ground_truth(tmp_path / "gt.json"), results)["AP50"]
    report = tide_analysis_files(tmp_path / "gt.json", tmp_path / "results.json")
    assert report.ap == pytest.approx(expected, abs=1e-3)
    assert report.to_json() == tide_analysis(gt, results).to_json()


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="background_threshold"):
        tide_analysis(ground_truth(), [], pos_threshold=0.3, background_threshold=0.4)


def test_report_json_and_comparison_rows() -> None:
    gt = ground_truth((1, CAT, A), (1, DOG, C))
    good = tide_analysis(gt, [result(1, CAT, 0.9, A), result(1, DOG, 0.8, C)])
    swapped = tide_analysis(gt, [result(1, CAT, 0.9, A), result(1, CAT, 0.8, C)])
    data = json.loads(json.dumps(swapped.to_json()))
    assert data["ap50"] == pytest.approx(50.0) and data["main"]["cls"] == pytest.approx(50.0)
    assert set(data["special"]) == set(SPECIAL_ERRORS) and data["counts"]["cls"] == 1
    rows = comparison_rows({"good": good, "swapped": swapped})
    assert rows[0] == ["", "good", "swapped"]
    assert rows[1] == ["AP50", "100.00", "50.00"]
    assert ["dAP Cls", "0.00", "50.00"] in rows and ["# Cls", "0", "1"] in rows
    assert len(rows) == 2 + len(MAIN_ERRORS) + len(SPECIAL_ERRORS) + len(MAIN_ERRORS)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("names", [("model",), ("baseline", "tuned")])
def test_summary_plot_is_a_png_of_fixed_size(tmp_path, names) -> None:
    gt = ground_truth((1, CAT, A), (1, CAT, C))
    report = tide_analysis(gt, [result(1, CAT, 0.9, rect(0, 0, 10, 3)), result(1, CAT, 0.8, C)])
    path = save_summary_plot(dict.fromkeys(names, report), tmp_path / "plots" / "tide.png")
    assert png_size(path) == (int(FIGURE_INCHES[0] * DPI), int(FIGURE_INCHES[1] * DPI))


def test_summary_plot_needs_a_report(tmp_path) -> None:
    with pytest.raises(ValueError):
        save_summary_plot({}, tmp_path / "tide.png")


# --- the command ---------------------------------------------------------------------------------

def test_tide_command_compares_results_files(tmp_path) -> None:
    from typer.testing import CliRunner

    from sparseinst_cli.cli.app import app

    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(ground_truth((1, CAT, A), (1, DOG, C))))
    for name, records in {"swap": [result(1, CAT, 0.9, A), result(1, CAT, 0.8, C)],
                          "perfect": [result(1, CAT, 0.9, A), result(1, DOG, 0.8, C)]}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(records))
    out = tmp_path / "tide"
    run = CliRunner().invoke(app, ["tide", "--data", str(gt), "--results", str(tmp_path / "swap" / "results.json"),
                                   "--results", str(tmp_path / "perfect" / "results.json"), "--out", str(out)])
    assert run.exit_code == 0, run.output
    written = json.loads((out / "tide.json").read_text())
    assert list(written) == ["swap", "perfect"]  # same file names: named after their folders
    assert written["swap"]["ap50"] == pytest.approx(50.0) and written["swap"]["main"]["cls"] == pytest.approx(50.0)
    assert written["perfect"]["ap50"] == pytest.approx(100.0)
    assert (out / "tide.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "dAP Cls" in run.output


def test_tide_command_errors(tmp_path) -> None:
    from typer.testing import CliRunner

    from sparseinst_cli.cli.app import app

    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(ground_truth((1, CAT, A))))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([result(5, CAT, 0.9, A)]))
    runner = CliRunner()
    nothing = runner.invoke(app, ["tide", "--data", str(gt)])
    assert nothing.exit_code == 2 and "one or more --results" in nothing.output
    unknown = runner.invoke(app, ["tide", "--data", str(gt), "--results", str(bad)])
    assert unknown.exit_code == 2 and "image id 5" in unknown.output
    names = runner.invoke(app, ["tide", "--data", str(gt), "--results", str(bad), "--names", "a,b"])
    assert names.exit_code == 2 and "--names" in names.output
