"""Reading ``.safetensors`` files defensively.

safetensors already refuses code (the format holds only tensors), but a hostile or broken file can
still carry a header that claims more bytes than the file has, overlapping tensors or duplicate
names. We check the header ourselves before the Rust reader sees the file: its length is capped
before anything is allocated for it, duplicate names are refused (JSON parsers silently keep the
last one), and every tensor's dtype, shape and byte range is checked against the file so that the
error names the tensor and the file. Whatever the Rust reader still raises becomes our own
``WeightsFileError`` too.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..errors import WeightsFileError

__all__ = ["load_safetensors", "read_safetensors_header", "MAX_HEADER_BYTES"]

# The format caps the header at 100 MB; real ResNet headers are a few tens of kilobytes.
MAX_HEADER_BYTES = 100 * 1024 * 1024

# Bytes per element of every dtype safetensors defines with a whole-byte size.
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "C64": 8,
    "I64": 8, "U64": 8, "F64": 8,
}
_FIX = "Download or copy the file again; if it came from someone else, ask them to re-save it."


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The parsed and checked JSON header of a safetensors file (tensor entries and ``__metadata__``).

    Raises ``WeightsFileError`` naming the file for anything that a correct writer cannot produce.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise WeightsFileError(path, "truncated safetensors file (shorter than its 8-byte header length).", _FIX)
            (header_length,) = struct.unpack("<Q", prefix)
            if header_length == 0 or header_length > MAX_HEADER_BYTES or header_length > size - 8:
                # Only once the header is known to be invalid: a valid length may also start with 0x80.
                if prefix.startswith(b"PK\x03\x04") or (prefix[0] == 0x80 and 2 <= prefix[1] <= 5):
                    raise WeightsFileError(
                        path, "this is a PyTorch checkpoint (torch.save or pickle), not a safetensors file.",
                        "Rename it to .pth; resnetzoo reads it safely with torch.load(weights_only=True).",
                    )
                raise WeightsFileError(
                    path,
                    f"corrupt safetensors header: it claims {header_length} bytes but the file has {size - 8} "
                    f"after the length (and the format allows at most {MAX_HEADER_BYTES}).",
                    _FIX,
                )
            raw = handle.read(header_length)
    except OSError as error:
        raise WeightsFileError(path, f"cannot be read ({error}).") from None
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_refuse_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise WeightsFileError(path, f"corrupt safetensors header: {str(error)[:200] or type(error).__name__}.", _FIX) from None
    if not isinstance(header, dict):
        raise WeightsFileError(path, "corrupt safetensors header: not a JSON object.", _FIX)
    _check_entries(header, path, data_size=size - 8 - header_length)
    return header


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"duplicate names {duplicates[:5]}")
    return dict(pairs)


def _check_entries(header: dict[str, Any], path: Path, data_size: int) -> None:
    def fail(reason: str) -> None:
        raise WeightsFileError(path, f"corrupt safetensors header: {reason}.", _FIX)

    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        fail("__metadata__ must map names to strings")
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            fail(f"entry {name[:100]!r} must have exactly dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPE_BYTES:
            fail(f"tensor {name[:100]!r} has unsupported dtype {str(dtype)[:20]!r}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            fail(f"tensor {name[:100]!r} has an invalid shape {str(shape)[:60]}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
            fail(f"tensor {name[:100]!r} has invalid data_offsets {str(offsets)[:60]}")
        begin, end = offsets
        expected = math.prod(shape) * _DTYPE_BYTES[dtype]
        if end < begin or end - begin != expected:
            fail(f"tensor {name[:100]!r} of shape {shape} and dtype {dtype} needs {expected} bytes, "
                 f"its data_offsets give {end - begin}")
        if end > data_size:
            fail(f"tensor {name[:100]!r} ends at byte {end} but the file holds {data_size} bytes of data "
                 "(the file is truncated)")
        ranges.append((begin, end, name))
    ranges.sort()
    for (_, end_a, name_a), (begin_b, _, name_b) in zip(ranges, ranges[1:]):  # noqa: B905 (shifted pairs)
        if begin_b < end_a:
            fail(f"tensors {name_a[:100]!r} and {name_b[:100]!r} overlap")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU; a ``WeightsFileError`` naming the file on any problem."""
    path = Path(path)
    read_safetensors_header(path)
    try:
        return load_file(path, device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError and assorted built-ins
        raise WeightsFileError(path, f"corrupt safetensors file ({type(error).__name__}: {str(error)[:200]}).", _FIX) from None
