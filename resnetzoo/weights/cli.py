"""``python -m resnetzoo.weights``: manage pretrained weights, including on machines without internet.

    python -m resnetzoo.weights list [PATTERN]              what exists, what is cached and verified
    python -m resnetzoo.weights download resnet50 [--to DIR] fetch into the cache, or into a bundle folder
    python -m resnetzoo.weights import DIR_OR_FILE...       verify and place files into the cache
    python -m resnetzoo.weights verify [--delete-corrupt]   re-hash the cache
    python -m resnetzoo.weights convert resnet50 --out DIR  a torchvision checkpoint -> a resnetzoo folder

The air-gapped workflow: ``download NAME... --to bundle/`` on a machine with network, carry the
folder (it holds a ``SHA256SUMS`` manifest that ``sha256sum -c`` also understands), then
``import bundle/`` on the offline machine. Every file is checked against the SHA-256 that
torchvision publishes in its file name before it enters the cache.

Each command is a function that returns an exit status, so tests call them directly.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .._io import atomic_write
from ..errors import (
    ResnetzooError,
    UnknownModelError,
    UnknownWeightsError,
    WeightsFileError,
    WeightsHashMismatchError,
    WeightsUnavailableError,
)
from ..registry import get_variant, list_models
from . import files, records
from .records import WeightsRecord

__all__ = ["main", "select_records", "MANIFEST_NAME", "Status", "cache_status", "find_record_for_digest"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "SHA256SUMS"  # "<sha256>  <file name>" lines: the format of coreutils' sha256sum


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_EXIT_STATUS = """exit status:
  0    done (list, verify: every cached file checked is intact)
  1    a cached file is corrupt (list, verify), a file was refused (import), or a download failed
  2    bad arguments: unknown model or weights tag, nothing to import in a folder, ...
  130  interrupted (nothing partial is kept)"""


class CliError(ResnetzooError):
    """A command-line mistake (unknown spec, missing file); printed as one line, exit status 2."""


def _unknown_weights(error: UnknownWeightsError, allow_all: bool = True) -> CliError:
    """The library's message speaks of pretrained=...; on the command line the choice is written NAME[:TAG]."""
    name = error.model_name
    choices = ", ".join(error.available) if error.available else "none"
    every = f" or {name}:all for every tag" if allow_all else ""
    return CliError(f"Unknown weights {error.tag!r} for {name}. Available tags: {choices}. Write {name} alone for "
                    f"the default tag, {name}:TAG for one tag{every}.")


# ------------------------------------------------------------------------------------ selection


def all_records() -> list[WeightsRecord]:
    """Every published checkpoint of every registered model, in registry order."""
    return [record for name in list_models() for record in records.weights_records(name)]


def select_records(specs: Sequence[str], everything: bool = False) -> list[WeightsRecord]:
    """Records named by ``NAME``, ``NAME:TAG`` or ``NAME:all`` (or every record with ``everything``).

    ``NAME`` alone means torchvision's default weights (IMAGENET1K_V2 where it exists).
    """
    if everything:
        return all_records()
    if not specs:
        raise CliError("Name at least one model (e.g. resnet50 or resnet50:IMAGENET1K_V1), or pass --all.")
    selected: list[WeightsRecord] = []
    for spec in specs:
        name, _, tag = spec.partition(":")
        get_variant(name)  # an unknown name raises with suggestions before torchvision's bare "Unknown model"
        if tag.lower() == "all":
            chosen = list(records.weights_records(name))
        elif tag:
            try:
                record = records.resolve_pretrained(name, tag)
            except UnknownWeightsError as error:
                raise _unknown_weights(error) from None
            if not isinstance(record, WeightsRecord):
                raise CliError(f"{spec!r}: after ':' comes a weights tag such as IMAGENET1K_V1, or 'all'.")
            chosen = [record]
        else:
            chosen = [records.default_record(name)]
        selected += [r for r in chosen if r not in selected]
    return selected


# ------------------------------------------------------------------------------------ status


@dataclass(frozen=True)
class Status:
    """Whether a published checkpoint is in the cache, and whether its SHA-256 matches the published prefix."""

    cached: bool
    verified: bool | None  # None: not checked (not cached, or --no-verify)

    def label(self) -> str:
        if not self.cached:
            return "-"
        return {True: "ok", False: "CORRUPT", None: "not checked"}[self.verified]


