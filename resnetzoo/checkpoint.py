"""Training-state checkpoints: everything needed to resume a run exactly, written so a crash never loses the last one.

A checkpoint is a ``torch.save`` of plain containers, tensors and numbers only (model, optimizer,
scheduler, grad scaler and EMA state dicts, epoch and step counters, history, every RNG state), so it
loads with ``torch.load(weights_only=True)``: opening a checkpoint can never run code. It is written
through ``resnetzoo._io.atomic_write``: a SIGKILL at any moment leaves the previous file whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import atomic_write
from .errors import ResnetzooError

__all__ = ["CHECKPOINT_NAME", "CheckpointError", "save_checkpoint", "load_checkpoint", "capture_rng_state",
           "restore_rng_state"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "resnetzoo-checkpoint/1"


class CheckpointError(ResnetzooError, ValueError):
    """A training checkpoint that is missing, corrupt, or from another run."""


def _cuda_device(device: str | torch.device | None) -> torch.device | None:
    """The CUDA device whose generator a process draws from, or ``None`` when it uses none."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    if device is None:
        return torch.device("cuda", torch.cuda.current_device())
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def capture_rng_state(device: str | torch.device | None = None) -> dict[str, Any]:
    """Every random generator a training step may draw from, as tensors and plain values.

    Args:
        device: the device this process trains on; of the GPUs, only its generator is saved (under DDP each
            rank saves and restores its own GPU, not every GPU of the machine). ``None``: the current CUDA device.
    """
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),  # (version, tuple of ints, None): plain values
        # numpy's state holds an ndarray, which weights_only loading refuses; a tensor carries the same words.
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    cuda_device = _cuda_device(device)
    if cuda_device is not None:
        state["cuda_device"] = torch.cuda.get_rng_state(cuda_device)
    return state


def restore_rng_state(state: dict[str, Any], device: str | torch.device | None = None) -> None:
    """Put every generator back where :func:`capture_rng_state` found it (``device`` as given there)."""
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda_device = _cuda_device(device) if torch.cuda.is_available() else None
    if cuda_device is None:
        return
    if "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"], cuda_device)
    elif "cuda" in state:  # older checkpoints hold every GPU's state: take this device's own
        cuda_states = state["cuda"]
        if cuda_device.index < len(cuda_states):
            torch.cuda.set_rng_state(cuda_states[cuda_device.index], cuda_device)
        else:
            logger.warning("Checkpoint has RNG states for %d CUDA devices, none for %s; its CUDA RNG was not restored.",
                           len(cuda_states), cuda_device)


def _remove_stale_parts(path: Path) -> None:
    # A process killed inside atomic_write leaves its temporary file behind; the next save clears it.
    for stale in path.parent.glob(f".{path.name}.*.part"):
        with contextlib.suppress(OSError):
            stale.unlink()


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: the old checkpoint stays intact until the new one is complete on disk."""
    path = Path(path)
    _remove_stale_parts(path)
    with atomic_write(path) as handle:
        torch.save({"format": FORMAT, **state}, handle)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with ``weights_only=True``.

    Raises ``CheckpointError`` naming the file when it is missing, truncated, corrupt, holds code,
    or is not a resnetzoo checkpoint. Never falls back to anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}. Start without --resume, or point --out at the run to resume.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"Refused to load {path}: it holds objects other than tensors and plain values "
            f"({str(error).splitlines()[0][:200]}). Nothing in it was run."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, TypeError, AttributeError,
            UnicodeDecodeError, OverflowError, MemoryError, IndexError) as error:
        raise CheckpointError(
            f"Checkpoint {path} is corrupt or truncated ({type(error).__name__}: {str(error)[:200]}). It was not "
            "written by an interrupted save (those leave the previous checkpoint intact); restore it from a backup, "
            "or start a new run in another folder."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a resnetzoo training checkpoint (format {FORMAT}).")
    return state
