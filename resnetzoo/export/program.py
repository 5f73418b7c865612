"""The modern ``torch.export`` program (``.pt2``): what upstream recommends in place of TorchScript.

Load it with ``torch.export.load(path).module()`` in Python, or compile it ahead of time with AOTInductor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .metadata import EXTRA_FILE_NAME

__all__ = ["export_program", "load_program"]


def export_program(model: torch.nn.Module, path: Path, example: torch.Tensor, metadata: dict[str, Any]) -> dict[str, Any]:
    """Export ``model`` (eval mode) with a symbolic batch axis and save it with ``resnetzoo.json`` inside."""
    # The example has batch 2: torch.export specialises axes whose example size is 0 or 1.
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, str(path), extra_files={EXTRA_FILE_NAME: json.dumps(metadata)})
    return {"method": "torch.export.export"}


def load_program(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The reloaded program as a callable module, and its ``resnetzoo.json`` metadata ({} when absent)."""
    extra = {EXTRA_FILE_NAME: ""}
    program = torch.export.load(str(path), extra_files=extra)
    raw = extra[EXTRA_FILE_NAME]
    raw = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return program.module(), (json.loads(raw) if raw else {})
