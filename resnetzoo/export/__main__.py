"""``python -m resnetzoo.export SOURCE --out DIR``: export and verify, from the command line.

Exit status: 0 when every file was written and (unless --no-verify) proven; 1 when the verification
gate refused the export; 2 for bad arguments or inputs. Errors are one line, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tqdm.contrib.logging import logging_redirect_tqdm

from . import DEFAULT_FORMATS, FORMATS, MANIFEST_NAME, CheckResult, ExportVerificationError, export_model, format_table
from .onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from .verify import DEFAULT_NUM_INPUTS

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE = 0, 1, 2

_EPILOG = f"""
formats:
  onnx         model.onnx: input "images" [batch, C, H, W], output "logits" [batch, classes], symbolic batch axis,
               labels and preprocessing in metadata_props. Runs in ONNX Runtime (CPU, CUDA, TensorRT), Triton.
  torchscript  model.torchscript.pt: scripted module for libtorch (C++); metadata in the extra file resnetzoo.json.
               Deprecated upstream: prefer "exported" for new deployments.
  exported     model.pt2: the torch.export program (alias: pt2); torch.export.load(path).module().
  With --fp16 the files are model.fp16.* and take and return float16.

verification (skipped only with --no-verify): onnx.checker full check; every file reloaded and run at batch 1
and batch {DEFAULT_NUM_INPUTS} on a fixed input set against the PyTorch model in eval mode: fp32 max|diff| <= 1e-4;
fp16 top-1 agreement >= 99% and no NaN/Inf. Files are written under temporary names and moved into DIR only when
every check passed. {MANIFEST_NAME} lists each file's SHA-256, size, versions and checks.

examples:
  python -m resnetzoo.export runs/flowers --out exported/flowers
  python -m resnetzoo.export resnet50 --pretrained --out exported/resnet50 --formats onnx exported
  python -m resnetzoo.export resnet18 --pretrained IMAGENET1K_V1 --num-classes 10 --image-size 160 --fp16 --out out/

exit status: 0 exported and verified; 1 the verification gate refused the export; 2 bad arguments or inputs.
"""


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points to --help (not the whole usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m resnetzoo.export",
        description="Export a ResNet to ONNX, TorchScript and torch.export (.pt2), proving every file equal to PyTorch.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="SOURCE",
                        help="a registered model name (e.g. resnet50; see resnetzoo.list_models()), a folder saved "
                             "by resnetzoo (save_pretrained or a training run), or hf-hub:ORG/NAME")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS), metavar="FORMAT",
                        help=f"any of {', '.join(FORMATS)} (default: all three)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="N",
                        help="classes of the head (default: as the weights or folder say); a new head is random")
    parser.add_argument("--pretrained", nargs="?", const=True, default=False, metavar="TAG",
                        help="for a model name: load torchvision's weights (default tag, or TAG such as IMAGENET1K_V1, "
                             "or a path to a state dict file)")
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="input height and width (default: the model's crop size, 224 for ImageNet weights)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET}; below {DEFAULT_OPSET} "
                             "through the legacy exporter)")
    parser.add_argument("--fp16", action="store_true", help="export half-precision files (float16 input and output)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the verification gate (files are then written unproven; the manifest says so)")
    parser.add_argument("--verify-inputs", type=int, default=DEFAULT_NUM_INPUTS, metavar="N",
                        help=f"size of the fixed verification input set (default {DEFAULT_NUM_INPUTS})")
    parser.add_argument("--verify-images", nargs="+", default=None, metavar="PATH",
                        help="image files or folders to verify with instead of the synthetic set (the first N of "
                             "--verify-inputs, sorted); real photos make the fp16 check speak about your data")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import ResnetzooError

    # Our own loggers only: the ONNX exporter's libraries log every optimisation pass at INFO.
    package_logger = logging.getLogger("resnetzoo")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        # Log lines go through tqdm.write, so that they do not break the progress bar.
        with logging_redirect_tqdm(loggers=[package_logger]):
            manifest = export_model(
                args.source, args.out, args.formats, pretrained=args.pretrained, num_classes=args.num_classes,
                image_size=args.image_size, opset=args.opset, fp16=args.fp16, verify=not args.no_verify,
                num_verify_inputs=args.verify_inputs, verify_images=args.verify_images, progress=not args.quiet,
            )
    except ExportVerificationError as error:
        print(format_table(error.results), file=sys.stderr)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_GATE_FAILED
    except (ResnetzooError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        package_logger.removeHandler(handler)

    if not args.quiet:
        checks = [CheckResult(**check) for entry in manifest["files"] for check in entry["checks"]]
        if checks:
            print(format_table(checks))
        else:
            print("Verification skipped (--no-verify): these files are unproven.")
        print()
        for entry in manifest["files"]:
            print(f"{entry['name']:<28} {entry['size_bytes'] / 1e6:8.1f} MB  sha256 {entry['sha256'][:16]}…")
        print(f"Wrote {len(manifest['files'])} file(s) and {MANIFEST_NAME} to {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
