"""SparseInst's building blocks, each registered by name in its family."""

from . import backbones, decoder, efficientnet, encoders, iam, losses, matcher  # noqa: F401  (fill the registries)
from .decoder import SparseInstDecoder, SparseInstOutput
from .errors import ComponentError, SparseInstError, WeightsError
from .model import SparseInst
from .postprocess import Instances, postprocess
from .registry import FAMILIES, UnknownComponentError, build, register, registry

__all__ = [
    "FAMILIES",
    "ComponentError",
    "Instances",
    "SparseInst",
    "SparseInstDecoder",
    "SparseInstError",
    "SparseInstOutput",
    "UnknownComponentError",
    "WeightsError",
    "build",
    "postprocess",
    "register",
    "registry",
]
