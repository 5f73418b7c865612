"""What a model is, as plain data: enough to rebuild it, preprocess its input and label its output.

``create()`` attaches a ``ModelConfig`` to every model as ``model.config``; saved folders store it
as ``config.json`` so that they rebuild their own model without any code of the caller's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ResnetzooError
from .model import BasicBlock, Bottleneck, ResNet

__all__ = ["ModelConfig", "ConfigError", "build_model", "IMAGENET_EVAL_TRANSFORM", "default_eval_transform"]

_BLOCKS = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}

# ImageNet statistics; every torchvision ResNet checkpoint was trained with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_eval_transform(image_size: int = 224) -> dict[str, Any]:
    """Resize to 256/224 of the crop (ImageNet's classic ratio), centre-crop, normalise."""
    return {
        "resize_size": round(image_size * 256 / 224),
        "crop_size": image_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "interpolation": "bilinear",
    }


IMAGENET_EVAL_TRANSFORM = default_eval_transform(224)


class ConfigError(ResnetzooError, ValueError):
    """A config (``config.json``) that does not describe a buildable model."""


@dataclass
class ModelConfig:
    """The architecture plus what a consumer needs around it. Every field is JSON-serialisable."""

    architecture: str | None  # registered name ("resnet50"), or None for a hand-configured ResNet
    num_classes: int
    in_chans: int = 3
    block: str = "BasicBlock"
    num_layers: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    groups: int = 1
    width_per_group: int = 64
    zero_init_residual: bool = False
    class_names: list[str] | None = None
    eval_transform: dict[str, Any] = field(default_factory=lambda: dict(IMAGENET_EVAL_TRANSFORM))
    base_weights: str | None = None  # "resnet50.IMAGENET1K_V2", a file name, or None (random init)
    base_weights_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # metrics, training recipe, ...

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ModelConfig:
        """Validate and build; any problem is a ``ConfigError`` that names ``source``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"resnetzoo_version", "format"})
        if unknown:
            raise ConfigError(f"{source}: unknown fields {unknown}. Was it written by a newer resnetzoo?")
        try:
            config = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as error:
            raise ConfigError(f"{source}: {error}.") from None
        config.validate(source)
        return config

    def validate(self, source: str = "config") -> None:
        def fail(reason: str) -> None:
            raise ConfigError(f"{source}: {reason}")

        if self.architecture is not None:
            from .registry import VARIANTS, close_matches

            if not isinstance(self.architecture, str) or self.architecture not in VARIANTS:
                hint = close_matches(str(self.architecture), VARIANTS)
                fail(f"unknown architecture {self.architecture!r}" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                     + f"; known: {', '.join(VARIANTS)}.")
        if self.block not in _BLOCKS:
            fail(f"block must be one of {sorted(_BLOCKS)}, got {self.block!r}.")
        if (not isinstance(self.num_layers, list) or len(self.num_layers) != 4
                or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 200 for n in self.num_layers)):
            fail(f"num_layers must be four integers in 1..200, got {self.num_layers!r}.")
        for name, low, high in (("num_classes", 0, 1_000_000), ("in_chans", 1, 64), ("groups", 1, 256),
                                ("width_per_group", 1, 1024)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                fail(f"{name} must be an integer in {low}..{high}, got {value!r}.")
        if self.block == "BasicBlock" and (self.groups != 1 or self.width_per_group != 64):
            fail("BasicBlock needs groups=1 and width_per_group=64.")
        if self.class_names is not None and (
            not isinstance(self.class_names, list) or not all(isinstance(c, str) for c in self.class_names)
            or len(self.class_names) != self.num_classes
        ):
            fail(f"class_names must be a list of {self.num_classes} strings.")
        transform = self.eval_transform
        if not isinstance(transform, dict) or not {"resize_size", "crop_size", "mean", "std"} <= set(transform):
            fail("eval_transform must have resize_size, crop_size, mean and std.")
        if not isinstance(self.extra, dict):
            fail("extra must be an object.")

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_chans,
            "num_classes": self.num_classes,
            "block": _BLOCKS[self.block],
            "num_layers": list(self.num_layers),
            "groups": self.groups,
            "width_per_group": self.width_per_group,
            "zero_init_residual": self.zero_init_residual,
        }


def build_model(config: ModelConfig) -> ResNet:
    """A randomly initialised ``ResNet`` of the config's shape, with ``model.config`` attached."""
    config.validate()
    model = ResNet(**config.model_kwargs())
    model.config = config
    return model
