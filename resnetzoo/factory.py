"""``create()``: one entry point from a name (or a saved folder) to a ready model."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .config import ModelConfig, build_model, default_eval_transform
from .errors import ModelSourceError
from .hub import HF_HUB_PREFIX, load_pretrained
from .model import ResNet
from .registry import get_variant
from .weights.adapt import fit_state_dict, strip_prefixes
from .weights.files import fetch_weights, load_state_dict_file, sha256_file
from .weights.records import WeightsRecord, resolve_pretrained

__all__ = ["create"]

logger = logging.getLogger(__name__)

_ARCHITECTURE_OVERRIDES = {"zero_init_residual", "groups", "width_per_group", "num_layers", "block"}


def create(
    name: str | os.PathLike,
    pretrained: Any = False,
    num_classes: int | None = None,
    in_chans: int | None = None,
    progress: bool = True,
    **overrides: Any,
) -> ResNet:
    """Build a registered ResNet, optionally with pretrained weights adapted to your task.

    Args:
        name: a registered name (see ``list_models()``), a folder written by ``save_pretrained`` or a
            training run, or ``"hf-hub:org/name"`` for a model on the Hugging Face Hub.
        pretrained: ``False``; ``True`` for torchvision's default weights (IMAGENET1K_V2 where it
            exists, else V1); a tag such as ``"IMAGENET1K_V1"``; a torchvision ``Weights`` member;
            or a path to a ``.pth``/``.pt``/``.safetensors`` state dict.
        num_classes: classes of the new head. Default: the class count of the weights (1000 for
            ImageNet weights), or 1000 without weights. A different count re-initialises ``fc``.
        in_chans: input channels (default 3, or as saved for a folder); with pretrained weights the
            RGB stem is adapted.
        progress: draw a progress bar while downloading weights.
        **overrides: architecture options (``zero_init_residual``; ``groups``, ``width_per_group``,
            ``num_layers``, ``block`` for custom shapes). Folder and Hub sources take ``revision``.

    Returns:
        A ``ResNet`` in train mode with ``model.config`` describing it.
    """
    name_str = os.fspath(name)
    if name_str.startswith(HF_HUB_PREFIX) or Path(name_str).is_dir():
        # The folder format lives with the Hub code: they are the same files.
        return load_pretrained(name_str, num_classes=num_classes, in_chans=in_chans, **overrides)
    _refuse_missing_folder(name_str)
    if "revision" in overrides:
        raise TypeError("revision= applies only to 'hf-hub:' names.")

    unknown = set(overrides) - _ARCHITECTURE_OVERRIDES
    if unknown:
        raise TypeError(f"create() got unknown options {sorted(unknown)}; architecture options are {sorted(_ARCHITECTURE_OVERRIDES)}.")

    model_name = name_str.lower()
    in_chans = 3 if in_chans is None else in_chans
    variant = get_variant(model_name)
    weights = resolve_pretrained(model_name, pretrained)
    state_dict, source = _load_weights(weights, progress)
    if num_classes is None:
        num_classes = int(state_dict["fc.weight"].shape[0]) if state_dict is not None and "fc.weight" in state_dict else 1000

    arch = {**variant.kwargs(), **overrides}
    block = arch["block"]
    config = ModelConfig(
        architecture=model_name if not (set(overrides) - {"zero_init_residual"}) else None,
        num_classes=num_classes,
        in_chans=in_chans,
        block=block if isinstance(block, str) else block.__name__,
        num_layers=list(arch["num_layers"]),
        groups=arch["groups"],
        width_per_group=arch["width_per_group"],
        zero_init_residual=bool(overrides.get("zero_init_residual", False)),
    )
    if isinstance(weights, WeightsRecord):
        config.eval_transform = weights.eval_transform_config()
        config.base_weights = weights.full_name
        if num_classes == len(weights.categories):
            config.class_names = list(weights.categories)
    else:
        config.eval_transform = default_eval_transform(224)
    if isinstance(weights, Path):
        config.base_weights = weights.name
    if state_dict is not None:
        config.base_weights_sha256 = sha256_file(source)

    model = build_model(config)
    if state_dict is not None:
        model.load_state_dict(fit_state_dict(state_dict, model, str(source)), strict=True)
        logger.info("Loaded %s into %s.", config.base_weights, model_name)
    return model


def _load_weights(weights: WeightsRecord | Path | None, progress: bool):
    if weights is None:
        return None, None
    path = fetch_weights(weights, progress=progress) if isinstance(weights, WeightsRecord) else weights
    # Strip wrapper prefixes first so that the head's class count can be read from 'fc.weight'.
    return strip_prefixes(load_state_dict_file(path)), path


def _refuse_missing_folder(name: str) -> None:
    """A path that is not a folder gets a path's error, not "Unknown model './runs/x'. Did you mean ..."."""
    path = Path(name).expanduser()
    if path.is_file():
        raise ModelSourceError(
            f"{name} is a file, not a saved folder. For a state dict file, name the architecture and pass the file "
            f"as weights: resnetzoo.create('resnet50', pretrained={name!r})."
        )
    if os.sep in name or "/" in name or name.startswith((".", "~")):
        raise ModelSourceError(
            f"No such folder: {name}. resnetzoo.create() takes a registered name (see resnetzoo.list_models()), "
            "a folder written by save_pretrained() or a training run, or 'hf-hub:org/name'."
        )
