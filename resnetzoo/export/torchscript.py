"""TorchScript export (``torch.jit.script``) for C++ deployments with libtorch.

TorchScript is deprecated upstream (torch 2.14 warns on ``torch.jit.script``, ``save`` and ``load``),
but libtorch users still deploy it. We keep it, keep upstream's FutureWarnings about our own calls
out of our users' faces, and point to the ``.pt2`` program instead, once per process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .metadata import EXTRA_FILE_NAME

__all__ = ["export_torchscript", "load_torchscript"]

logger = logging.getLogger(__name__)

_pointer_logged = False


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """torch 2.14 deprecates ``torch.jit`` with a warning per call; TorchScript is still what C++ loads."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        yield


def export_torchscript(model: torch.nn.Module, path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Script ``model`` (eval mode) and save it with the metadata as the extra file ``resnetzoo.json``."""
    global _pointer_logged
    if not _pointer_logged:
        logger.info("TorchScript is deprecated upstream; for new deployments prefer the torch.export program (.pt2).")
        _pointer_logged = True
    with quiet_jit():
        # Scripting, not tracing: a scripted module keeps any control flow and no example input is baked in.
        scripted = torch.jit.script(model)
        torch.jit.save(scripted, str(path), _extra_files={EXTRA_FILE_NAME: json.dumps(metadata)})
    return {"method": "torch.jit.script"}


def load_torchscript(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The scripted module on the CPU and its ``resnetzoo.json`` metadata ({} when absent)."""
    extra = {EXTRA_FILE_NAME: ""}
    with quiet_jit():
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    raw = extra[EXTRA_FILE_NAME]
    raw = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return module, (json.loads(raw) if raw else {})
