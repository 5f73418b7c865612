"""Export a model to ONNX, TorchScript and a ``torch.export`` program, each file proven equal to PyTorch.

    >>> from resnetzoo.export import export_model
    >>> manifest = export_model("runs/flowers", "exported/", formats=["onnx", "exported"])

Every file is written under a temporary name, reloaded the way a consumer would load it, compared
with the PyTorch model in eval mode, and moved into place only when every check passed
(``verify=False`` skips the gate). ``manifest.json`` lists each file with its SHA-256, size, versions
and the checks it passed. ``python -m resnetzoo.export --help`` is the same from the command line.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import logging
import os
import platform
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .._io import fsync_dir
from ..config import ModelConfig
from ..errors import ResnetzooError
from .metadata import EXPORT_FORMAT, export_metadata
from .onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from .verify import (
    DEFAULT_NUM_INPUTS,
    FP16_MIN_AGREEMENT,
    FP32_TOLERANCE,
    CheckResult,
    format_table,
    make_reference,
    verification_inputs,
    verify_file,
)

__all__ = [
    "FORMATS",
    "DEFAULT_FORMATS",
    "MANIFEST_NAME",
    "ExportError",
    "ExportVerificationError",
    "CheckResult",
    "export_model",
    "file_name",
    "format_table",
]

logger = logging.getLogger(__name__)

# Format name -> file suffix. "exported" is the torch.export program (upstream's name for it); "pt2" is an alias.
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported": ".pt2"}
_ALIASES = {"pt2": "exported", "ts": "torchscript", "jit": "torchscript"}
DEFAULT_FORMATS = ("onnx", "torchscript", "exported")
_DESCRIPTIONS = {"onnx": "ONNX", "torchscript": "TorchScript", "exported": "torch.export program"}
MANIFEST_NAME = "manifest.json"
MAX_IMAGE_SIZE = 4096


class ExportError(ResnetzooError, ValueError):
    """An export that cannot start or cannot be written (bad source, format, size or output folder)."""


class ExportVerificationError(ExportError):
    """The gate refused at least one file; ``results`` holds every check, failed ones included."""

    def __init__(self, out_dir: Path, results: list[CheckResult]):
        self.out_dir = out_dir
        self.results = results
        failed = [r for r in results if not r.passed]
        lines = "\n".join(f"  {r}" for r in failed)
        super().__init__(
            f"Export refused: {len(failed)} verification check(s) failed, so nothing was written to {out_dir}:\n{lines}"
        )


def file_name(kind: str, fp16: bool = False) -> str:
    """``model.onnx``, ``model.fp16.onnx``, ``model.torchscript.pt``, ``model.pt2``, ..."""
    return "model" + (".fp16" if fp16 else "") + FORMATS[kind]


def _normalise_formats(formats: Sequence[str] | str) -> list[str]:
    if isinstance(formats, str):
        formats = [formats]
    chosen: list[str] = []
    for raw in formats:
        kind = _ALIASES.get(str(raw).lower(), str(raw).lower())
        if kind not in FORMATS:
            raise ExportError(f"Unknown export format {raw!r}. Choose from: {', '.join(FORMATS)} (pt2 = exported).")
        if kind not in chosen:
            chosen.append(kind)
    if not chosen:
        raise ExportError(f"No export format given. Choose one or more of: {', '.join(FORMATS)}.")
    return chosen


def _load_source(source: Any, pretrained: Any, num_classes: int | None,
                 progress: bool = True) -> tuple[torch.nn.Module, str, bool]:
    """The model, a description of where it came from, and whether that was a registered name."""
    from ..factory import create
    from ..hub import HF_HUB_PREFIX

    if isinstance(source, torch.nn.Module):
        if pretrained not in (False, None) or num_classes is not None:
            raise ExportError("pretrained= and num_classes= apply to model names and folders, not to a model object.")
        if not isinstance(getattr(source, "config", None), ModelConfig):
            raise ExportError("This model has no .config; build it with resnetzoo.create() so that the export can "
                              "record its preprocessing and labels.")
        classifier = getattr(source, "fc", None)
        head = classifier.out_features if isinstance(classifier, torch.nn.Linear) else source.config.num_classes
        if head != source.config.num_classes:
            # e.g. model.fc replaced by hand: the config would label 10 logits with 1000 ImageNet names.
            raise ExportError(
                f"The model's head has {head} classes but model.config says {source.config.num_classes}. Set "
                f"model.config.num_classes = {head} and model.config.class_names (a list of {head} names) first."
            )
        return source, f"{type(source).__name__} object", False
    text = os.fspath(source)
    if text.startswith(HF_HUB_PREFIX):  # a saved folder on the Hugging Face Hub
        if pretrained not in (False, None):
            raise ExportError(f"{text} already holds its weights; drop --pretrained.")
        return create(text, num_classes=num_classes), text, False
    path = Path(text).expanduser()
    if path.is_dir():
        if pretrained not in (False, None):
            raise ExportError(f"{path} is a saved folder and already holds its weights; drop --pretrained.")
        return create(path, num_classes=num_classes), str(path), False
    if path.exists():
        raise ExportError(f"{path} is a file, not a folder saved by resnetzoo. Pass a registered model name or "
                          "a folder written by save_pretrained() or a training run.")
    if os.sep in text or "/" in text or text.startswith((".", "~")):
        raise ExportError(f"No such folder: {text}. Pass a registered model name (see resnetzoo.list_models()) "
                          "or an existing folder written by save_pretrained() or a training run.")
    return create(text, pretrained=pretrained, num_classes=num_classes, progress=progress), text, True


def _check_out_dir(out_dir: Path) -> None:
    """Fail before loading a model (which can take a while) when the output folder cannot be created."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"Output {out_dir} is a file, not a folder. Choose a folder for the exported files.")
    ancestor = out_dir
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ExportError(f"Cannot write to {out_dir}: {ancestor} is not a writable folder. "
                          "Choose an output folder you can write to.")


