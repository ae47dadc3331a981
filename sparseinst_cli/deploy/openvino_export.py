"""OpenVINO IR export of a model: fp32, or int8 by NNCF post-training quantization calibrated
on the user's images.

The IR is the ONNX export's graph (``deploy.onnx_export``: same input, outputs and decoding,
batch, height and width free) converted by OpenVINO: an ``.xml`` file and its ``.bin`` weights,
in fp32 (not OpenVINO's default fp16 compression). Its runtime info holds the recipe and the
category names under ``sparseinst``, so the ``.xml`` alone is enough for
``predict``/``eval``/``time --backend openvino``.

int8: NNCF's default scheme for CPUs (symmetric int8 weights per output channel, activations
with ranges from the calibration images, fast bias correction), which quantizes convolutions and
matrix products where OpenVINO has int8 kernels. As in the ONNX Runtime int8 export
(``deploy.quantize``), the first convolution (it reads the image) and the depthwise ones stay in
float, and so do the linear heads and the mask product (matrix products: in int8 they doubled the
demo model's median score difference from fp32, 0.021 to 0.043). The calibration images
go through prediction's pre-processing, read by the same code as ``export int8``. On x86 CPUs whose
int8 sums saturate (AVX2 without VNNI) every layer's weights keep to 7 bits (NNCF's overflow fix).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.images import collect_images
from ..defaults import CALIBRATION_IMAGES
from ..errors import ExportError
from ..files import not_found, output_file, refuse_overwriting
from ..inference.onnx_runtime import (
    METADATA_CATEGORIES,
    METADATA_OUTPUTS,
    METADATA_RECIPE,
)
from ..inference.openvino_runtime import (
    INSTALL_HINT,
    IR_SUFFIX,
    MODEL_SUFFIXES,
    WEIGHTS_SUFFIX,
    OpenVinoModel,
    import_openvino,
    info_path,
    metadata,
    read_model,
)
from ..inference.predictor import Predictor, int8_sums_saturate
from ..progress import SILENT, Progress
from .onnx_export import export_onnx

CONVOLUTIONS = ("Convolution", "GroupConvolution")
FLOAT_TYPES = ("MatMul",)  # the linear heads and the mask product stay in float
QUANTIZER = "FakeQuantize"
QUIET_LOGGERS = ("nncf", "torch")
METADATA_QUANTIZATION = "sparseinst.quantization"  # the same record key as the ONNX int8 export's
METADATA_KEYS = (METADATA_RECIPE, METADATA_CATEGORIES, METADATA_OUTPUTS, METADATA_QUANTIZATION)


@dataclass
class OpenVinoExport:
    """What ``export_openvino`` wrote and how."""

    source: Path
    output: Path  # the .xml
    weights: Path  # its .bin
    int8: bool = False
    calibration: list[str] = field(default_factory=list)  # the images read, in order
    skipped: list[str] = field(default_factory=list)  # unreadable ones, one message each
    quantized_layers: int = 0  # convolutions and matrix products computing in int8
    float_layers: int = 0
    reduce_range: bool = False  # 7-bit weights, for CPUs whose int8 sums saturate

    @property
    def size_mb(self) -> float:
        return (self.output.stat().st_size + self.weights.stat().st_size) / 1e6


def export_openvino(weights: str | Path, out: str | Path, *, calibration: Path | None = None,
                    max_images: int = CALIBRATION_IMAGES, reduce_range: bool | None = None,
                    progress: Progress = SILENT) -> OpenVinoExport:
    """An OpenVINO IR of ``weights`` (a native checkpoint, or an exported ``.onnx`` or ``.xml``)
    at ``out`` (``.xml``, with its ``.bin`` beside it; both written whole or not at all): fp32,
    or int8 calibrated on at most ``max_images`` images of the folder ``calibration`` (only it).

    ``reduce_range`` keeps every layer's int8 weights to 7 bits, for CPUs that sum uint8 x int8
    products in 16 bits (x86 with AVX2 but no VNNI); by default it follows the CPU at hand
    (``int8_sums_saturate``): export on the kind of CPU the model will run on, or set it."""
    weights, out = Path(weights), Path(out)
    out = output_file(out, (IR_SUFFIX,), inputs=[weights])
    bin_file = out.with_suffix(WEIGHTS_SUFFIX)
    refuse_overwriting([bin_file], [weights])
    paths = [] if calibration is None else calibration_images(calibration, max_images)
    report = OpenVinoExport(weights, out, bin_file, int8=calibration is not None)
    with tempfile.TemporaryDirectory(prefix="sparseinst-openvino-") as folder:
        source = weights
        if source.suffix not in MODEL_SUFFIXES:
            progress.note(f"exporting {weights} to ONNX (a minute for a ResNet-50) ...")
            source = export_onnx(weights, Path(folder) / "float.onnx", dynamic=True)
        model = read_model(source)
        stored = {key: metadata(model, key) for key in METADATA_KEYS}
        if stored[METADATA_RECIPE] is None:
            raise ExportError(f"{source}: not exported by 'sparseinst export' (no recipe in its metadata)")
        if calibration is not None:
            if stored[METADATA_QUANTIZATION] is not None:
                raise ExportError(f"{source}: already quantized; give the float model", setting="weights")
            model = quantize(model, Predictor.from_openvino(source), paths, report, reduce_range, progress)
            stored[METADATA_QUANTIZATION] = json.dumps(
                {"calibration_images": len(report.calibration), "tool": "nncf",
                 "weights": "int8 per channel" + (", 7-bit range (overflow fix)" if report.reduce_range else ""),
                 "reduce_range": report.reduce_range,
                 "float_layers": ["the first convolution", "depthwise convolutions", "matrix products"]})
        report.quantized_layers, report.float_layers = count_layers(model)
        for key, value in stored.items():
            if value is not None:
                model.set_rt_info(value, info_path(key))
        save_ir(model, out)
    OpenVinoModel(out)  # the written files load, with their recipe
    return report


def calibration_images(folder: Path, max_images: int) -> list[Path]:
    """At most ``max_images`` images of ``folder`` (sorted), refused in one line when there are none."""
    if not Path(folder).is_dir():
        raise ExportError(f"{not_found(folder, 'folder')}; give a folder of calibration images", setting="calibration")
    if max_images < 1:
        raise ExportError(f"max_images must be at least 1, got {max_images}", setting="max_images")
    paths, problems = collect_images([folder])
    if problems or not paths:
        raise ExportError(f"{folder}: no calibration images ({'; '.join(problems) or 'empty'})", setting="calibration")
    return paths[:max_images]


def quantize(model: Any, predictor: Predictor, paths: list[Path], report: OpenVinoExport,
             reduce_range: bool | None, progress: Progress) -> Any:
    """``model`` quantized by NNCF on the images at ``paths``, pre-processed by ``predictor``."""
    try:
        from nncf import Dataset, IgnoredScope
        from nncf import quantize as nncf_quantize
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            OverflowFix,
        )
    except ImportError:
        raise ExportError(f"the int8 export needs NNCF: {INSTALL_HINT}", setting="calibration") from None

    from .quantize import _calibration_batches

    report.reduce_range = int8_sums_saturate() if reduce_range is None else reduce_range
    batches = _calibration_batches(predictor, paths, report, progress)
    if not batches:
        raise ExportError(f"{paths[0].parent}: none of the calibration images could be read", setting="calibration")
    overflow_fix = OverflowFix.ENABLE if report.reduce_range else OverflowFix.DISABLE
    progress.note(f"quantizing with NNCF on {len(batches)} images ...")
    try:
        with quiet_nncf():
            return nncf_quantize(model, Dataset(batches), subset_size=len(batches),
                                 ignored_scope=IgnoredScope(names=float_convolutions(model), types=list(FLOAT_TYPES),
                                                            validate=False),
                                 advanced_parameters=AdvancedQuantizationParameters(overflow_fix=overflow_fix))
    except Exception as exc:  # noqa: BLE001 - NNCF raises many types; the user needs the reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(f"int8 quantization failed: {type(exc).__name__}: {reason}") from None


@contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF's INFO lines and progress bars (printed to stdout) and torch's import-time warnings
    (NNCF loads torch's extension module) kept from the user's terminal for the block."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def float_convolutions(model: Any) -> list[str]:
    """The names of the convolutions that stay in float: the one that reads the image (int8 there
    alone cost the demo model 8 of its 34 mask AP in the ONNX Runtime export) and the depthwise
    ones (one input channel per output: too few weights for int8 ranges to hold)."""
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in CONVOLUTIONS:
            continue
        reads_image = op.input_value(0).get_node().get_type_name() == "Parameter"
        filters = op.input_value(1).get_partial_shape()  # GroupConvolution: (groups, out, in, kh, kw)
        depthwise = op.get_type_name() == "GroupConvolution" and filters.rank.get_length() == 5 \
            and filters[2].is_static and filters[2].get_length() == 1
        if reads_image or depthwise:
            names.append(op.get_friendly_name())
    return names


def count_layers(model: Any) -> tuple[int, int]:
    """(int8, float) convolutions and matrix products: int8 where a quantizer feeds the data input."""
    quantized = computing = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() in (*CONVOLUTIONS, *FLOAT_TYPES):
            computing += 1
            quantized += op.input_value(0).get_node().get_type_name() == QUANTIZER
    return quantized, computing - quantized


def save_ir(model: Any, out: Path) -> None:
    """``model`` as ``out`` (.xml) and its .bin, in fp32: both staged in a hidden folder beside
    them, then renamed, the .bin first, so that a crash never leaves an .xml without its weights."""
    openvino = import_openvino()
    stage = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", suffix=".tmp", dir=out.parent))
    try:
        staged = stage / out.name
        openvino.save_model(model, str(staged), compress_to_fp16=False)
        for path in (staged.with_suffix(WEIGHTS_SUFFIX), staged):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(staged.with_suffix(WEIGHTS_SUFFIX), out.with_suffix(WEIGHTS_SUFFIX))
        os.replace(staged, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
