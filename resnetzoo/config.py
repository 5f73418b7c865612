"""What a model is, as plain data: enough to rebuild it, preprocess its input and label its output.

``create()`` attaches a ``ModelConfig`` to every model as ``model.config``; saved folders store it
as ``config.json`` so that they rebuild their own model without any code of the caller's.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ResnetzooError
from .model import BasicBlock, Bottleneck, ResNet

__all__ = ["ModelConfig", "ConfigError", "build_model", "IMAGENET_EVAL_TRANSFORM", "default_eval_transform", "FORMAT"]

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

# Version tag of the saved-folder format ("format" in config.json); bump it when a change would
# make older resnetzoo misread a folder.
FORMAT = "resnetzoo/1"
# torchvision.transforms.InterpolationMode values, spelled out so that reading a config never imports torchvision.
_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: object, limit: int = 80) -> str:
    """repr() cut to ``limit`` characters: error messages must stay readable for hostile values."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            raise ConfigError(
                f"{source}: format {fmt!r} is not {FORMAT!r}. It was written by another library or a newer resnetzoo; "
                "upgrade resnetzoo (pip install -U resnetzoo) or re-save the model."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(data) - known - {"resnetzoo_version", "format"})
        if unknown:
            raise ConfigError(f"{source}: unknown fields {unknown[:10]}. Was it written by a newer resnetzoo?")
        missing = [name for name in ("architecture", "num_classes") if name not in data]
        if missing:
            raise ConfigError(f"{source}: required fields {missing} are missing.")
        try:
            # Copy the containers: a config must not share lists or dicts with the caller's parsed JSON.
            config = cls(**{k: copy.deepcopy(v) for k, v in data.items() if k in known})
            config.validate(source)
        except RecursionError:  # deeply nested JSON in "extra": refuse it rather than crash
            raise ConfigError(f"{source}: values are nested too deeply.") from None
        return config

    def validate(self, source: str = "config") -> None:
        """Raise ``ConfigError`` (naming ``source``) unless every field has a sane type and range.

        Checked before anything is built: a hostile or corrupt ``config.json`` must fail here with a
        message, not later inside ``nn.Conv2d`` or by allocating a model of absurd size.
        """

        def fail(reason: str) -> None:
            raise ConfigError(f"{source}: {reason}")

        if self.architecture is not None:
            from .registry import VARIANTS, close_matches

            if not isinstance(self.architecture, str) or self.architecture not in VARIANTS:
                hint = close_matches(str(self.architecture)[:100], VARIANTS)
                fail(f"unknown architecture {str(self.architecture)[:100]!r}"
                     + (f" (did you mean {', '.join(hint)}?)" if hint else "") + f"; known: {', '.join(VARIANTS)}.")
        if not isinstance(self.block, str) or self.block not in _BLOCKS:
            fail(f"block must be one of {sorted(_BLOCKS)}, got {_short(self.block)}.")
        if (not isinstance(self.num_layers, list) or len(self.num_layers) != 4
                or not all(_is_int(n) and 1 <= n <= 200 for n in self.num_layers)):
            fail(f"num_layers must be four integers in 1..200, got {_short(self.num_layers)}.")
        for name, low, high in (("num_classes", 0, 1_000_000), ("in_chans", 1, 64), ("groups", 1, 256),
                                ("width_per_group", 1, 1024)):
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                fail(f"{name} must be an integer in {low}..{high}, got {_short(value)}.")
        if not isinstance(self.zero_init_residual, bool):
            fail(f"zero_init_residual must be true or false, got {_short(self.zero_init_residual)}.")
        if self.block == "BasicBlock" and (self.groups != 1 or self.width_per_group != 64):
            fail("BasicBlock needs groups=1 and width_per_group=64.")
        if self.architecture is not None:
            self._check_matches_variant(fail)
        if self.class_names is not None and (
            not isinstance(self.class_names, list) or not all(isinstance(c, str) for c in self.class_names)
            or len(self.class_names) != self.num_classes
        ):
            fail(f"class_names must be a list of {self.num_classes} strings (one per class) or null.")
        self._check_eval_transform(fail)
        for name in ("base_weights", "base_weights_sha256"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                fail(f"{name} must be a string or null, got {_short(getattr(self, name))}.")
        if self.base_weights_sha256 is not None and not _SHA256.fullmatch(self.base_weights_sha256):
            fail(f"base_weights_sha256 must be 64 lowercase hex digits, got {_short(self.base_weights_sha256)}.")
        if not isinstance(self.extra, dict):
            fail("extra must be an object.")
        try:
            json.dumps(self.extra, allow_nan=True)
        except (TypeError, ValueError) as error:
            fail(f"extra must hold only JSON values (numbers, strings, lists, objects): {error}.")

    def _check_matches_variant(self, fail) -> None:
        # A config that names "resnet50" but carries BasicBlock shapes is corrupt (or hand-edited):
        # building either reading would silently give a different model from the one saved.
        from .registry import VARIANTS

        variant = VARIANTS[self.architecture]
        expected = {"block": variant.block.__name__, "num_layers": list(variant.layers), "groups": variant.groups,
                    "width_per_group": variant.width_per_group}
        actual = {"block": self.block, "num_layers": list(self.num_layers), "groups": self.groups,
                  "width_per_group": self.width_per_group}
        wrong = [f"{k}={actual[k]!r} (expected {expected[k]!r})" for k in expected if actual[k] != expected[k]]
        if wrong:
            fail(f"architecture {self.architecture!r} does not match its shape: {', '.join(wrong)}. "
                 "Fix the config, or set architecture to null for a custom shape.")

    def _check_eval_transform(self, fail) -> None:
        transform = self.eval_transform
        if not isinstance(transform, dict) or not {"resize_size", "crop_size", "mean", "std"} <= set(transform):
            fail("eval_transform must have resize_size, crop_size, mean and std.")
        for key in ("resize_size", "crop_size"):
            if not _is_int(transform[key]) or not 1 <= transform[key] <= 8192:
                fail(f"eval_transform.{key} must be an integer in 1..8192, got {_short(transform[key])}.")
        for key in ("mean", "std"):
            values = transform[key]
            if (not isinstance(values, list) or not 1 <= len(values) <= 64
                    or not all(_is_number(v) and math.isfinite(v) for v in values)):
                fail(f"eval_transform.{key} must be a list of 1..64 finite numbers, got {_short(values)}.")
        if not all(v > 0 for v in transform["std"]):
            fail(f"eval_transform.std must be positive, got {_short(transform['std'])}.")
        interpolation = transform.get("interpolation", "bilinear")
        if interpolation not in _INTERPOLATIONS:
            fail(f"eval_transform.interpolation must be one of {', '.join(_INTERPOLATIONS)}, got {_short(interpolation)}.")

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