def _image_inputs(sources: Any, metadata: dict[str, Any], limit: int) -> tuple[torch.Tensor, str]:
    """The verification set from the user's own images, decoded and preprocessed as resnetzoo.predict does."""
    from ..data import BrokenImageError, find_image_files, load_image
    from ..transforms import eval_transform

    if metadata["input_shape"][1] != 3:
        raise ExportError("verify_images needs a 3-channel (RGB) model; leave it out to use the synthetic set.")
    items = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    files: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            files += find_image_files(path)
        elif path.is_file():
            files.append(path)
        else:
            raise ExportError(f"Verification image {path} does not exist.")
    transform = eval_transform({key: metadata[key] for key in ("resize_size", "crop_size", "mean", "std",
                                                                "interpolation")})
    # Skip what cannot be decoded, as training and predict do: one corrupt file in a photo folder is no
    # reason to refuse an export, but each one is named so that nothing is dropped silently.
    images: list[torch.Tensor] = []
    skipped: list[Path] = []
    for path in files:
        if len(images) == limit:
            break
        try:
            images.append(transform(load_image(path)))
        except BrokenImageError as error:
            logger.warning("Skipping verification image %s", error)
            skipped.append(path)
    if len(images) < 2:
        unreadable = f" ({len(skipped)} unreadable file(s) skipped)" if skipped else ""
        raise ExportError(f"verify_images gave {len(images)} usable image(s){unreadable}; the gate needs at least 2 "
                          "(batch 1 and batch N). Add readable images, or leave verify_images out for the synthetic set.")
    return torch.stack(images), f"{len(images)} image(s) from {', '.join(str(i) for i in items)}"


def _prepare_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        raise ExportError(
            f"Cannot write to {out_dir} ({error.strerror or error}). Choose an output folder you can write to."
        ) from None


