"""int8 post-training quantization of an exported model, calibrated on the user's images.

ONNX Runtime's static QDQ quantization: weights int8 per output channel, activations uint8 with
ranges taken from the calibration images, run through the same pre-processing as prediction:
each range is the moving average of the images' minima and maxima, not their extremes, so that
one image's outliers do not coarsen a tensor's steps for all (on a model trained on coco128:
mask AP -3.1 -> -0.9 of fp32 together with the quantized ReLUs and additions below).
The convolutions are quantized (backbone, encoder, the decoder's stacks and the IAM), and so are
the ReLUs, residual additions, concatenations and resizes between them, so that a tensor is
quantized once instead of being dequantized and requantized at each of them. The first
convolution (it reads the image: int8 there alone cost the demo model 8 of its 34 mask AP) and
depthwise convolutions (too few weights per output) stay in float, and so do the activation
maps' normalization, the linear heads (class, objectness, mask kernels) and the mask product.
Measured on the demo model and r50_giam (benchmarks/int8.py, README "Speed"); evaluate it on
your data before use. The result is an ``.onnx`` file that ``predict``, ``eval`` and ``time``
run with ``--backend onnxruntime``; its metadata keeps the recipe and categories and records the
calibration.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

from ..data.images import collect_images, read_image, read_skipping
from ..defaults import CALIBRATION_IMAGES
from ..errors import ExportError
from ..files import atomic_write, not_found, output_file
from ..inference.onnx_runtime import OnnxModel
from ..inference.predictor import Predictor, int8_sums_saturate
from ..progress import SILENT, Progress
from .onnx_export import export_onnx

QUANTIZED_OPS = ("Conv", "Relu", "Add", "Concat", "Resize")
METADATA_QUANTIZATION = "sparseinst.quantization"


@dataclass
class QuantizationReport:
    source: Path
    output: Path
    calibration: list[str] = field(default_factory=list)  # the images read, in order
    skipped: list[str] = field(default_factory=list)  # unreadable ones, one message each
    quantized_nodes: int = 0
    float_nodes: int = 0
    reduce_range: bool = False  # weights kept to 7 bits, for CPUs whose int8 sums saturate


class _Calibration(CalibrationDataReader):
    """Feeds the pre-processed calibration images one at a time."""

    def __init__(self, batches: list, input_name: str) -> None:
        self._batches = iter(batches)
        self._input = input_name

    def get_next(self) -> dict | None:
        images = next(self._batches, None)
        return None if images is None else {self._input: images}


def _calibration_batches(predictor: Predictor, paths: list[Path], report: QuantizationReport,
                         progress: Progress) -> list:
    """The readable calibration images, pre-processed as prediction does (unreadable ones noted)."""
    batches = []
    progress.start("calibrate", len(paths))
    for path, image in read_skipping(paths, read_image, report.skipped, progress):
        report.calibration.append(str(path))
        batches.append(predictor.preprocess([image]).images.numpy())
        progress.advance()
    progress.stop()
    return batches


def quantize_model(weights: Path, out: Path, calibration: Path, *, max_images: int = CALIBRATION_IMAGES,
                   reduce_range: bool | None = None, progress: Progress = SILENT) -> QuantizationReport:
    """An int8 ONNX model of ``weights`` (a native checkpoint, or an exported float ``.onnx``) at
    ``out``, calibrated on at most ``max_images`` images of the folder ``calibration`` (only it).

    ``reduce_range`` keeps the int8 weights to 7 bits, for CPUs that sum uint8 x int8 products in
    16 bits (x86 with AVX2 but no VNNI): full-range weights overflow those sums and the instances
    drift. By default it follows the CPU at hand (``int8_sums_saturate``); export on the kind of
    CPU the model will run on, or set it."""
    if reduce_range is None:
        reduce_range = int8_sums_saturate()
    out = output_file(out, (".onnx",), inputs=[weights])
    if not Path(calibration).is_dir():
        raise ExportError(f"{not_found(calibration, 'folder')}; give a folder of calibration images")
    paths, problems = collect_images([calibration])
    if problems or not paths:
        raise ExportError(f"{calibration}: no calibration images ({'; '.join(problems) or 'empty'})")
    if max_images < 1:
        raise ExportError(f"max_images must be at least 1, got {max_images}")
    with tempfile.TemporaryDirectory(prefix="sparseinst-int8-") as folder:
        source = Path(weights)
        if source.suffix != ".onnx":
            progress.note(f"exporting {weights} to ONNX ...")
            source = export_onnx(weights, Path(folder) / "float.onnx", dynamic=True)
        predictor = Predictor.from_onnx(source)
        report = QuantizationReport(Path(weights), out, reduce_range=reduce_range)
        float_model = onnx.load(str(source))
        image_input = float_model.graph.input[0].name
        weights_shapes = {w.name: tuple(w.dims) for w in float_model.graph.initializer}
        float_convs = [node.name for node in float_model.graph.node if node.op_type == "Conv"
                       and (node.input[0] == image_input or _depthwise(node, weights_shapes))]
        batches = _calibration_batches(predictor, paths[:max_images], report, progress)
        if not batches:
            raise ExportError(f"{calibration}: none of the calibration images could be read")
        reader = _Calibration(batches, predictor.model.input_name)
        staged = Path(folder) / "int8.onnx"
        try:
            with _quiet_root_logger():  # onnxruntime advises pre-processing through the root logger
                quantize_static(str(source), str(staged), reader, quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                                reduce_range=reduce_range,
                                op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=float_convs,
                                extra_options={"CalibMovingAverage": True})
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types; the user needs the reason
            raise ExportError(f"int8 quantization failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        quantized = onnx.load(str(staged))
        convs = [n for n in quantized.graph.node if n.op_type == "Conv"]
        report.float_nodes = len(float_convs)
        report.quantized_nodes = len(convs) - len(float_convs)
        record = {"calibration_images": len(report.calibration),
                  "weights": "int8 per channel" + (", 7-bit range (reduce_range)" if reduce_range else ""),
                  "reduce_range": reduce_range,
                  "activations": "uint8, ranges from moving averages of the images' min and max",
                  "quantized_ops": list(QUANTIZED_OPS),
                  "float_layers": ["the first convolution", "depthwise convolutions"]}
        _set_metadata(quantized, {**{p.key: p.value for p in float_model.metadata_props},
                                  METADATA_QUANTIZATION: json.dumps(record)})
        atomic_write(out, lambda tmp: onnx.save(quantized, str(tmp)))
    OnnxModel(out)  # the written file loads, with its recipe
    return report


def _depthwise(node: onnx.NodeProto, weights_shapes: dict[str, tuple[int, ...]]) -> bool:
    """A depthwise convolution (one input channel per output): too few weights per output for
    int8 ranges to hold. Grouped convolutions with wider groups (the G-IAM's) are quantized."""
    shape = weights_shapes.get(node.input[1])
    return shape is not None and len(shape) == 4 and shape[1] == 1


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The root logger at ERROR for the block, and as it was after it: onnxruntime's quantizer
    modules call ``logging.basicConfig`` when imported, which would leave a handler that prints
    every later INFO and DEBUG line (torch.export's among them) to the user's terminal."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def _set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)
