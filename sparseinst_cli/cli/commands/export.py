"""``sparseinst export onnx``, ``sparseinst export int8`` and ``sparseinst export openvino``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...defaults import CALIBRATION_IMAGES
from ...files import refuse_existing, refuse_overwriting
from ..console import console, err_console, fail
from ..progress import ProgressBar

ExportWeights = Annotated[str, typer.Option(
    "--weights", "-w", metavar="FILE|NAME", show_default=False,
    help="Native checkpoint (.safetensors), or a model name from 'sparseinst models'.")]
MaxImagesOption = Annotated[int, typer.Option("--max-images", min=1, help="Calibration images used at most.")]
ReduceRangeOption = Annotated[Optional[bool], typer.Option(  # noqa: UP007 - typer needs Optional
    "--reduce-range/--full-range", show_default=False,
    help="int8 only: 7-bit int8 weights, for x86 CPUs with AVX2 but no VNNI (their 16-bit int8 sums saturate) "
         "\\[default: as the CPU at hand needs].")]
OverwriteOption = Annotated[bool, typer.Option(
    "--overwrite", help="Replace an existing output file (an earlier export); without it, it is refused.")]


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise fail(f"--size: expected HEIGHTxWIDTH like 640x864, got '{text}'") from None
    return height, width


def export_target(weights: str, out: Path | None, suffix: str, overwrite: bool, companion: str | None = None) -> Path:
    """The file to write (``--out``, or beside the weights with ``suffix``), refused before any
    work when it is the input, or when it (or its ``companion`` file, the IR's .bin) exists
    and ``--overwrite`` was not given."""
    target = out or Path(weights).with_name(Path(weights).stem + suffix)
    outputs = [target, *([target.with_suffix(companion)] if companion else [])]
    refuse_overwriting(outputs, [Path(weights)])
    refuse_existing(outputs, overwrite)
    return target


def onnx(
    context: typer.Context,
    weights: ExportWeights,
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP007 - typer needs Optional
        "--out", "-o", help="ONNX file to write (default: beside the weights, .onnx; for a model name, NAME.onnx "
                            "here).")] = None,
    dynamic: Annotated[bool, typer.Option(help="Free batch size, height and width (multiples of 32).")] = False,
    size: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="Example input HEIGHTxWIDTH, multiples of 32 (default: the recipe's test size for a 4:3 image); "
             "without --dynamic the only size the model accepts.")] = None,
    batch: Annotated[int, typer.Option(help="Example batch size (the only one without --dynamic).")] = 1,
    overwrite: OverwriteOption = False,
) -> None:
    """Export the network to ONNX with frozen batch norm folded in.

    Input 'images' (B, 3, H, W): RGB normalized with the recipe's mean and std, padded to a
    multiple of 32. Outputs 'logits' (B, N, C), 'objectness' (B, N, 1), 'masks' (B, N, H/4, W/4),
    decoded as the README describes. The recipe and class names are stored in the metadata, so
    predict/eval/time take the .onnx file with --backend onnxruntime.

    Examples:
      sparseinst export onnx --weights runs/demo/model.safetensors --dynamic
      sparseinst export onnx --weights r50_giam_aug
      sparseinst predict photos/ --weights runs/demo/model.onnx --backend onnxruntime
    """
    from ...deploy.onnx_export import export_onnx
    from ...inference.onnx_runtime import OUTPUT_NAMES
    from ...weights.zoo import resolve_weights

    if batch < 1:
        raise fail("--batch must be at least 1")
    example_size = parse_size(size)
    target = export_target(weights, out, ".onnx", overwrite)
    with ProgressBar() as progress:
        source = resolve_weights(weights, progress)
    err_console.print(f"exporting {source} to ONNX (this takes a minute for a ResNet-50) ...")
    path = export_onnx(source, target, dynamic=dynamic, size=example_size, batch=batch)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; outputs {', '.join(OUTPUT_NAMES)}"
                  f"{'; dynamic batch, height and width' if dynamic else ''})")


def int8(
    context: typer.Context,
    weights: Annotated[str, typer.Option(
        "--weights", "-w", metavar="FILE|NAME", show_default=False,
        help="Native checkpoint (.safetensors), float .onnx, or a model name from 'sparseinst models'.")],
    calibration: Annotated[Path, typer.Option(
        "--calibration", help="Folder of your images (like those the model will see); only it is read.",
        show_default=False)],
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP007 - typer needs Optional
        "--out", "-o", help="int8 ONNX file to write (default: beside the weights, .int8.onnx; for a model name, "
                            "NAME.int8.onnx here).")] = None,
    max_images: MaxImagesOption = CALIBRATION_IMAGES,
    reduce_range: ReduceRangeOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Quantize a model to int8 (ONNX Runtime, static QDQ), calibrated on a folder of images.

    Convolutions get int8 weights (per channel) and uint8 activations with ranges from the
    calibration images; the first and the depthwise convolutions, the activation maps'
    normalization and the linear heads stay in float. Run the result with --backend onnxruntime.

    Examples:
      sparseinst export int8 --weights runs/demo/model.safetensors --calibration data/demo/val
      sparseinst eval --weights runs/demo/model.int8.onnx --backend onnxruntime --data data/demo/val.json --images data/demo/val
    """
    from ...deploy.quantize import quantize_model
    from ...weights.zoo import resolve_weights

    target = export_target(weights, out, ".int8.onnx", overwrite)
    with ProgressBar() as progress:
        source = resolve_weights(weights, progress)
        report = quantize_model(source, target, calibration, max_images=max_images, reduce_range=reduce_range,
                                progress=progress)
    for problem in report.skipped:
        err_console.print(f"[red]skipped:[/] {problem}")
    console.print(f"wrote {report.output} ({report.output.stat().st_size / 1e6:.1f} MB; {report.quantized_nodes} "
                  f"convolutions int8{' (7-bit weights)' if report.reduce_range else ''}, {report.float_nodes} "
                  f"float; calibrated on {len(report.calibration)} images)")


def openvino(
    context: typer.Context,
    weights: Annotated[str, typer.Option(
        "--weights", "-w", metavar="FILE|NAME", show_default=False,
        help="Native checkpoint (.safetensors), exported .onnx, or a model name from 'sparseinst models'.")],
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP007 - typer needs Optional
        "--out", "-o", help="IR file to write, .xml (its .bin beside it) \\[default: beside the weights, .xml, "
                            "or .int8.xml; for a model name, NAME.xml here].", show_default=False)] = None,
    quantize: Annotated[bool, typer.Option(
        "--int8", help="Quantize to int8 with NNCF, calibrated on --calibration.")] = False,
    calibration: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--calibration", help="With --int8: folder of your images (like those the model will see); only it is read.",
        show_default=False)] = None,
    max_images: MaxImagesOption = CALIBRATION_IMAGES,
    reduce_range: ReduceRangeOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Export the network to OpenVINO IR (.xml and .bin), fp32, or int8 with --int8.

    The ONNX export's network (same input and outputs, batch, height and width free) converted by
    OpenVINO, weights kept in fp32; the recipe and class names travel in the IR, so
    predict/eval/time take the .xml with --backend openvino (the CPU). With --int8, NNCF
    quantizes the convolutions on your --calibration images (the first and the depthwise ones, the
    linear heads and the mask product stay in float). Needs pip install 'sparseinst\\[openvino]'.

    Examples:
      sparseinst export openvino --weights runs/demo/model.safetensors
      sparseinst export openvino --weights runs/demo/model.safetensors --int8 --calibration data/demo/train
      sparseinst predict photos/ --weights runs/demo/model.xml --backend openvino
      sparseinst time --weights runs/demo/model.safetensors --variants backends --compare runs/demo/model.int8.xml
    """
    from ...deploy.openvino_export import export_openvino
    from ...inference.openvino_runtime import WEIGHTS_SUFFIX
    from ...weights.zoo import resolve_weights

    if quantize != (calibration is not None):
        raise fail("--int8 needs --calibration FOLDER" if quantize else "--calibration is for --int8; add it")
    target = export_target(weights, out, ".int8.xml" if quantize else ".xml", overwrite, companion=WEIGHTS_SUFFIX)
    with ProgressBar() as progress:
        source = resolve_weights(weights, progress)
        report = export_openvino(source, target, calibration=calibration, max_images=max_images,
                                 reduce_range=reduce_range, progress=progress)
    for problem in report.skipped:
        err_console.print(f"[red]skipped:[/] {problem}")
    detail = (f"{report.quantized_layers} layers int8{' (7-bit weights)' if report.reduce_range else ''}, "
              f"{report.float_layers} float; calibrated on {len(report.calibration)} images") if report.int8 else "fp32"
    console.print(f"wrote {report.output} and {report.weights.name} ({report.size_mb:.1f} MB; {detail})")
