"""resnetzoo: hand-built ResNet classifiers with torchvision's weights, ready to fine-tune, export and benchmark.

    >>> import resnetzoo
    >>> model = resnetzoo.create("resnet50", pretrained=True, num_classes=150)
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import ModelConfig, build_model
from .errors import (
    ModelSourceError,
    ResnetzooError,
    StateDictMismatchError,
    UnknownModelError,
    UnknownWeightsError,
    WeightsFileError,
    WeightsHashMismatchError,
    WeightsUnavailableError,
)
from .factory import create
from .model import BasicBlock, Bottleneck, ResNet
from .registry import list_models

__version__ = "0.1.0"

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ModelConfig",
    "ModelSourceError",
    "ResNet",
    "ResnetzooError",
    "StateDictMismatchError",
    "UnknownModelError",
    "UnknownWeightsError",
    "WeightsFileError",
    "WeightsHashMismatchError",
    "WeightsUnavailableError",
    "build_model",
    "create",
    "list_models",
]

# No NullHandler on purpose: until the application configures logging, Python's last-resort handler
# prints our warnings (a skipped image, a folder loaded from its embedded config) to stderr, while the
# INFO lines (what create() adapted, one line per epoch) stay quiet. logging.basicConfig(level=logging.INFO)
# shows those too.

# Heavier submodules load on first use: `import resnetzoo` stays quick, and `resnetzoo.data.load_splits`
# works without a separate import.
_LAZY_SUBMODULES = {"data", "train", "predict", "export", "hub", "optimize", "weights", "profile", "demo", "transforms"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "optimize_for_inference":
        return importlib.import_module(".optimize", __name__).optimize_for_inference
    if name == "Trainer":
        return importlib.import_module(".train", __name__).Trainer
    raise AttributeError(f"module 'resnetzoo' has no attribute {name!r}")
