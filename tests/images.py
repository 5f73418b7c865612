"""Tiny image folders for tests: classes a small model can tell apart after one epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def write_color_classes(root: Path, class_names: Sequence[str] = ("red", "green", "blue"), per_class: int = 4,
                        size: int = 20, base: int = 90, boost: int = 150, seed: int = 0) -> Path:
    """``root/<class>/<index>.png``: noise in ``0..base`` with class ``i``'s colour channel raised by ``boost``."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(class_names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, base, (size, size, 3)).astype(np.uint8)
            pixels[..., label % 3] += boost
            Image.fromarray(pixels).save(root / name / f"{index:02d}.png")
    return root
