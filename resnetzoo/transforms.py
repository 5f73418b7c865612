"""Image preprocessing for training and evaluation, built from torchvision.transforms.v2.

The evaluation transform is data (a dict with ``resize_size``, ``crop_size``, ``mean``, ``std``,
``interpolation``) stored in every model's config, so a saved model preprocesses its input exactly
as it was evaluated. Pretrained weights bring their own: torchvision's V2 weights were evaluated
with resize 232 / crop 224, V1 with 256 / 224.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, v2

from .config import ModelConfig, default_eval_transform
from .errors import ResnetzooError

__all__ = ["eval_transform", "train_transform", "eval_transform_config", "TransformConfigError"]


class TransformConfigError(ResnetzooError, ValueError):
    """An eval-transform description that cannot be turned into a transform."""


def _as_dict(config_or_dict: Any) -> dict[str, Any]:
    """Accept a dict, a ``ModelConfig``, a model with ``.config``, a torchvision/resnetzoo weights record, or a
    name such as ``"resnet50.IMAGENET1K_V2"``."""
    if isinstance(config_or_dict, str):  # "resnet50" (default weights) or "resnet50.IMAGENET1K_V1"
        from .weights.records import resolve_pretrained

        model_name, _, tag = config_or_dict.partition(".")
        config_or_dict = resolve_pretrained(model_name, tag or True)
    if isinstance(config_or_dict, Mapping):
        data = dict(config_or_dict)
    elif isinstance(config_or_dict, ModelConfig):
        data = dict(config_or_dict.eval_transform)
    elif isinstance(getattr(config_or_dict, "config", None), ModelConfig):
        data = dict(config_or_dict.config.eval_transform)
    elif hasattr(config_or_dict, "eval_transform_config"):  # resnetzoo.weights.WeightsRecord
        data = config_or_dict.eval_transform_config()
    elif hasattr(config_or_dict, "transforms") and hasattr(config_or_dict, "meta"):  # torchvision Weights member
        preset = config_or_dict.transforms()
        data = {
            "resize_size": int(preset.resize_size[0]), "crop_size": int(preset.crop_size[0]),
            "mean": list(preset.mean), "std": list(preset.std), "interpolation": preset.interpolation.value,
        }
    else:
        raise TransformConfigError(
            f"Cannot build a transform from a {type(config_or_dict).__name__}. Pass model.config, a model, "
            "a weights record, or a dict with resize_size, crop_size, mean and std."
        )
    missing = {"resize_size", "crop_size", "mean", "std"} - set(data)
    if missing:
        raise TransformConfigError(f"Eval transform {data} lacks {sorted(missing)}; expected resize_size, crop_size, mean, std.")
    return data


def _interpolation(data: Mapping[str, Any]) -> InterpolationMode:
    name = str(data.get("interpolation", "bilinear")).lower()
    try:
        return InterpolationMode(name)
    except ValueError:
        choices = ", ".join(mode.value for mode in InterpolationMode)
        raise TransformConfigError(f"Unknown interpolation {name!r}; use one of: {choices}.") from None


def eval_transform_config(image_size: int | None = None, weights: Any = None) -> dict[str, Any]:
    """The eval-transform dict for a dataset or model.

    With ``weights`` (a weights record, torchvision Weights member, ``ModelConfig``, model or dict),
    their own preprocessing is used; ``image_size`` then rescales it, keeping the resize/crop ratio,
    mean, std and interpolation. Without weights: ImageNet's 256/224 ratio at ``image_size`` (224).
    """
    if weights is None:
        return default_eval_transform(image_size or 224)
    data = _as_dict(weights)
    data["mean"], data["std"] = [float(v) for v in data["mean"]], [float(v) for v in data["std"]]
    if image_size is not None and image_size != data["crop_size"]:
        data["resize_size"] = round(image_size * data["resize_size"] / data["crop_size"])
        data["crop_size"] = image_size
    data.setdefault("interpolation", "bilinear")
    return data


def _normalize(data: Mapping[str, Any]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(data["mean"]), std=list(data["std"]))]


def eval_transform(config_or_dict: Any) -> v2.Compose:
    """PIL image (or uint8 tensor) -> normalised float tensor, as the model was evaluated.

    Args:
        config_or_dict: ``model.config``, a model, a weights record, or an eval-transform dict.
    """
    data = _as_dict(config_or_dict)
    # Resize and crop before ToImage: on a PIL image they run in Pillow, exactly as torchvision's
    # weights presets do, so pretrained accuracy is reproduced to the last uint8 level.
    return v2.Compose([
        v2.Resize(int(data["resize_size"]), interpolation=_interpolation(data), antialias=True),
        v2.CenterCrop(int(data["crop_size"])),
        v2.ToImage(),
        *_normalize(data),
    ])


def train_transform(
    config_or_dict: Any,
    scale: Sequence[float] = (0.08, 1.0),
    hflip: bool = True,
) -> v2.Compose:
    """Training augmentation at the eval transform's crop size: random resized crop and horizontal flip.

    Args:
        config_or_dict: as for :func:`eval_transform`; its crop size, mean, std and interpolation are used.
        scale: area range of the random crop (torchvision's default 0.08..1); raise the lower bound for
            tiny images or datasets where the object fills the frame.
        hflip: flip half of the images left-right; turn off for text, digits and other chiral classes.
    """
    data = _as_dict(config_or_dict)
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(int(data["crop_size"]), scale=tuple(scale), interpolation=_interpolation(data), antialias=True),
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose([*steps, v2.ToImage(), *_normalize(data)])
