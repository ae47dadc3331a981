"""The choices and defaults a user meets in the command line and the API, in one place that
imports nothing heavy (no torch, numpy or OpenCV): the command line reads them to parse its
arguments and print its help at once, and the modules that do the work take them from here."""

from __future__ import annotations

from enum import Enum


class Precision(str, Enum):
    """The network's arithmetic: fp32, or fp16/bf16 autocast (post-processing stays fp32); ``auto``
    is bf16 where the hardware computes it natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs
    with bf16), fp32 elsewhere."""

    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    auto = "auto"


class Backend(str, Enum):
    """What runs the network: PyTorch, onnxruntime or OpenVINO (CPU) on an exported model, or
    ``auto``: the fastest of those installed that gives PyTorch's instances on this machine
    (measured once per model and CPU, then cached)."""

    torch = "torch"
    onnxruntime = "onnxruntime"
    openvino = "openvino"
    auto = "auto"


class CocoBackend(str, Enum):
    """What computes COCO AP: pycocotools (the reference), faster-coco-eval, or ``auto`` (the
    faster one when installed)."""

    auto = "auto"
    pycocotools = "pycocotools"
    faster = "faster-coco-eval"


class SourceFormat(str, Enum):
    """The label formats ``data convert`` reads."""

    yolo = "yolo"
    labelme = "labelme"
    masks = "masks"


# Instances scoring below this are left out of what predict, the API, video and the IAM figure
# give; eval scores every candidate whatever it is (COCO AP ranks them all). On the trained demo
# model's 100 validation images (328 objects, IoU 0.5) 0.3 gives the best F1: 297 instances kept,
# precision 0.67, recall 0.61; 0.2 keeps 499 at precision 0.43, 0.4 keeps 206 at recall 0.51,
# and every candidate (762) is 72% false positives.
CONF = 0.3

DATASET_BATCH_SIZE = 4  # images per forward pass over a dataset (eval, tide)
IAM_TOP_K = 6  # instances in an IAM figure, best first
TIDE_POS_THRESHOLD = 0.5  # IoU at which TIDE counts a prediction as a true positive
TIDE_BACKGROUND_THRESHOLD = 0.1  # IoU under which a false positive is background
CALIBRATION_IMAGES = 32  # images whose activation ranges set the int8 scales
TIMING_WARMUP = 3  # untimed runs before a timing (allocator, caches, kernel choice settle)
TIMING_RUNS = 10  # timed runs; a timing gives their median, min and max
DEMO_TRAIN_IMAGES = 600
DEMO_VAL_IMAGES = 100
CEILING_SIZES = ("384", "512", "640")  # data ceiling's inference sizes (shorter side)
CURVES_FILE = "curves.png"  # a run's training curves
MIN_TILE = 128  # pixels; smaller tiles are blown up to the model's input size, wasting most of its work
DEFAULT_OVERLAP = 0.2  # the fraction of a tile its neighbour shares: objects up to that size lie whole in one tile
