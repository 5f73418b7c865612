"""Image-folder datasets: scan, check, split (stratified, stable, written down) and load images safely.

A dataset folder holds one sub-folder per class::

    PokemonData/
        Abra/  0001.jpg  0002.png ...
        Zubat/ ...

``load_splits(root)`` scans it once, leaves out (and reports by path) every file that is not a
readable image, splits each class into train/val/test, and writes the split to a JSON manifest so
that it can be inspected and reused exactly. Files added later join the split whose share of their
class is furthest below target; files already listed never move.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from ._io import atomic_write
from .errors import ResnetzooError
from .transforms import eval_transform, eval_transform_config, train_transform

__all__ = [
    "SPLITS",
    "DataError",
    "EmptyClassError",
    "SplitManifestError",
    "ImageDataset",
    "ImageFolderSplit",
    "ScanResult",
    "IMAGE_SUFFIXES",
    "find_image_files",
    "load_image",
    "check_image",
    "scan_image_folder",
    "load_splits",
    "collate_skipping_broken",
    "MANIFEST_NAME",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_NAME = "splits.json"
MANIFEST_FORMAT = "resnetzoo-splits/1"
# Pillow's own limit (about 89 megapixels); larger images are refused as possible decompression bombs.
MAX_IMAGE_PIXELS: int = 89_478_485
# Folders that tools leave behind and that never hold classes or samples.
_IGNORED_NAMES = {"__MACOSX", "__pycache__"}
# What counts as an image when a folder of files (not a class-per-folder dataset) is given.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


class DataError(ResnetzooError, ValueError):
    """A dataset folder or split manifest that cannot be used as it is."""


class EmptyClassError(DataError):
    """A class folder with no usable image."""


class SplitManifestError(DataError):
    """A split manifest that is unreadable or was made with other split settings."""


class BrokenImageError(DataError):
    """One image file that cannot be decoded."""


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_NAMES


def find_image_files(path: str | os.PathLike) -> list[Path]:
    """The image files under a folder (recursively, sorted; hidden files and tool folders left out), or
    ``[path]`` for a file. Suffixes decide what is an image (``IMAGE_SUFFIXES``); decoding is not tried."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    return sorted(
        file for file in path.rglob("*")
        if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file()
        and not any(_is_hidden(part) for part in file.relative_to(path).parts)
    )