def _remove(paths: Any) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _versions() -> dict[str, str]:
    from .. import __version__

    versions = {"resnetzoo": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for module_name in ("onnx", "onnxruntime", "onnxscript"):
        with contextlib.suppress(ImportError):
            versions[module_name] = __import__(module_name).__version__
    return versions


def _export_one(kind: str, model: torch.nn.Module, path: Path, example: torch.Tensor, metadata: dict[str, Any],
                opset: int) -> dict[str, Any]:
    try:
        if kind == "onnx":
            from .onnx import export_onnx

            return export_onnx(model, path, example, metadata, opset)
        if kind == "torchscript":
            from .torchscript import export_torchscript

            return export_torchscript(model, path, metadata)
        from .program import export_program

        return export_program(model, path, example, metadata)
    except ImportError as error:
        raise ExportError(f"Exporting {kind} needs {error.name}: pip install 'resnetzoo[export]'.") from error
    except Exception as error:
        # The exporters raise a zoo of exception types; the user needs to know which format broke and why.
        message = " ".join(str(error).split())[:500]
        raise ExportError(f"Exporting to {kind} failed: {type(error).__name__}: {message}") from error


def export_model(
    source: str | os.PathLike | torch.nn.Module,
    out_dir: str | os.PathLike,
    formats: Sequence[str] | str = DEFAULT_FORMATS,
    *,
    pretrained: Any = False,
    num_classes: int | None = None,
    image_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    verify: bool = True,
    num_verify_inputs: int = DEFAULT_NUM_INPUTS,
    tolerance: float = FP32_TOLERANCE,
    min_agreement: float = FP16_MIN_AGREEMENT,
    verify_images: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Export a model to each format in ``formats`` and prove every file before it reaches ``out_dir``.

    Args:
        source: a registered name (``"resnet50"``), a folder written by ``save_pretrained`` or a training run,
            ``"hf-hub:org/name"``, or a model built by ``resnetzoo.create`` (it is copied, never modified).
        out_dir: output folder, created if needed; ``manifest.json`` and the model files go there.
        formats: any of ``"onnx"``, ``"torchscript"``, ``"exported"`` (the ``torch.export`` ``.pt2`` program).
        pretrained, num_classes: as for ``resnetzoo.create`` (names; ``num_classes`` also for folders).
        image_size: input height and width (default: the config's crop size); the resize size scales with it.
        opset: ONNX opset version.
        fp16: export half-precision files (``model.fp16.*``) whose input and output are float16.
        verify: run the gate (on by default). Without it files are written unproven, and the manifest says so.
        num_verify_inputs: size of the fixed input set; the batch-size check runs at 1 and at this size.
        tolerance: fp32 limit on max |logit difference| against PyTorch.
        min_agreement: fp16 limit on top-1 agreement with the fp32 PyTorch model.
        verify_images: image files or folders to verify with instead of the synthetic set (the first
            ``num_verify_inputs`` in sorted order, preprocessed as ``resnetzoo.predict`` does): real photos
            make the fp16 agreement check speak about your data.
        progress: draw a progress bar over the formats.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).

    Raises:
        ExportError: a bad argument, an unwritable folder, or an exporter that failed.
        ExportVerificationError: a file failed the gate; no file and no manifest was written.
    """
    kinds = _normalise_formats(formats)
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET}), "
                          f"got {opset!r}.")
    if image_size is not None and (not isinstance(image_size, int) or not 16 <= image_size <= MAX_IMAGE_SIZE):
        raise ExportError(f"image_size must be an integer between 16 and {MAX_IMAGE_SIZE}, got {image_size!r}.")
    if num_verify_inputs < 2:
        raise ExportError("num_verify_inputs must be at least 2: the batch axis is checked at batch 1 and at that size.")
    out_dir = Path(out_dir).expanduser()
    _check_out_dir(out_dir)
    model, source_text, from_name = _load_source(source, pretrained, num_classes, progress)
    config: ModelConfig = model.config
    if config.num_classes == 0:
        raise ExportError("This model has no classifier head (num_classes=0); export a classifier, or give the "
                          "folder a head with num_classes=N.")
    if from_name and pretrained in (False, None):
        # A registered name without --pretrained: fine for testing a deployment pipeline, useless for predictions.
        logger.warning("Exporting %s with randomly initialised weights; pass --pretrained (pretrained=True) for "
                       "torchvision's weights, or a trained folder.", source)

    from .. import __version__

    dtype = "float16" if fp16 else "float32"
    metadata = export_metadata(config, image_size, dtype, __version__)
    _, in_chans, height, _ = metadata["input_shape"]
    # The caller's own module is copied (it must not change); one built here from a name or folder is ours.
    reference_model = (copy.deepcopy(model) if isinstance(source, torch.nn.Module) else model).float().cpu().eval()
    if verify_images is not None:
        inputs, input_set = _image_inputs(verify_images, metadata, num_verify_inputs)
    else:
        inputs = verification_inputs(in_chans, height, metadata["mean"], metadata["std"], count=num_verify_inputs)
        input_set = "seeded smooth random images, normalised with the model's mean/std (see resnetzoo.export.verify)"
    reference = make_reference(reference_model, inputs)
    export_model_ = copy.deepcopy(reference_model).half() if fp16 else reference_model
    example = inputs[:2].to(torch.float16 if fp16 else torch.float32)

    created_out_dir = not out_dir.exists()
    _prepare_out_dir(out_dir)
    temporary: dict[str, Path] = {}
    details: dict[str, dict[str, Any]] = {}
    results: list[CheckResult] = []
    try:
        # disable=None: no bar when stderr is not a terminal (CI logs, pipes), as tqdm documents.
        bar = tqdm(kinds, desc="export", unit="file", disable=None if progress else True, leave=False)
        for kind in bar:
            name = file_name(kind, fp16)
            bar.set_postfix_str(name)
            # A hidden temporary name in the output folder, so that os.replace into place is atomic; it keeps
            # the real suffix because torch.export.load refuses paths that do not end in .pt2.
            temporary[kind] = out_dir / f".part-{uuid.uuid4().hex[:8]}-{name}"
            logger.info("Exporting %s (%s)", name, _DESCRIPTIONS[kind])
            with torch.no_grad():
                details[kind] = _export_one(kind, export_model_, temporary[kind], example, metadata, opset)
            if verify:
                logger.info("Verifying %s", name)
                results += verify_file(temporary[kind], kind, reference, metadata, dtype, tolerance, min_agreement,
                                       label=name)
        if any(not r.passed for r in results):
            raise ExportVerificationError(out_dir, results)
        manifest = _manifest(source_text, kinds, fp16, metadata, details, temporary, results, verify,
                             int(inputs.shape[0]), tolerance, min_agreement, input_set)
        # Every file, the manifest included, is complete and on disk under its temporary name before the first
        # rename: a failure up to here leaves the previous export untouched. The manifest is renamed last, so it
        # never lists files that are not in place yet.
        temporary["manifest"] = out_dir / f".part-{uuid.uuid4().hex[:8]}-{MANIFEST_NAME}"
        temporary["manifest"].write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for path in temporary.values():
            _fsync_file(path)  # the bytes reach the disk before the name does: no empty file after a crash
        for kind in kinds:
            os.replace(temporary[kind], out_dir / file_name(kind, fp16))
        os.replace(temporary["manifest"], out_dir / MANIFEST_NAME)
        fsync_dir(out_dir)
    except BaseException:
        _remove(temporary.values())
        if created_out_dir:
            with contextlib.suppress(OSError):  # only when empty: a refused export leaves no trace
                out_dir.rmdir()
        raise
    # DEBUG, not INFO: the returned manifest says what was written, and the CLI prints its own summary last.
    logger.debug("Wrote %s and %s to %s", ", ".join(file_name(k, fp16) for k in kinds), MANIFEST_NAME, out_dir)
    return manifest


def _manifest(source: str, kinds: list[str], fp16: bool, metadata: dict[str, Any], details: dict[str, dict[str, Any]],
              temporary: dict[str, Path], results: list[CheckResult], verify: bool, num_inputs: int,
              tolerance: float, min_agreement: float, input_set: str) -> dict[str, Any]:
    from ..weights.files import sha256_file

    files = []
    for kind in kinds:
        name = file_name(kind, fp16)
        checks = [r.to_dict() for r in results if r.file == name]
        files.append({
            "name": name,
            "format": kind,
            "sha256": sha256_file(temporary[kind]),  # the very bytes that were verified
            "size_bytes": temporary[kind].stat().st_size,
            "dtype": metadata["input_dtype"],
            **details[kind],
            "verified": verify,
            "checks": checks,
        })
    return {
        "format": EXPORT_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "metadata": metadata,
        "versions": _versions(),
        "verification": {
            "enabled": verify,
            "passed": all(r.passed for r in results) if verify else None,
            "num_inputs": num_inputs,
            "batch_sizes": [1, num_inputs],
            "fp32_max_abs_diff": tolerance,
            "fp16_min_top1_agreement": min_agreement,
            "input_set": input_set,
        },
        "files": files,
    }
