"""Classify images with a trained model: ``predict()``, ``draw_prediction_grid()`` and a CLI.

    python -m resnetzoo.predict runs/pokemon photo1.jpg photo2.png --topk 3 --grid predictions.png

Each image is preprocessed with the model's own eval transform (``model.config.eval_transform``),
so a run folder predicts exactly as it was evaluated during training.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .data import BrokenImageError, _to_rgb, find_image_files, load_image
from .errors import ResnetzooError
from .transforms import eval_transform

__all__ = ["Prediction", "PredictError", "predict", "draw_prediction_grid", "load_model", "main"]

logger = logging.getLogger(__name__)

class PredictError(ResnetzooError, ValueError):
    """Command-line arguments of ``python -m resnetzoo.predict`` that cannot work (e.g. an unwritable --grid)."""


@dataclass
class Prediction:
    """The top-k classes of one image, most probable first."""

    source: str  # the file path, or "<image N>" for an in-memory image
    labels: list[str]
    indices: list[int]
    probabilities: list[float]
    true_label: str | None = None

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def probability(self) -> float:
        return self.probabilities[0]

    @property
    def correct(self) -> bool | None:
        """Whether the top-1 label is the true one; ``None`` when the true label is unknown."""
        return None if self.true_label is None else self.label == self.true_label


def load_model(model_or_run_dir: nn.Module | str | os.PathLike, device: str | torch.device | None = None) -> nn.Module:
    """A model in eval mode: the given one, or the one saved in a run/saved folder (or ``hf-hub:``).

    Args:
        device: where to put the model. ``None`` leaves a given model where it is (a CUDA model stays on
            its GPU) and loads a folder on the CPU.
    """
    if isinstance(model_or_run_dir, nn.Module):
        model = model_or_run_dir
    else:
        from .factory import create

        model = create(model_or_run_dir)
        device = "cpu" if device is None else device
    if device is not None:
        model = model.to(device)
    return model.eval()


def _class_names(model: nn.Module) -> list[str]:
    config = getattr(model, "config", None)
    num_classes = int(getattr(model, "num_classes", 0) or (config.num_classes if config else 0))
    names = getattr(config, "class_names", None)
    return list(names) if names else [str(index) for index in range(num_classes)]


@torch.inference_mode()
def predict(
    model_or_run_dir: nn.Module | str | os.PathLike,
    images: Sequence[str | os.PathLike | Image.Image],
    topk: int = 5,
    device: str | torch.device | None = None,
    batch_size: int = 32,
    true_labels: Sequence[str | None] | None = None,
) -> list[Prediction]:
    """Top-``topk`` labels and probabilities for each image.

    Unlike the command line, which reports unreadable files and goes on with the others, this function
    stops at the first file that cannot be read: it raises ``BrokenImageError`` naming that file, and
    returns nothing for the other images. To skip broken files, open them first with
    ``resnetzoo.data.load_image`` (catching ``BrokenImageError``) and pass the PIL images.

    Args:
        model_or_run_dir: a model with ``.config`` (from ``resnetzoo.create``) or a run/saved folder.
        images: file paths or PIL images.
        topk: how many classes to return per image (at most the number of classes).
        device: where to run; ``None`` runs a given model where it is, and a folder's model on the CPU.
        true_labels: optional known labels, carried into the predictions (for the grid figure).
    """
    model = load_model(model_or_run_dir, device)
    config = getattr(model, "config", None)
    if config is None:
        raise ResnetzooError("The model has no .config (eval transform, class names); build it with resnetzoo.create().")
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}.")
    names = _class_names(model)
    transform = eval_transform(config)
    # Images go to the model's device and dtype: a model saved in bf16/fp16 cannot take float32 input.
    parameter = next(model.parameters())
    predictions: list[Prediction] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        pil_images = [_to_rgb(item) if isinstance(item, Image.Image) else load_image(item) for item in chunk]
        batch = torch.stack([transform(image) for image in pil_images]).to(parameter.device, parameter.dtype)
        probabilities = model(batch).float().softmax(dim=1)
        values, indices = probabilities.topk(min(topk, probabilities.shape[1]), dim=1)
        for offset, (row_values, row_indices) in enumerate(zip(values.tolist(), indices.tolist(), strict=True)):
            item = chunk[offset]
            index = start + offset
            predictions.append(Prediction(
                source=f"<image {index}>" if isinstance(item, Image.Image) else str(item),
                labels=[names[i] for i in row_indices], indices=row_indices, probabilities=row_values,
                true_label=true_labels[index] if true_labels is not None else None,
            ))
    return predictions


def draw_prediction_grid(
    images: Sequence[str | os.PathLike | Image.Image],
    predictions: Sequence[Prediction],
    path: str | os.PathLike,
    ncols: int | None = None,
) -> Path:
    """The seed's figure: each image titled with its predicted label and probability, and the true label when known.

    Titles are green when the prediction is right, red when wrong, black when the truth is unknown.
    """
    from .plots import plot_image_grid

    pictures, titles, colors = [], [], []
    for item, prediction in zip(images, predictions, strict=True):
        pictures.append(_to_rgb(item) if isinstance(item, Image.Image) else load_image(item))
        title = f"{prediction.label} ({prediction.probability:.0%})"
        if prediction.true_label is not None:
            title += f"\ntrue: {prediction.true_label}"
        titles.append(title)
        colors.append({True: "green", False: "red", None: "black"}[prediction.correct])
    return plot_image_grid(pictures, titles, path, colors=colors, ncols=ncols)


def _expand(inputs: Sequence[str], class_names: Sequence[str]) -> list[tuple[Path, str | None]]:
    """Files as given; folders expanded (recursively) to their image files. The true label is the parent
    folder's name when that is one of the model's classes (as in a dataset's class folders)."""
    known = set(class_names)
    found: list[tuple[Path, str | None]] = []
    seen: set[Path] = set()  # an image given itself and again inside a folder is classified (and counted) once
    for entry in inputs:
        path = Path(entry)
        for file in find_image_files(path):
            resolved = file.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            parent = file.parent.name
            found.append((file, parent if parent in known else None))
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m resnetzoo.predict",
        description="Print the top-k classes of images with a trained model (a run folder, a saved folder or "
                    "hf-hub:org/name); optionally draw them in a grid. Folders are searched for images; an "
                    "image inside a folder named after a class is shown with that true label.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="a trained model: run folder (from python -m resnetzoo.train), saved folder, or "
                                      "hf-hub:org/name. A bare architecture name such as resnet18 has RANDOM weights "
                                      "and numbered labels: only for trying the command out")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--topk", type=int, default=5, help="classes to print per image")
    parser.add_argument("--grid", type=Path, default=None, help="draw the images with their predictions into this PNG")
    parser.add_argument("--grid-max", type=int, default=25, help="at most this many images in the grid")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m resnetzoo.predict RUN_DIR IMAGE... [--topk 5] [--grid predictions.png]``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    try:
        if args.grid is not None:
            _check_grid_path(args.grid)  # before loading the model and reading every image
        model = load_model(args.model, args.device)
        if _is_architecture_name(args.model):
            print(f"warning: {args.model!r} is an architecture name, not a trained model: its weights are RANDOM and "
                  "its labels are class numbers, so these predictions mean nothing. Pass a run folder, a saved folder "
                  "or hf-hub:org/name.", file=sys.stderr)
        entries = _expand(args.images, _class_names(model))
        # One batch of files at a time: a folder of any size is decoded batch by batch, never held in memory
        # whole; only the first --grid-max images are kept, for the grid.
        predictions: list[Prediction] = []
        shown: list[Image.Image] = []
        failed = 0
        for start in range(0, len(entries), args.batch_size):
            readable = []
            for path, truth in entries[start : start + args.batch_size]:
                try:
                    readable.append((path, truth, load_image(path)))
                except BrokenImageError as error:  # report it by path, keep going with the others
                    print(f"error: {error}", file=sys.stderr)
                    failed += 1
            if not readable:
                continue
            batch = predict(model, [image for _, _, image in readable], topk=args.topk, batch_size=args.batch_size,
                            true_labels=[truth for _, truth, _ in readable])
            for (path, _, image), prediction in zip(readable, batch, strict=True):
                prediction.source = str(path)
                _print_prediction(prediction)
                if args.grid is not None and len(shown) < args.grid_max:
                    shown.append(image)
            predictions += batch
        if not predictions:
            print("error: no readable images given.", file=sys.stderr)
            return 2
    except (ResnetzooError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    known = [p for p in predictions if p.correct is not None]
    if known:
        print(f"acc@1 on {len(known)} labelled images: {sum(p.correct for p in known) / len(known):.4f}")
    if args.grid is not None:
        try:
            draw_prediction_grid(shown, predictions[: len(shown)], args.grid)
        except (ResnetzooError, OSError) as error:
            print(f"error: the grid was not drawn: {error}", file=sys.stderr)
            return 2
        print(f"Grid written to {args.grid}")
    return 1 if failed else 0


def _print_prediction(prediction: Prediction) -> None:
    truth = f"  (true: {prediction.true_label})" if prediction.true_label is not None else ""
    print(f"{prediction.source}{truth}")
    for label, probability in zip(prediction.labels, prediction.probabilities, strict=True):
        print(f"  {probability:7.2%}  {label}")


def _is_architecture_name(model: str) -> bool:
    """A registered name (``resnet18``) rather than a folder or ``hf-hub:`` model: ``create`` builds it untrained."""
    from .registry import list_models

    return not Path(model).exists() and model.lower() in list_models()


def _check_grid_path(path: Path) -> None:
    """Fail before any work when the grid PNG cannot be written (its folder is created, as the write would)."""
    if path.is_dir():
        raise PredictError(f"--grid {path} is a folder. Pass a file name such as {path / 'predictions.png'}.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PredictError(f"Cannot create the folder of --grid {path} ({error.strerror or error}). "
                           "Pass a PNG path in a writable place.") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise PredictError(f"Cannot write --grid {path}: its folder is not writable. Pass a PNG path in a writable place.")


if __name__ == "__main__":
    raise SystemExit(main())