# ---------------------------------------------------------------------------------------------------
# Loading one image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, without the surprises of a bare ``convert("RGB")``."""
    mode = image.mode
    if mode.startswith("I"):
        # 16-bit (and 32-bit integer) images: convert("RGB") would clip every value above 255 to white.
        # Scale the 16-bit range onto 8 bits instead.
        array = np.asarray(image).astype(np.float32) / 257.0
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float32)
        scale = 255.0 if array.size and float(np.nanmax(array)) <= 1.0 else 1.0  # floats in 0..1 or in 0..255
        return Image.fromarray(np.clip(np.nan_to_num(array) * scale, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels often hold arbitrary colour (black, or noise); dropping alpha would show it.
        # Composite over white, as a viewer displays the image.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV: Pillow's conversions are correct


def load_image(path: str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """Open an image file as an upright 8-bit RGB PIL image.

    EXIF orientation is applied; grayscale, palette, RGBA, CMYK and 16-bit images become correct RGB.
    Raises ``BrokenImageError`` (naming the file) for empty, truncated, corrupt, non-image or
    oversized (decompression-bomb) files.

    Args:
        draft_size: let JPEG decode at a reduced size of at least this many pixels (fast checks).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BrokenImageError(f"{path}: empty file.")
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise BrokenImageError(
                    f"{path}: {width}x{height} pixels is over the limit of {MAX_IMAGE_PIXELS} "
                    "(possible decompression bomb); resize it if it is a genuine image."
                )
            if draft_size is not None:
                image.draft("RGB", (draft_size, draft_size))
            image.load()  # decode now: truncation and corruption surface here, not later
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except BrokenImageError:
        raise
    except Image.DecompressionBombError as error:
        raise BrokenImageError(f"{path}: refused as a possible decompression bomb ({error}).") from None
    except Image.UnidentifiedImageError:
        raise BrokenImageError(f"{path}: not an image file Pillow can read.") from None
    # Decoders raise many types for damaged data (OSError, SyntaxError, EOFError, zlib.error, struct.error,
    # ValueError...); a damaged file is data, not a bug, so every one becomes a report naming the file.
    except Exception as error:  # noqa: BLE001
        raise BrokenImageError(f"{path}: cannot be decoded ({type(error).__name__}: {error}).") from None


def check_image(path: str | os.PathLike) -> str | None:
    """``None`` when ``path`` decodes as an image, else the reason it does not."""
    try:
        load_image(path, draft_size=64)
    except BrokenImageError as error:
        return str(error).split(": ", 1)[-1]
    return None


# ---------------------------------------------------------------------------------------------------
# Scanning a folder


@dataclass
class ScanResult:
    """What a folder holds: classes (sorted folder names), usable samples and left-out files."""

    root: Path
    classes: list[str]
    samples: list[tuple[str, int]]  # (path relative to root, POSIX style; label)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    file_stats: dict[str, list] = field(default_factory=dict)  # relative path -> [size, mtime_ns, reason|None]


def _list_class_files(class_dir: Path) -> list[Path]:
    files = []
    for directory, subdirs, names in os.walk(class_dir, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not _is_hidden(d))
        files.extend(Path(directory) / name for name in names if not _is_hidden(name))
    return sorted(files)


def scan_image_folder(root: str | os.PathLike, known: dict[str, list] | None = None,
                      num_threads: int | None = None) -> ScanResult:
    """List classes and check every file once, in parallel.

    Args:
        known: ``file_stats`` of an earlier scan; files whose size and mtime are unchanged are not decoded again.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Dataset folder {root} does not exist or is not a folder. Pass a folder with one sub-folder per class.")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not _is_hidden(entry.name))
    if not classes:
        raise DataError(f"{root} has no class sub-folders. Put each class's images in its own folder, e.g. {root}/cat/1.jpg.")
    known = known or {}
    files: list[tuple[str, int, Path, list]] = []
    for label, name in enumerate(classes):
        for path in _list_class_files(root / name):
            stat = path.stat()
            files.append((path.relative_to(root).as_posix(), label, path, [stat.st_size, stat.st_mtime_ns]))

    def reason_for(item: tuple[str, int, Path, list]) -> str | None:
        relative, _, path, stat = item
        previous = known.get(relative)
        if previous is not None and list(previous[:2]) == stat:
            return previous[2]
        return check_image(path)

    # Pillow releases the GIL while decoding, so threads check files in parallel.
    with ThreadPoolExecutor(max_workers=num_threads or min(8, os.cpu_count() or 1)) as pool:
        reasons = list(tqdm(pool.map(reason_for, files), total=len(files), desc=f"checking {root.name}", unit="file",
                            disable=len(files) < 2000, leave=False))

    result = ScanResult(root=root, classes=classes, samples=[])
    for (relative, label, _, stat), reason in zip(files, reasons, strict=True):
        result.file_stats[relative] = [*stat, reason]
        if reason is None:
            result.samples.append((relative, label))
        else:
            result.skipped.append((relative, reason))
    counts = np.bincount([label for _, label in result.samples], minlength=len(classes))
    empty = [name for name, count in zip(classes, counts, strict=True) if count == 0]
    if empty:
        details = "; ".join(f"{r}: {why}" for r, why in result.skipped if r.split("/", 1)[0] in empty)[:1000]
        raise EmptyClassError(
            f"Class folder(s) {', '.join(empty)} in {root} have no usable image" + (f" ({details})" if details else "")
            + ". Add images to them or remove the folders."
        )
    if result.skipped:
        logger.warning("Left out %d of %d files in %s that are not readable images (listed in the split manifest):\n%s",
                       len(result.skipped), len(files), root,
                       "\n".join(f"  {r}: {why}" for r, why in result.skipped[:20])
                       + ("\n  ..." if len(result.skipped) > 20 else ""))
    return result


# ---------------------------------------------------------------------------------------------------
# Splitting


def _order_key(seed: int, relative: str) -> str:
    # A hash, not a shuffled list: each file's place depends on its own name only, so adding files
    # does not reorder the existing ones.
    return hashlib.sha256(f"{seed}:{relative}".encode()).hexdigest()


def _targets(count: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    test = round(count * test_fraction)
    val = round(count * val_fraction)
    while test + val >= count and test + val > 0:  # keep at least one training image per class
        if val >= test:
            val -= 1
        else:
            test -= 1
    return {"train": count - test - val, "val": val, "test": test}


def _assign_splits(samples: list[tuple[str, int]], num_classes: int, seed: int, val_fraction: float,
                   test_fraction: float, previous: dict[str, str]) -> dict[str, str]:
    """relative path -> split. Files in ``previous`` keep their split; new ones fill the largest deficit."""
    by_class: dict[int, list[str]] = {label: [] for label in range(num_classes)}
    for relative, label in samples:
        by_class[label].append(relative)
    assignment: dict[str, str] = {}
    for files in by_class.values():
        target = _targets(len(files), val_fraction, test_fraction)
        counts = dict.fromkeys(SPLITS, 0)
        for relative in files:
            if relative in previous:
                assignment[relative] = previous[relative]
                counts[previous[relative]] += 1
        for relative in sorted((f for f in files if f not in previous), key=lambda f: _order_key(seed, f)):
            split = max(SPLITS[::-1], key=lambda s: target[s] - counts[s])  # ties: test, then val, then train
            if target[split] - counts[split] <= 0:
                split = "train"
            assignment[relative] = split
            counts[split] += 1
    return assignment


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SplitManifestError(
            f"Split manifest {path} is unreadable ({error}). Delete it to split again (files may change split), "
            "or restore it from the run folder's copy."
        ) from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("splits"), dict):
        raise SplitManifestError(f"{path} is not a resnetzoo split manifest (format {MANIFEST_FORMAT}).")
    problem = _manifest_problem(data)
    if problem:
        raise SplitManifestError(
            f"Split manifest {path} is malformed: {problem}. It was probably edited by hand; fix that entry, "
            "or delete the file to split again (files may change split)."
        )
    return data


def _manifest_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a parsed manifest, or ``None``: a hand-edited file must fail here, clearly,
    and not later with a bare TypeError or IndexError."""
    for split, files in data["splits"].items():
        if split not in SPLITS:
            return f"'splits' has an unknown split {split!r} (expected {', '.join(SPLITS)})"
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            return f"'splits'/{split!r} must be a list of file paths (strings)"
    checked = data.get("checked", {})
    if not isinstance(checked, dict):
        return "'checked' must be an object mapping file paths to [size, mtime_ns, reason or null]"
    for relative, entry in checked.items():
        if not (isinstance(entry, list) and len(entry) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) for v in entry[:2])
                and (entry[2] is None or isinstance(entry[2], str))):
            return f"'checked'/{relative!r} must be [size, mtime_ns, reason or null], not {json.dumps(entry)[:80]}"
    return None


# ---------------------------------------------------------------------------------------------------
# Datasets


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 100_003 + index) % (2**63)


class ImageDataset(torch.utils.data.Dataset):
    """Labelled image files with a transform; like torchvision's ``ImageFolder`` but safe on bad files.

    ``dataset[i]`` returns ``(image_tensor, label)``, or ``None`` when the file can no longer be
    read (logged with its path; ``collate_skipping_broken`` drops it from the batch). Indexing with
    ``(i, epoch)`` seeds the random augmentation from ``(seed, epoch, i)``: each sample's augmentation
    is then the same whatever the number of workers or processes, which makes resumed runs exact.
    """

    accepts_epoch_keys = True  # the Trainer may index it with (index, epoch)

    def __init__(self, root: str | os.PathLike, samples: Sequence[tuple[str, int]], classes: Sequence[str],
                 transform: Callable | None = None, split: str | None = None,
                 eval_transform_config: dict[str, Any] | None = None, seed: int = 0,
                 skipped: Sequence[tuple[str, str]] = ()) -> None:
        self.root = Path(root)
        self.classes = list(classes)
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        # Absolute paths, as torchvision's ImageFolder.samples.
        self.samples = [(str(self.root / relative), int(label)) for relative, label in samples]
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        self.split = split
        self.eval_transform_config = eval_transform_config
        self.seed = seed
        self.skipped = list(skipped)  # files left out when the folder was scanned: (relative path, reason)
        self.failed: set[str] = set()  # files that broke after the scan, in this process
        self.manifest_path: Path | None = None  # the split manifest this dataset came from, if any

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int] | None:
        index, epoch = key if isinstance(key, tuple) else (key, None)
        path, label = self.samples[index]
        try:
            image = load_image(path)
        except BrokenImageError as error:
            if path not in self.failed:
                self.failed.add(path)
                logger.warning("Skipping a broken image: %s", error)
            return None
        if self.transform is None:
            return image, label
        if epoch is None:
            return self.transform(image), label
        # torchvision's random transforms draw from the global CPU generator: seed it for this sample and put
        # it back afterwards (get/set_state on the generator costs microseconds; torch.random.fork_rng ~100x more).
        generator = torch.default_generator
        saved = generator.get_state()
        generator.manual_seed(_sample_seed(self.seed, epoch, index))
        try:
            return self.transform(image), label
        finally:
            generator.set_state(saved)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, samples={len(self)}, classes={len(self.classes)})"


def collate_skipping_broken(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack a batch, leaving out samples that failed to load; returns ``(images, labels, num_skipped)``."""
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images = torch.stack([image for image, _ in good])
    labels = torch.as_tensor([int(label) for _, label in good], dtype=torch.long)
    return images, labels, skipped


def load_splits(
    root: str | os.PathLike,
    image_size: int | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    weights: Any = None,
    manifest: str | os.PathLike | None = None,
    crop_scale: Sequence[float] = (0.08, 1.0),
    hflip: bool = True,
) -> dict[str, ImageDataset]:
    """Scan ``root``, split every class into train/val/test and return the three datasets.

    Args:
        root: folder with one sub-folder per class (hidden files and folders are ignored).
        image_size: training crop and eval crop size; default 224, or the weights' own crop size.
        val_fraction, test_fraction: share of each class in val and test (rounded per class; every
            class keeps at least one training image).
        seed: decides which files go where, and seeds the augmentation.
        weights: the pretrained weights (record, torchvision Weights member, ``model.config`` or
            model) whose evaluation transform to use; e.g. resize 232 / crop 224 for V2 weights.
        manifest: where the split is written and read; default ``root/splits.json``. An existing
            manifest is reused exactly; new files are added to it, deleted ones dropped.
        crop_scale, hflip: training augmentation (see ``resnetzoo.transforms.train_transform``).

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``; each dataset has ``.classes``, ``.samples``,
        ``.targets`` and ``.eval_transform_config`` (the dict to store in ``model.config``).
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be >= 0 with a sum below 1.")
    root = Path(root)
    manifest_path = Path(manifest) if manifest is not None else root / MANIFEST_NAME
    previous: dict[str, str] = {}
    known: dict[str, list] = {}
    data: dict[str, Any] | None = None
    if manifest_path.is_file():
        data = _read_manifest(manifest_path)
        settings = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
        if any(data.get(k) != v for k, v in settings.items()):
            made_with = ", ".join(f"{k}={data.get(k)!r}" for k in settings)
            asked_for = ", ".join(f"{k}={v!r}" for k, v in settings.items())
            raise SplitManifestError(
                f"Split manifest {manifest_path} was made with {made_with}, but this call asks for {asked_for}. "
                "Pass the same settings to reuse it, or make a new split in another manifest file "
                "(manifest= in Python, --splits on the command line), or delete this one."
            )
        previous = {relative: split for split in SPLITS for relative in data["splits"].get(split, [])}
        known = data.get("checked", {})

    scan = scan_image_folder(root, known=known)
    assignment = _assign_splits(scan.samples, len(scan.classes), seed, val_fraction, test_fraction, previous)
    dropped = sorted(set(previous) - set(assignment))
    if dropped:
        logger.warning("%d files listed in %s are gone or unreadable and were dropped from the split.", len(dropped), manifest_path)
    added = len(set(assignment) - set(previous))
    if previous and added:
        logger.info("Added %d new files to the split in %s.", added, manifest_path)

    split_samples = {split: [(r, label) for r, label in scan.samples if assignment[r] == split] for split in SPLITS}
    _write_manifest(manifest_path, root, scan, split_samples, seed, val_fraction, test_fraction, existing=data)

    eval_config = eval_transform_config(image_size, weights)
    train_tf = train_transform(eval_config, scale=crop_scale, hflip=hflip)
    eval_tf = eval_transform(eval_config)
    datasets = {
        split: ImageDataset(root, split_samples[split], scan.classes, transform=train_tf if split == "train" else eval_tf,
                            split=split, eval_transform_config=eval_config, seed=seed, skipped=scan.skipped)
        for split in SPLITS
    }
    for dataset in datasets.values():
        dataset.manifest_path = manifest_path if manifest_path.is_file() else None
    logger.info("%s: %d classes; %s images.", root, len(scan.classes),
                ", ".join(f"{split} {len(datasets[split])}" for split in SPLITS))
    return datasets


def _write_manifest(path: Path, root: Path, scan: ScanResult, split_samples: dict[str, list[tuple[str, int]]],
                    seed: int, val_fraction: float, test_fraction: float, existing: dict[str, Any] | None = None) -> None:
    data = {
        "format": MANIFEST_FORMAT,
        "root": str(root.resolve()),
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "classes": scan.classes,
        "counts": {split: len(samples) for split, samples in split_samples.items()},
        "splits": {split: [relative for relative, _ in samples] for split, samples in split_samples.items()},
        "skipped": [{"path": relative, "reason": reason} for relative, reason in scan.skipped],
        "checked": scan.file_stats,  # lets the next scan skip decoding unchanged files
    }
    if existing is not None and json.loads(json.dumps(data)) == existing:
        return  # unchanged: reusing a split never rewrites it (read-only folders, several processes reading it)
    try:
        with atomic_write(path, "w") as handle:
            json.dump(data, handle, indent=1)
    except OSError as error:  # a read-only dataset still trains; the split is then not remembered
        logger.warning("Could not write the split manifest %s (%s); to keep the split, pass a writable manifest path "
                       "(manifest= in Python, --splits on the command line).", path, error)


class ImageFolderSplit(ImageDataset):
    """One split of an image folder by name, as in ``ImageFolderSplit("PokemonData", "train")``.

    Takes the same keyword arguments as :func:`load_splits` and uses (or writes) the same manifest,
    so the three splits made this way never share a file.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", **options: Any) -> None:
        if split not in SPLITS:
            raise DataError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
        dataset = load_splits(root, **options)[split]
        self.__dict__.update(dataset.__dict__)
