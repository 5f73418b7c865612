"""What an exported file carries so that a consumer needs none of our code: labels, input and preprocessing.

The same information goes into every format: ONNX ``metadata_props`` (string to string, so lists and
numbers are JSON-encoded), and a ``resnetzoo.json`` extra file inside TorchScript and ``.pt2`` archives.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..config import ModelConfig
from ..transforms import eval_transform_config

__all__ = [
    "EXPORT_FORMAT",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "EXTRA_FILE_NAME",
    "JSON_KEYS",
    "resolve_class_names",
    "export_metadata",
    "to_onnx_props",
    "from_onnx_props",
]

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "resnetzoo-export/1"
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
EXTRA_FILE_NAME = "resnetzoo.json"

# Metadata values that are not plain strings; ONNX stores them JSON-encoded.
JSON_KEYS = ("num_classes", "class_names", "input_shape", "resize_size", "crop_size", "mean", "std")


def resolve_class_names(config: ModelConfig) -> list[str]:
    """The config's class names; else the categories of its base weights when the head still fits them;
    else ``class_0``, ``class_1``, ... so that a consumer always gets one label per logit."""
    if config.class_names:
        return list(config.class_names)
    if config.base_weights and config.architecture:
        from ..weights.records import weights_records

        for record in weights_records(config.architecture):
            if record.full_name == config.base_weights and len(record.categories) == config.num_classes:
                return list(record.categories)
    return [f"class_{index}" for index in range(config.num_classes)]


def export_metadata(config: ModelConfig, image_size: int | None, dtype: str, resnetzoo_version: str) -> dict[str, Any]:
    """Everything a consumer of an exported file needs, as a JSON-serialisable dict."""
    # The weights' preprocessing at the exported size (resize/crop ratio, mean, std kept), as training used it.
    transform = eval_transform_config(image_size, weights=config)
    crop = transform["crop_size"]
    architecture = config.architecture or (
        f"ResNet(block={config.block}, num_layers={config.num_layers}, groups={config.groups}, "
        f"width_per_group={config.width_per_group})"
    )
    return {
        "format": EXPORT_FORMAT,
        "resnetzoo_version": resnetzoo_version,
        "architecture": architecture,
        "num_classes": config.num_classes,
        "class_names": resolve_class_names(config),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        # The batch axis is symbolic; height and width are fixed so that TensorRT and Triton can plan ahead.
        "input_shape": ["batch", config.in_chans, crop, crop],
        "input_dtype": dtype,
        "output_dtype": dtype,
        "layout": "NCHW",
        "color_space": "RGB" if config.in_chans == 3 else ("L" if config.in_chans == 1 else f"{config.in_chans}-channel"),
        # How a consumer turns an image file into the input: resize the shorter side to resize_size with
        # `interpolation`, centre-crop to crop_size, scale pixels to [0, 1], then (x - mean) / std per channel.
        "resize_size": transform["resize_size"],
        "crop_size": crop,
        "interpolation": transform["interpolation"],
        "mean": transform["mean"],
        "std": transform["std"],
        "base_weights": config.base_weights or "",
        "base_weights_sha256": config.base_weights_sha256 or "",
    }


def to_onnx_props(metadata: dict[str, Any]) -> dict[str, str]:
    return {key: json.dumps(value) if key in JSON_KEYS else str(value) for key, value in metadata.items()}


def from_onnx_props(props: dict[str, str]) -> dict[str, Any]:
    return {key: json.loads(value) if key in JSON_KEYS else value for key, value in props.items()}
