"""resnetzoo's exceptions. Each message says what went wrong and how to fix it.

Catch ``ResnetzooError`` to handle every user-facing failure of the library. The subclasses also
derive from the built-in exception a caller would expect (``KeyError`` for unknown names,
``ValueError`` for bad files), so generic ``except ValueError`` code keeps working.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ResnetzooError",
    "UnknownModelError",
    "UnknownWeightsError",
    "WeightsFileError",
    "WeightsHashMismatchError",
    "WeightsUnavailableError",
    "StateDictMismatchError",
    "ModelSourceError",
]


class ResnetzooError(Exception):
    """Base class of every error resnetzoo raises on purpose."""


class UnknownModelError(ResnetzooError, KeyError):
    def __init__(self, name: str, suggestions: list[str]):
        self.name = name
        self.suggestions = suggestions
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"Unknown model {name!r}.{hint} See resnetzoo.list_models() for every name.")

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return self.args[0]


class UnknownWeightsError(ResnetzooError, KeyError):
    def __init__(self, model_name: str, tag: str, available: list[str]):
        self.model_name = model_name
        self.tag = tag
        self.available = available
        choices = ", ".join(available) if available else "none"
        super().__init__(
            f"Unknown weights {tag!r} for {model_name}. Available tags: {choices}. "
            "Pass pretrained=True for the default, a tag, a torchvision Weights member, or a path to a state dict file."
        )

    def __str__(self) -> str:
        return self.args[0]


class WeightsFileError(ResnetzooError, ValueError):
    """A weights or checkpoint file that cannot be read safely (corrupt, truncated, not a state dict, code)."""

    def __init__(self, path: str | Path, reason: str, fix: str = ""):
        self.path = Path(path)
        self.reason = reason
        message = f"Cannot load weights from {self.path}: {reason}"
        if fix:
            message += f" {fix}"
        super().__init__(message)


class WeightsHashMismatchError(WeightsFileError):
    def __init__(self, path: str | Path, expected_prefix: str, actual_sha256: str, fix: str):
        self.expected_prefix = expected_prefix
        self.actual_sha256 = actual_sha256
        super().__init__(
            path,
            f"SHA-256 mismatch: expected a hash starting with {expected_prefix}, found {actual_sha256}. "
            "The file is corrupt, truncated or not the published one.",
            fix,
        )


class WeightsUnavailableError(ResnetzooError, OSError):
    """Pretrained weights are neither cached nor downloadable (no network, mirror down, ...)."""


class StateDictMismatchError(ResnetzooError, ValueError):
    """A state dict whose keys or shapes do not fit the model, beyond what is adapted automatically."""


class ModelSourceError(ResnetzooError, FileNotFoundError):
    """``create()`` was given a path that is not a saved folder."""
