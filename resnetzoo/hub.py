"""Saved folders (``config.json`` + ``model.safetensors``) and the Hugging Face Hub.

A folder rebuilds its own model: the config says which architecture, the safetensors file holds
every tensor (and a copy of the config in its metadata). Training runs write the same format.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from ._io import atomic_write
from .config import ConfigError, ModelConfig, build_model
from .errors import WeightsFileError
from .model import ResNet
from .weights.adapt import fit_state_dict
from .weights.safe import load_safetensors

__all__ = ["save_pretrained", "load_pretrained", "CONFIG_NAME", "WEIGHTS_NAME"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "resnetzoo/1"


def save_pretrained(model: ResNet, folder: str | os.PathLike, config: ModelConfig | None = None) -> Path:
    """Write ``model`` to ``folder`` as ``config.json`` + ``model.safetensors``; each file atomically."""
    folder = Path(folder)
    config = config or getattr(model, "config", None)
    if config is None:
        raise ConfigError("This model has no .config; build it with resnetzoo.create() or pass config=ModelConfig(...).")
    config.validate()
    config_json = json.dumps({"format": FORMAT, **config.to_dict()}, indent=2, sort_keys=False)
    # safetensors refuses tensors that share memory; contiguous CPU copies also make the file portable.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    payload = safetensors_bytes(tensors, metadata={"format": "pt", "resnetzoo_config": config_json})
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / WEIGHTS_NAME) as handle:
        handle.write(payload)
    with atomic_write(folder / CONFIG_NAME, "w") as handle:
        handle.write(config_json + "\n")
    logger.info("Saved %s to %s", config.architecture or "ResNet", folder)
    return folder


def read_config(folder: Path) -> ModelConfig:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{folder} has no {CONFIG_NAME}; it is not a folder saved by resnetzoo (save_pretrained or a training run).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error}).") from None
    return ModelConfig.from_dict(data, source=str(path))


def _resolve_source(source: str, revision: str | None) -> Path:
    if source.startswith("hf-hub:"):
        from huggingface_hub import snapshot_download

        repo_id = source[len("hf-hub:"):]
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "README.md"]))
    if revision is not None:
        raise TypeError("revision= applies only to 'hf-hub:' names.")
    return Path(source)


def load_pretrained(
    source: str | os.PathLike, num_classes: int | None = None, in_chans: int | None = None, revision: str | None = None,
    **overrides: Any,
) -> ResNet:
    """Rebuild the model saved in a folder (or on the Hub as ``hf-hub:org/name``), bit for bit.

    ``num_classes`` or ``in_chans`` different from the saved model adapt the head or stem as
    ``create()`` does for pretrained weights.
    """
    if overrides:
        raise TypeError(f"A saved model's architecture is fixed by its config.json; unexpected options {sorted(overrides)}.")
    folder = _resolve_source(os.fspath(source), revision)
    config = read_config(folder)
    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise WeightsFileError(weights_path, "missing.", f"A saved folder holds {CONFIG_NAME} and {WEIGHTS_NAME}.")
    state_dict = load_safetensors(weights_path)

    saved_shape = (config.num_classes, config.in_chans)
    if num_classes is not None and num_classes != config.num_classes:
        config.num_classes = num_classes
        config.class_names = None
    if in_chans is not None:
        config.in_chans = in_chans
    model = build_model(config)
    if (config.num_classes, config.in_chans) == saved_shape:
        # Same shape: load strictly, so that any difference is an error rather than an adaptation.
        _load_strict(model, state_dict, weights_path)
    else:
        model.load_state_dict(fit_state_dict(state_dict, model, str(weights_path)), strict=True)
    return model


def _load_strict(model: ResNet, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise WeightsFileError(path, f"does not match its {CONFIG_NAME}: {str(error)[:500]}") from None