def cache_status(record: WeightsRecord, verify: bool = True) -> Status:
    """Look for ``record``'s file in the cache and (unless ``verify=False``) re-hash it."""
    path = files.cached_path(record)
    if not path.is_file():
        return Status(cached=False, verified=None)
    if not verify:
        return Status(cached=True, verified=None)
    return Status(cached=True, verified=files.sha256_file(path).startswith(record.sha256_prefix))


def find_record_for_digest(sha256: str, file_name: str | None = None) -> WeightsRecord | None:
    """The published record whose SHA-256 prefix starts ``sha256`` (by content, so renamed files are found)."""
    matches = [r for r in all_records() if sha256.startswith(r.sha256_prefix)]
    # Two tags never share a file today; if they ever do, prefer the one whose file name matches.
    matches.sort(key=lambda r: r.filename != file_name)
    return matches[0] if matches else None


def _record_named(file_name: str) -> WeightsRecord | None:
    return next((r for r in all_records() if r.filename == file_name), None)


# ------------------------------------------------------------------------------------ commands


def _table(rows: list[list[str]], header: list[str], right: set[int]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Iterable[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(header), line("-" * w for w in widths), *(line(r) for r in rows)])


def cmd_list(pattern: str = "*", verify: bool = True) -> int:
    rows = []
    names = list_models(pattern)
    if not names:
        raise CliError(f"No model matches {pattern!r}; see python -m resnetzoo.weights list.")
    for name in names:
        default_tag = records.default_record(name).tag
        for record in records.weights_records(name):
            status = cache_status(record, verify=verify)
            rows.append([
                record.model_name, record.tag + (" *" if record.tag == default_tag else ""),
                f"{record.acc1:.2f}" if record.acc1 is not None else "-",
                f"{record.acc5:.2f}" if record.acc5 is not None else "-",
                f"{record.num_params / 1e6:.1f}M",
                f"{record.gflops:.2f}" if record.gflops is not None else "-",
                f"{record.file_size_mb:.1f}" if record.file_size_mb is not None else "-",
                "yes" if status.cached else "no", status.label(),
            ])
    header = ["model", "weights", "acc@1", "acc@5", "params", "GFLOPS", "MB", "cached", "verified"]
    print(_table(rows, header, right={2, 3, 4, 5, 6}))
    print(f"\n* default weights (pretrained=True). ImageNet-1K accuracy as published by torchvision. "
          f"Cache: {files.cache_dir()}")
    return EXIT_FAILED if any(row[-1] == "CORRUPT" for row in rows) else EXIT_OK


def cmd_download(specs: Sequence[str], everything: bool = False, to: Path | None = None, progress: bool = True) -> int:
    selected = select_records(specs, everything)
    if to is None:
        for record in selected:
            path = files.fetch_weights(record, progress=progress)
            print(f"ok  {record.full_name}  {path}")
        return 0
    to.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(to / MANIFEST_NAME) if (to / MANIFEST_NAME).is_file() else {}
    for record in selected:
        destination = to / record.filename
        cached = files.cached_path(record)
        if destination.is_file() and files.sha256_file(destination).startswith(record.sha256_prefix):
            how = "already in the bundle"
        elif cached.is_file() and files.sha256_file(cached).startswith(record.sha256_prefix):
            with atomic_write(destination) as handle, open(cached, "rb") as source:
                shutil.copyfileobj(source, handle, 1 << 20)
            how = "copied from the cache"
        else:
            if files.is_offline():
                raise WeightsUnavailableError(
                    f"Cannot download {record.full_name}: {files.OFFLINE_ENV} is set. Unset it on a machine with network."
                )
            # Straight into the bundle, not via the cache: a bundle of every model is several GB.
            # weights_url honours the RESNETZOO_WEIGHTS_URL mirror exactly as fetch_weights does.
            url = files.weights_url(record)
            try:
                files.download_url(url, destination, record.sha256_prefix, progress=progress)
            except OSError as error:  # URLError, HTTPError, timeouts: nothing was kept for this file
                reason = error if hasattr(error, "code") else getattr(error, "reason", error)  # "HTTP Error 404: ..."
                raise WeightsUnavailableError(
                    f"Downloading {record.full_name} from {url} failed ({reason}). Check the "
                    f"network or {files.MIRROR_ENV}; files already in {to} are kept and listed in {MANIFEST_NAME}."
                ) from None
            how = "downloaded"
        # Memoized: a file just checked or downloaded (download_url records its digest) is not read again.
        manifest[record.filename] = files.sha256_file(destination)
        # After every file: an interrupted --all still leaves a bundle whose manifest lists what it holds.
        write_manifest(to / MANIFEST_NAME, manifest)
        print(f"ok  {record.full_name}  {destination}  ({how})")
    print(f"\nBundle {to}: {len(manifest)} files listed in {MANIFEST_NAME}. On the offline machine run:\n"
          f"  python -m resnetzoo.weights import {to}")
    return 0


