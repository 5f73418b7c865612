"""Scripts that are files, not package modules (benchmarks/, export/): tests load them by path."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_module(path: Path, name: str) -> ModuleType:
    """The file at ``path`` as module ``name``, registered in ``sys.modules`` (dataclasses look it up there)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_benchmark_script(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` as module ``name`` for the duration of a (generator) fixture."""
    try:
        yield load_module(ROOT / "benchmarks" / f"{name}.py", name)
    finally:
        sys.modules.pop(name, None)
