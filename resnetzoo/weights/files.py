"""Weights files on disk: the shared cache, verified downloads, and loading that never runs code.

The cache is torchvision's own (``$TORCH_HOME/hub/checkpoints``), so a file downloaded by either
library serves both. Unlike torchvision, we check the SHA-256 prefix in the file name before a
cached file is first used, and we only ever unpickle with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .._io import atomic_write
from ..errors import WeightsFileError, WeightsHashMismatchError, WeightsUnavailableError
from .records import WeightsRecord

__all__ = [
    "cache_dir",
    "cached_path",
    "copy_into_cache",
    "sha256_file",
    "download_url",
    "is_offline",
    "weights_url",
    "fetch_weights",
    "verify_file",
    "load_state_dict_file",
    "MIRROR_ENV",
    "OFFLINE_ENV",
]

logger = logging.getLogger(__name__)

MIRROR_ENV = "RESNETZOO_WEIGHTS_URL"  # base URL of a mirror serving torchvision's file names
OFFLINE_ENV = "RESNETZOO_OFFLINE"  # "1": never touch the network, use the cache only
TIMEOUT_ENV = "RESNETZOO_DOWNLOAD_TIMEOUT"  # seconds to wait for a connection or a read
_DEFAULT_TIMEOUT_S = 10.0
_CHUNK = 1 << 20

# SHA-256 of files hashed in this process, keyed by (path, size, mtime): hashing a 500 MB file on
# every create() would be slow, and a file replaced on disk gets a new key.
_digests: dict[tuple[str, int, int], str] = {}


def cache_dir() -> Path:
    """torchvision's checkpoint cache: ``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch/...`` by default)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(record: WeightsRecord) -> Path:
    return cache_dir() / record.filename


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, remembered for the process while the file's size and mtime stay the same."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def _import_hint(record: WeightsRecord) -> str:
    return (
        f"Delete it and let resnetzoo download it again, or copy a good file there with: "
        f"python -m resnetzoo.weights import /path/to/{record.filename}"
    )


def verify_file(path: Path, record: WeightsRecord) -> None:
    """Check a file's SHA-256 against the prefix in its published name; raise on mismatch."""
    actual = sha256_file(path)
    if not actual.startswith(record.sha256_prefix):
        raise WeightsHashMismatchError(path, record.sha256_prefix, actual, _import_hint(record))


