"""sparseinst: train, measure, understand and ship SparseInst real-time instance segmenters.

The Python API, layer by layer (each layer imports only the ones above it in this list)::

    recipe, checkpoint, builder   the recipe schema, native checkpoints, the model builder
    data                          COCO reading, masks and RLE, images, augmentation, demo data
    weights                       checkpoint conversion, the model zoo (download, convert, cache)
    inference                     Predictor, the fast path, onnxruntime, batch loops, drawing
    deploy                        ONNX export, int8, opening a model on a backend
    analysis                      COCO mask AP, TIDE, timing, IAM visualization
    engine                        training: Trainer, solver, EMA, distributed, run files
    cli                           the ``sparseinst`` command line (the only user of typer and rich)

>>> from sparseinst_cli import Predictor
>>> prediction = Predictor.from_pretrained("r50_giam_aug")("photo.jpg")[0]
"""

from __future__ import annotations

import importlib
from typing import Any

# The public names and the modules that define them, imported when first used: importing the
# package stays cheap (the command line starts, and Ctrl-C during start-up ends, cleanly).
_EXPORTS = {
    **dict.fromkeys(["build", "register", "registry"], "components"),
    **dict.fromkeys(["ComponentError", "DatasetError", "ExportError", "ImageError", "RecipeError", "ResultsError",
                     "SparseInstError", "TrainingError", "WeightsError"], "sparseinst_cli.errors"),
    **dict.fromkeys(["Progress"], "sparseinst_cli.progress"),
    **dict.fromkeys(["keep_freed_memory"], "sparseinst_cli.memory"),
    **dict.fromkeys(["Recipe", "load_recipe"], "sparseinst_cli.recipe"),
    **dict.fromkeys(["build_model"], "sparseinst_cli.builder"),
    **dict.fromkeys(["load_model", "read_checkpoint", "save_checkpoint"], "sparseinst_cli.checkpoint"),
    **dict.fromkeys(["CocoInstances"], "sparseinst_cli.data.datasets"),
    **dict.fromkeys(["generate_demo_dataset"], "sparseinst_cli.data.demo_data"),
    **dict.fromkeys(["Backend", "CocoBackend", "Precision"], "sparseinst_cli.defaults"),
    **dict.fromkeys(["Predictor"], "sparseinst_cli.inference.predictor"),
    **dict.fromkeys(["Prediction"], "sparseinst_cli.inference.results"),
    **dict.fromkeys(["MODELS", "ZooModel", "pretrained", "resolve_weights"], "sparseinst_cli.weights.zoo"),
    **dict.fromkeys(["predict_dataset", "predict_files"], "sparseinst_cli.inference.batches"),
    **dict.fromkeys(["Tracker"], "sparseinst_cli.inference.tracking"),
    **dict.fromkeys(["predict_tiled"], "sparseinst_cli.inference.tiling"),
    **dict.fromkeys(["predict_video", "track_frames"], "sparseinst_cli.inference.video"),
    **dict.fromkeys(["ModelSource", "choose_backend"], "sparseinst_cli.deploy.backends"),
    **dict.fromkeys(["export_openvino"], "sparseinst_cli.deploy.openvino_export"),
    **dict.fromkeys(["convert_checkpoint"], "sparseinst_cli.weights.conversion"),
    **dict.fromkeys(["export_onnx"], "sparseinst_cli.deploy.onnx_export"),
    **dict.fromkeys(["Evaluation", "evaluate_dataset", "evaluate_model", "evaluate_results", "mask_ap"],
                    "sparseinst_cli.analysis.coco_eval"),
    **dict.fromkeys(["TideReport", "analyse_runs", "tide_analysis"], "sparseinst_cli.analysis.tide"),
    **dict.fromkeys(["TimingReport", "time_models", "time_predictor"], "sparseinst_cli.analysis.timing"),
    **dict.fromkeys(["TrainResult", "Trainer"], "sparseinst_cli.engine.trainer"),
    **dict.fromkeys(["TrainingParts", "build_training"], "sparseinst_cli.engine.build"),
    **dict.fromkeys(["train"], "sparseinst_cli.engine.training"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