def read_manifest(path: Path) -> dict[str, str]:
    """``{file name: sha256}`` from a ``SHA256SUMS`` file; a malformed line is an error naming the line."""
    manifest = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        name = name.lstrip("*")  # sha256sum's binary-mode marker
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest) or not name or "/" in name:
            raise WeightsFileError(path, f"line {number} is not '<sha256>  <file name>': {line[:100]!r}.")
        manifest[name] = digest
    return manifest


def write_manifest(path: Path, manifest: dict[str, str]) -> None:
    with atomic_write(path, "w") as handle:
        handle.writelines(f"{digest}  {name}\n" for name, digest in sorted(manifest.items()))


def cmd_import(paths: Sequence[Path]) -> int:
    """Verify each file (or each file of each bundle folder) and copy it into the cache; exit 1 if any was refused."""
    if not paths:
        raise CliError("Name files or bundle folders to import.")
    # Every folder is looked into before anything is copied: a mistyped bundle path must not look like success.
    candidates: list[tuple[Path, str | None]] = []
    for path in paths:
        found = _import_candidates(path)
        if not found:
            raise CliError(f"Nothing to import in {path}: expected *.pth files or a bundle folder with a "
                           f"{MANIFEST_NAME} manifest. Check the path.")
        candidates += found
    refused = 0
    for candidate, expected in candidates:
        try:
            message = import_file(candidate, expected)
        except WeightsFileError as error:
            refused += 1
            print(f"REFUSED  {error}", file=sys.stderr)
        else:
            print(f"ok  {message}")
    if refused:
        print(f"\n{refused} file(s) refused; nothing was copied for them.", file=sys.stderr)
    return EXIT_FAILED if refused else EXIT_OK


def _import_candidates(path: Path) -> list[tuple[Path, str | None]]:
    if path.is_dir():
        manifest = read_manifest(path / MANIFEST_NAME) if (path / MANIFEST_NAME).is_file() else {}
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in records.WEIGHTS_SUFFIXES)
        listed_missing = [(path / name, digest) for name, digest in manifest.items() if not (path / name).is_file()]
        return [(p, manifest.get(p.name)) for p in found] + listed_missing
    return [(path, None)]


def import_file(path: Path, expected_sha256: str | None = None) -> str:
    """Verify one file against the published records (and a manifest hash) and place it in the cache."""
    if not path.is_file():
        raise WeightsFileError(path, "no such file" + (" (it is listed in the bundle's manifest)." if expected_sha256 else "."))
    digest = files.sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise WeightsFileError(
            path, f"SHA-256 {digest} differs from the bundle manifest's {expected_sha256}: damaged in transit.",
            "Copy it again from the bundle's source.",
        )
    record = find_record_for_digest(digest, path.name)
    if record is None:
        named = _record_named(path.name)
        if named is not None:
            raise WeightsHashMismatchError(path, named.sha256_prefix, digest,
                                           f"It is named like {named.full_name} but is not that file; download it again.")
        raise WeightsFileError(
            path, f"its SHA-256 ({digest[:16]}...) matches no published torchvision ResNet checkpoint.",
            "Only published files enter the cache. To use your own weights: resnetzoo.create(name, pretrained='path').",
        )
    status = cache_status(record)
    if status.cached and status.verified:
        return f"{record.full_name}  already cached at {files.cached_path(record)}"
    destination = files.copy_into_cache(path, record)
    return f"{record.full_name}  {path} -> {destination}" + ("  (replaced a corrupt copy)" if status.cached else "")