def weights_url(record: WeightsRecord) -> str:
    """Where a record is downloaded from: the RESNETZOO_WEIGHTS_URL mirror when set, else torchvision's URL."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{record.filename}" if mirror else record.url


def is_offline() -> bool:
    """True when RESNETZOO_OFFLINE forbids any network access."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def download_url(url: str, destination: Path, sha256_prefix: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``destination`` atomically: a temporary file in the same folder, checked, then renamed.

    A failed, interrupted or wrong download leaves nothing at ``destination``.
    """
    timeout = float(os.environ.get(TIMEOUT_ENV, _DEFAULT_TIMEOUT_S))
    with atomic_write(destination) as handle, urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
        total = int(response.headers.get("Content-Length") or 0) or None
        digest = hashlib.sha256()
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=destination.name,
                  disable=not progress) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                handle.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        actual = digest.hexdigest()
        if sha256_prefix and not actual.startswith(sha256_prefix):
            # Raising inside atomic_write discards the temporary file: nothing reaches the cache.
            raise WeightsHashMismatchError(
                url, sha256_prefix, actual, "The server sent a different file; nothing was saved. Check the mirror or retry."
            )
    stat = destination.stat()  # remember the digest just computed: sha256_file need not read the file again
    _digests[(str(destination.resolve()), stat.st_size, stat.st_mtime_ns)] = actual
    return destination


def fetch_weights(record: WeightsRecord, progress: bool = True) -> Path:
    """The verified local file of a published checkpoint, downloading it into the cache when missing."""
    path = cached_path(record)
    if path.is_file():
        verify_file(path, record)
        return path
    url = weights_url(record)
    how_to = (
        f"Copy the file there, or on this machine run: python -m resnetzoo.weights import /path/to/{record.filename} "
        f"(on a machine with network: python -m resnetzoo.weights download {record.model_name}:{record.tag} --to DIR)."
    )
    if is_offline():
        raise WeightsUnavailableError(
            f"No cached weights for {record.full_name} and {OFFLINE_ENV} is set. Expected {path} (from {url}). {how_to}"
        )
    logger.info("Downloading %s weights from %s to %s", record.full_name, url, path)
    try:
        download_url(url, path, record.sha256_prefix, progress=progress)
    except OSError as error:  # URLError, HTTPError, timeouts and refused connections are all OSErrors
        reason = getattr(error, "reason", error)
        raise WeightsUnavailableError(
            f"No cached weights for {record.full_name} and the download failed ({reason}). "
            f"Expected {path} (from {url}). {how_to}"
        ) from error
    return path


# Containers that training scripts commonly wrap a state dict in.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "ema")


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            nested = next((obj[k] for k in _NESTED_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if nested is None:
                break
            obj = nested
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsFileError(path, f"it holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors).")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsFileError(path, f"entries that are not named tensors: {bad[:5]}.")
    return dict(obj)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or PyTorch (``.pth``/``.pt``) state dict safely onto the CPU.

    Pickles are read with ``weights_only=True``: a file that would run code when unpickled is
    refused before anything runs. Every failure is a ``WeightsFileError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(path, "no such file.")
    if path.stat().st_size == 0:
        raise WeightsFileError(path, "the file is empty.", "Download or copy it again.")
    if path.suffix == ".safetensors" or _is_safetensors(path):
        from .safe import load_safetensors

        return load_safetensors(path)
    with open(path, "rb") as handle:
        head = handle.read(2)
    # torch.save writes a zip archive ("PK"; a truncated one goes on, to be reported as truncated); older files
    # are a pickle (protocol 2+ starts with 0x80). Anything else (a config.json, an image, a text file) is
    # named as what it is not, rather than as a refused pickle.
    if head != b"PK" and head[:1] != b"\x80":
        raise WeightsFileError(
            path, f"it is neither a PyTorch checkpoint (torch.save) nor a safetensors file (it starts with {head!r}).",
            "Pass a .pth/.pt state dict or a .safetensors file, e.g. the model.safetensors of a saved folder.",
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsFileError(
            path,
            f"refused to unpickle it: it contains objects other than tensors ({(str(error).splitlines() or [''])[0][:200]}).",
            "Only plain state dicts are loaded; nothing in the file was executed. Re-save it with "
            "torch.save(model.state_dict(), path) or as .safetensors.",
        ) from None
    except Exception as error:
        # On garbage the weights-only unpickler raises nearly anything (struct.error, RecursionError,
        # EOFError, zipfile errors, ...); with weights_only=True nothing ran, so each means "unreadable file".
        raise WeightsFileError(
            path, f"it is not a readable PyTorch file, or it is truncated ({type(error).__name__}: {str(error)[:200]}).",
            "Download or copy it again.",
        ) from None
    return _unwrap(obj, path)


def _is_safetensors(path: Path) -> bool:
    # A safetensors file starts with an 8-byte little-endian header length, then "{".
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not zipfile.is_zipfile(path)


def copy_into_cache(source: Path, record: WeightsRecord) -> Path:
    """Verify ``source`` against ``record`` and place it in the cache atomically."""
    actual = sha256_file(source)
    if not actual.startswith(record.sha256_prefix):
        raise WeightsHashMismatchError(source, record.sha256_prefix, actual, "This is not the published file; nothing was copied.")
    destination = cached_path(record)
    with atomic_write(destination) as handle, open(source, "rb") as original:
        shutil.copyfileobj(original, handle, _CHUNK)
    return destination
