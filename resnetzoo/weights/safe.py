"""Reading ``.safetensors`` files defensively.

safetensors already refuses code (the format holds only tensors), but a hostile or broken file can
still carry a header that claims more bytes than the file has, overlapping tensors or duplicate
names. The Rust reader catches those; we turn whatever it raises into our own ``WeightsFileError``
naming the file, and check the header size ourselves first so that a huge claimed header is
refused before anything is allocated for it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import WeightsFileError

__all__ = ["load_safetensors", "read_safetensors_metadata"]

# The format caps the header at 100 MB; real ResNet headers are a few tens of kilobytes.
MAX_HEADER_BYTES = 100 * 1024 * 1024


def _read_header(path: Path) -> dict:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise WeightsFileError(path, "truncated safetensors file (shorter than its 8-byte header length).")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > MAX_HEADER_BYTES or header_length > size - 8:
            raise WeightsFileError(
                path, f"corrupt safetensors header: it claims {header_length} bytes but the file has {size - 8}."
            )
        raw = handle.read(header_length)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_refuse_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as error:
        raise WeightsFileError(path, f"corrupt safetensors header: {str(error)[:200]}.") from None
    if not isinstance(header, dict):
        raise WeightsFileError(path, "corrupt safetensors header: not a JSON object.")
    return header


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate tensor names {duplicates[:5]}")
    return dict(pairs)


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file (resnetzoo stores its config there)."""
    path = Path(path)
    metadata = _read_header(path).get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise WeightsFileError(path, "corrupt safetensors header: __metadata__ is not an object.")
    return {str(k): str(v) for k, v in metadata.items()}


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    _read_header(path)
    try:
        return load_file(path, device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError and assorted built-ins
        raise WeightsFileError(path, f"corrupt safetensors file ({type(error).__name__}: {str(error)[:200]}).") from None