def cmd_verify(delete_corrupt: bool = False) -> int:
    folder = files.cache_dir()
    present = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    by_name = {r.filename: r for r in all_records()}
    corrupt = checked = 0
    for path in tqdm(present, desc="verifying", unit="file", disable=None, leave=False):
        record = by_name.get(path.name)
        if record is None:
            print(f"skip     {path.name}  (not a torchvision ResNet checkpoint)")
            continue
        checked += 1
        if files.sha256_file(path).startswith(record.sha256_prefix):
            print(f"ok       {record.full_name}  {path.name}")
            continue
        corrupt += 1
        if delete_corrupt:
            path.unlink()
            print(f"DELETED  {record.full_name}  {path.name}: SHA-256 mismatch")
        else:
            print(f"CORRUPT  {record.full_name}  {path.name}: SHA-256 mismatch. Delete it, or run again with "
                  f"--delete-corrupt, then download or import it again.")
    # The blank line separates the summary from the per-file lines; with none above it, it would lead the output.
    print(("\n" if present else "") + f"{checked} checkpoint(s) checked in {folder}, {corrupt} corrupt"
          + (" (deleted)." if delete_corrupt and corrupt else "."))
    return 1 if corrupt and not delete_corrupt else 0


def cmd_convert(spec: str, out: Path, weights: Path | None = None, progress: bool = True) -> int:
    from ..factory import create
    from ..hub import save_pretrained

    name, _, tag = spec.partition(":")
    if weights is not None and tag:
        raise CliError("Give either NAME:TAG or --weights FILE, not both.")
    pretrained: object = weights if weights is not None else (tag or True)
    try:
        model = create(name, pretrained=pretrained, progress=progress)
    except UnknownWeightsError as error:
        raise _unknown_weights(error, allow_all=False) from None
    save_pretrained(model, out)
    print(f"ok  {model.config.base_weights} -> {out}  (load with resnetzoo.create({str(out)!r}))")
    return 0


# ------------------------------------------------------------------------------------ entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m resnetzoo.weights",
        description="Manage pretrained ResNet weights: list, download (optionally into a bundle for an offline "
                    "machine), import, verify, convert.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="air-gapped machine:\n"
               "  (with network)  python -m resnetzoo.weights download resnet50 resnet18 --to /media/usb/weights\n"
               "  (offline)       python -m resnetzoo.weights import /media/usb/weights\n\n"
               f"{_EXIT_STATUS}\n\nsee docs/offline.md",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("list", help="every model and weights tag, with accuracy, size and cache state; exit 1 "
                                         "if a cached file is corrupt", epilog=_EXIT_STATUS,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter on model names, e.g. 'resnext*'")
    p.add_argument("--no-verify", action="store_true", help="do not re-hash cached files (faster)")

    p = commands.add_parser("download", help="fetch weights into the cache, or into a bundle folder with --to")
    p.add_argument("specs", nargs="*", metavar="NAME[:TAG]", help="e.g. resnet50, resnet50:IMAGENET1K_V1, resnet50:all")
    p.add_argument("--all", action="store_true", help="every model and every tag")
    p.add_argument("--to", type=Path, metavar="DIR", help=f"bundle folder to fill (with a {MANIFEST_NAME} manifest)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = commands.add_parser("import", help="verify files or bundle folders and place them in the cache")
    p.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_BUNDLE")

    p = commands.add_parser("verify", help="re-hash every cached checkpoint and report; exit 1 if one is corrupt",
                            epilog=_EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delete-corrupt", action="store_true", help="delete files whose hash does not match")

    p = commands.add_parser("convert", help="save a torchvision checkpoint as a resnetzoo folder (safetensors)")
    p.add_argument("spec", metavar="NAME[:TAG]")
    p.add_argument("--out", type=Path, required=True, metavar="FOLDER")
    p.add_argument("--weights", type=Path, metavar="FILE", help="a local torchvision-format state dict instead of a tag")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return cmd_list(args.pattern, verify=not args.no_verify)
        if args.command == "download":
            return cmd_download(args.specs, args.all, args.to, progress=not args.no_progress)
        if args.command == "import":
            return cmd_import(args.paths)
        if args.command == "verify":
            return cmd_verify(args.delete_corrupt)
        return cmd_convert(args.spec, args.out, args.weights, progress=not args.no_progress)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except UnknownModelError as error:  # its own "See resnetzoo.list_models()" speaks to Python users
        hint = f" Did you mean: {', '.join(error.suggestions)}?" if error.suggestions else ""
        print(f"error: Unknown model {error.name!r}.{hint} See python -m resnetzoo.weights list for every name.",
              file=sys.stderr)
        return EXIT_USAGE
    except UnknownWeightsError as error:  # a tag that reached the library by another path than select_records
        print(f"error: {_unknown_weights(error)}", file=sys.stderr)
        return EXIT_USAGE
    except (ResnetzooError, OSError) as error:  # OSError: a bundle path that is a file, a full disk, ...
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        # Every write goes through a temporary file: an interrupted download or copy leaves nothing behind.
        print("interrupted; nothing partial was kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
