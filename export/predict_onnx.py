#!/usr/bin/env python3
"""Classify image files with an ONNX model exported by resnetzoo, using only onnxruntime, numpy and Pillow.

Everything the model needs travels inside the ``.onnx`` file (``metadata_props``): class names, input
size, resize/crop, mean/std, input dtype. Copy this one file next to the model; no torch, no resnetzoo.

    pip install onnxruntime numpy pillow          # or onnxruntime-gpu
    python predict_onnx.py model.onnx photo.jpg more_photos/ --top-k 3
    python predict_onnx.py model.onnx photos/ --json --providers CUDAExecutionProvider CPUExecutionProvider

From Python::

    from predict_onnx import OnnxClassifier
    classifier = OnnxClassifier("model.onnx")
    for result in classifier.predict(["photo.jpg"], top_k=3):
        print(result["path"], result["top_k"][0]["label"])

Images are decoded as ``resnetzoo.predict`` decodes them (EXIF orientation, transparency over white,
16-bit scaled to 8), and preprocessing reproduces torchvision's ``transforms.v2`` evaluation pipeline on PIL
images step by step (Resize of the shorter side with antialiasing, CenterCrop, scale to [0, 1], Normalize),
so the predictions are those of ``resnetzoo.predict`` on the PyTorch model. Exit status: 0 all images classified; 1 some images
could not be read (each is reported by path); 2 the model could not be loaded or has no resnetzoo metadata.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["OnnxClassifier", "ModelMetadataError", "IMAGE_SUFFIXES", "find_images", "open_image", "main"]

# Keys written by resnetzoo.export whose values are JSON-encoded (the rest are plain strings).
JSON_KEYS = ("num_classes", "class_names", "input_shape", "resize_size", "crop_size", "mean", "std")
REQUIRED_KEYS = ("class_names", "input_shape", "resize_size", "crop_size", "mean", "std")

# Pillow's default decompression-bomb limit, which resnetzoo's own image loader also uses.
MAX_IMAGE_PIXELS = 89_478_485

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

# torchvision's InterpolationMode values -> Pillow filters (torchvision resizes PIL images with these).
_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class ModelMetadataError(ValueError):
    """The ONNX file cannot be used: unreadable, or without the metadata resnetzoo.export writes."""


class OnnxClassifier:
    """An ONNX Runtime session plus the preprocessing and labels stored in the model's metadata.

    Args:
        model_path: a ``.onnx`` file written by ``python -m resnetzoo.export``.
        providers: ONNX Runtime execution providers in order of preference (default: CPU only, which
            works everywhere; pass ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` for a GPU).
    """

    def __init__(self, model_path: str | os.PathLike, providers: Sequence[str] | None = None):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelMetadataError(f"No such model file: {self.model_path}.")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.model_path), options, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as error:  # onnxruntime raises its own exception types for bad files and providers
            raise ModelMetadataError(f"Cannot load {self.model_path} with ONNX Runtime: {error}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in REQUIRED_KEYS if key not in props]
        if missing:
            raise ModelMetadataError(
                f"{self.model_path} has no resnetzoo metadata ({', '.join(missing)} missing). "
                "Export it with: python -m resnetzoo.export SOURCE --out DIR --formats onnx"
            )
        try:
            self.metadata: dict[str, Any] = {k: json.loads(v) if k in JSON_KEYS else v for k, v in props.items()}
        except json.JSONDecodeError as error:
            raise ModelMetadataError(f"{self.model_path}: corrupt metadata ({error}).") from None
        self.class_names: list[str] = list(self.metadata["class_names"])
        _, self.channels, self.height, self.width = self.metadata["input_shape"]
        self.resize_size = int(self.metadata["resize_size"])
        self.crop_size = int(self.metadata["crop_size"])
        interpolation = self.metadata.get("interpolation", "bilinear")
        if interpolation not in _PIL_FILTERS:
            raise ModelMetadataError(f"{self.model_path}: unsupported interpolation {interpolation!r}.")
        self.resample = _PIL_FILTERS[interpolation]
        self.mean = np.asarray(self.metadata["mean"], dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(self.metadata["std"], dtype=np.float32).reshape(-1, 1, 1)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.output_name = self.session.get_outputs()[0].name
        self.input_dtype = _ORT_TYPES.get(model_input.type, np.float32)
        if self.channels not in (1, 3):
            raise ModelMetadataError(f"{self.model_path}: this predictor reads RGB or greyscale images; "
                                     f"the model takes {self.channels} channels.")

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One PIL image -> a normalised float32 ``(C, H, W)`` array, exactly as torchvision's v2 eval transforms."""
        image = image.convert("RGB" if self.channels == 3 else "L")
        image = self._resize_shorter_side(image, self.resize_size)
        image = self._center_crop(image, self.crop_size)
        array = np.asarray(image, dtype=np.float32) / np.float32(255.0)
        array = array[:, :, None] if array.ndim == 2 else array
        array = array.transpose(2, 0, 1)
        mean, std = (self.mean, self.std) if self.mean.shape[0] == array.shape[0] else (self.mean.mean(), self.std.mean())
        return ((array - mean) / std).astype(np.float32)

    def _resize_shorter_side(self, image: Image.Image, size: int) -> Image.Image:
        # torchvision's rule: the shorter side becomes `size`, the longer one int(size * long / short) (truncated).
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size, int(size * long / short)
        new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
        if (new_width, new_height) == (width, height):
            return image
        # Pillow's resize filters always antialias, as torchvision's Resize(antialias=True) does on PIL images.
        return image.resize((new_width, new_height), resample=self.resample)

    @staticmethod
    def _center_crop(image: Image.Image, size: int) -> Image.Image:
        width, height = image.size
        if size > width or size > height:  # torchvision pads with zeros first, (diff // 2) on the left/top
            pad_left, pad_top = max(size - width, 0) // 2, max(size - height, 0) // 2
            padded = Image.new(image.mode, (max(width, size), max(height, size)))
            padded.paste(image, (pad_left, pad_top))
            image, (width, height) = padded, padded.size
        top = int(round((height - size) / 2.0))
        left = int(round((width - size) / 2.0))
        return image.crop((left, top, left + size, top + size))

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Read and preprocess one image file; raises ``OSError`` naming the file when it cannot be read."""
        return self.preprocess(open_image(path))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a preprocessed ``(N, C, H, W)`` batch; float32 logits."""
        outputs = self.session.run([self.output_name], {self.input_name: batch.astype(self.input_dtype)})[0]
        return outputs.astype(np.float32)

    def predict(self, paths: Iterable[str | os.PathLike], top_k: int = 5, batch_size: int = 16) -> list[dict[str, Any]]:
        """Classify image files. Each result has ``path`` and either ``top_k`` (label, index, probability) or ``error``."""
        top_k = max(1, min(top_k, len(self.class_names)))
        results: list[dict[str, Any]] = []
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            if not pending:
                return
            logits = self.logits(np.stack([array for _, array in pending]))
            probabilities = _softmax(logits)
            for (index, _), row in zip(pending, probabilities, strict=True):
                order = np.argsort(-row, kind="stable")[:top_k]
                results[index]["top_k"] = [
                    {"label": self.class_names[i], "index": int(i), "probability": float(row[i])} for i in order
                ]
            pending.clear()

        for path in paths:
            results.append({"path": str(path)})
            try:
                pending.append((len(results) - 1, self.load(path)))
            except OSError as error:  # open_image's message starts with the path
                results[-1]["error"] = str(error)
            if len(pending) >= batch_size:
                flush()
        flush()
        return results


def open_image(path: str | os.PathLike) -> Image.Image:
    """An image file as upright 8-bit RGB, decoded the way ``resnetzoo.predict`` decodes it.

    Same rules as resnetzoo's loader, so that both give the same top-1: EXIF orientation applied,
    transparency composited over white, 16-bit and float images scaled to 8 bits. Any failure is an
    ``OSError`` whose message starts with the path.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise OSError("empty file")
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise OSError(f"{image.width}x{image.height} pixels is over the limit of {MAX_IMAGE_PIXELS}")
            image.load()  # decode now, so that truncated files fail here and are reported by path
            return _to_rgb(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:
        raise OSError(f"{path}: not an image Pillow can read") from None
    # Damaged files raise many types from Pillow's decoders (OSError, SyntaxError, EOFError, zlib.error, ...).
    except Exception as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise OSError(f"{path}: {reason}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode.startswith("I"):  # 16/32-bit integers: a bare convert("RGB") would clip everything above 255 to white
        array = np.asarray(image).astype(np.float32) / 257.0
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float32)
        scale = 255.0 if array.size and float(np.nanmax(array)) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.nan_to_num(array) * scale, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels hold arbitrary colour; show them as a viewer does, over white.
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


# Folders that tools leave behind and that never hold images to classify (macOS zips: __MACOSX/._x.jpg).
_IGNORED_NAMES = {"__MACOSX", "__pycache__"}


def find_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded to the image files inside them (recursively, sorted), hidden files and
    tool folders left out. The same rule as ``resnetzoo.data.find_image_files``, restated because this script
    must run without torch; a test keeps the two equal."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                and not any(part.startswith(".") or part in _IGNORED_NAMES for part in p.relative_to(path).parts)
            )
        else:
            found.append(path)  # a missing or unreadable file is reported by path when it is loaded
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Classify images with an ONNX model exported by resnetzoo (onnxruntime + numpy + Pillow only).",
    )
    parser.add_argument("model", help="a .onnx file written by python -m resnetzoo.export")
    parser.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    parser.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per ONNX Runtime call (default 16)")
    parser.add_argument("--providers", nargs="+", default=None, metavar="PROVIDER",
                        help="ONNX Runtime execution providers in order of preference (default: CPUExecutionProvider)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    args = parser.parse_args(argv)

    try:
        classifier = OnnxClassifier(args.model, providers=args.providers)
    except ModelMetadataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paths = find_images(args.images)
    if not paths:
        print("error: no image files found in " + ", ".join(args.images), file=sys.stderr)
        return 1
    results = classifier.predict(paths, top_k=args.top_k, batch_size=max(1, args.batch_size))
    failed = [r for r in results if "error" in r]
    for result in failed:
        print(f"error: cannot read {result['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            if "top_k" in result:
                guesses = ", ".join(f"{c['label']} ({c['probability']:.1%})" for c in result["top_k"])
                print(f"{result['path']}: {guesses}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
