"""sparseinst: train, measure, understand and ship SparseInst real-time instance segmenters.

The Python API, layer by layer (each layer imports only the ones above it in this list)::

    recipe, checkpoint, builder   the recipe schema, native checkpoints, the model builder
    data                          COCO reading, masks and RLE, images, augmentation, demo data
    inference                     Predictor, the fast path, onnxruntime, batch loops, drawing
    deploy                        ONNX export, checkpoint conversion, opening a model on a backend
    analysis                      COCO mask AP, TIDE, timing, IAM visualization
    engine                        training: Trainer, solver, EMA, distributed, run files
    cli                           the ``sparseinst`` command line (the only user of typer and rich)

>>> from sparseinst_cli import Predictor
>>> instances = Predictor.from_checkpoint("runs/demo/model.safetensors")(["photo.jpg"])[0]
"""

from components import build, register, registry

from .analysis.coco_eval import (
    Evaluation,
    evaluate_dataset,
    evaluate_model,
    evaluate_results,
    mask_ap,
)
from .analysis.tide import TideReport, analyse_runs, tide_analysis
from .analysis.timing import TimingReport, time_models, time_predictor
from .builder import build_model
from .checkpoint import load_model, read_checkpoint, save_checkpoint
from .data.datasets import CocoInstances
from .data.demo_data import generate_demo_dataset
from .deploy.backends import Backend, ModelSource
from .deploy.conversion import convert_checkpoint
from .deploy.onnx_export import export_onnx
from .engine.trainer import Trainer, TrainResult
from .engine.training import train
from .errors import (
    ComponentError,
    DatasetError,
    ExportError,
    ImageError,
    RecipeError,
    ResultsError,
    SparseInstError,
    TrainingError,
    WeightsError,
)
from .inference.batches import predict_dataset, predict_files
from .inference.predictor import Precision, Predictor
from .progress import Progress
from .recipe import Recipe, load_recipe

__all__ = [
    "Backend",
    "CocoInstances",
    "ComponentError",
    "DatasetError",
    "Evaluation",
    "ExportError",
    "ImageError",
    "ModelSource",
    "Precision",
    "Predictor",
    "Progress",
    "Recipe",
    "RecipeError",
    "ResultsError",
    "SparseInstError",
    "TideReport",
    "TimingReport",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "WeightsError",
    "analyse_runs",
    "build",
    "build_model",
    "convert_checkpoint",
    "evaluate_dataset",
    "evaluate_model",
    "evaluate_results",
    "export_onnx",
    "generate_demo_dataset",
    "load_model",
    "load_recipe",
    "mask_ap",
    "predict_dataset",
    "predict_files",
    "read_checkpoint",
    "register",
    "registry",
    "save_checkpoint",
    "tide_analysis",
    "time_models",
    "time_predictor",
    "train",
]
