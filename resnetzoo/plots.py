"""Figures: training curves and prediction grids, written as PNG files.

matplotlib is an optional dependency (``pip install resnetzoo[plots]``) and is imported only when a
figure is drawn, with the non-interactive Agg backend, so training on a headless server never
needs a display.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._io import atomic_write
from .errors import ResnetzooError

__all__ = ["plot_history", "plot_image_grid", "PlotError"]

logger = logging.getLogger(__name__)


class PlotError(ResnetzooError, RuntimeError):
    """A figure that cannot be drawn (usually: matplotlib is not installed)."""


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("Drawing figures needs matplotlib: pip install 'resnetzoo[plots]' (or matplotlib).") from None
    return plt


def _save(figure: Any, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    path = Path(path)
    with atomic_write(path) as handle:  # a viewer refreshing the file never sees half a PNG
        handle.write(buffer.getvalue())
    return path


def plot_history(history: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                 train_loss_includes: Sequence[str] = ()) -> Path:
    """Loss and accuracy per epoch (train and validation) side by side.

    Args:
        train_loss_includes: what the training loss includes beyond plain cross-entropy (e.g.
            ``["label smoothing", "mixup"]``), named in the loss panel's title.
    """
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label, style in (("train_loss", "train", "-o"), ("val_loss", "validation", "-s")):
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            loss_axis.plot(epochs, values, style, label=label, markersize=3)
    for key, label, style in (("train_acc1", "train acc@1", "-o"), ("val_acc1", "validation acc@1", "-s"),
                              ("val_acc5", "validation acc@5", ":")):
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            acc_axis.plot(epochs, values, style, label=label, markersize=3)
    loss_axis.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    acc_axis.set(title="Accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    from matplotlib.ticker import MaxNLocator

    for axis, corner in ((loss_axis, "upper right"), (acc_axis, "lower right")):
        axis.grid(alpha=0.3)
        axis.legend(loc=corner)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    # Validation loss is plain cross-entropy; say what makes the training loss differ, and only that.
    if train_loss_includes:
        loss_axis.set_title(f"Loss (train: with {', '.join(train_loss_includes)})", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def plot_image_grid(images: Sequence[Any], titles: Sequence[str], path: str | os.PathLike,
                    colors: Sequence[str] | None = None, ncols: int | None = None) -> Path:
    """A grid of images (PIL images or HxWx3 arrays), each with a title in its colour."""
    plt = _pyplot()
    count = len(images)
    if count == 0:
        raise PlotError("No images to draw.")
    ncols = ncols or min(count, 5)
    nrows = (count + ncols - 1) // ncols
    figure, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.9 * nrows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < count:
            axis.imshow(images[index])
            axis.set_title(titles[index], fontsize=8, color=(colors[index] if colors else "black"))
    figure.tight_layout()
    return _save(figure, path)
