"""The main job, end to end: ``make demo`` (or ``python -m resnetzoo.demo``).

1. Data: scikit-learn's handwritten digits (1,797 images, 10 classes, shipped inside scikit-learn)
   written out as an image folder, one sub-folder per class: the layout of a user's own data.
   Or ``--data DIR``: your own folder.
2. Split, fine-tune (pretrained weights when they are cached, from scratch otherwise: it says which),
   evaluate on the test split.
3. Figures: a grid of test images with predicted and true labels; the training curves.
4. Export to ONNX and TorchScript through the verification gate; the torch-free ONNX predictor
   (``export/predict_onnx.py``) classifies a few test images.
5. A quick throughput benchmark against torchvision on this machine.
6. A summary of where every file went.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["DemoSettings", "write_digits_folder", "run_demo", "main"]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The digits are 8x8; 32 px keeps every ResNet stage's feature map at least 1x1.
DIGITS_IMAGE_SIZE = 32
DEMO_ACCURACY_GOAL = 0.95


def write_digits_folder(root: str | os.PathLike, image_size: int = DIGITS_IMAGE_SIZE, limit_per_class: int | None = None) -> Path:
    """Write scikit-learn's digits as ``root/<digit>/<index>.png`` (gray, upscaled to ``image_size``).

    Existing files are kept, so a second run reuses the folder (and its split manifest).
    """
    from sklearn.datasets import load_digits  # reads a file inside the scikit-learn package: no network

    digits = load_digits()
    root = Path(root)
    written: dict[int, int] = {}
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        if limit_per_class is not None and written.get(int(label), 0) >= limit_per_class:
            continue
        written[int(label)] = written.get(int(label), 0) + 1
        path = root / str(label) / f"{index:04d}.png"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        # Pixel values are 0..16; scale to 0..255 and upsample smoothly, as a scanned digit would look.
        image = Image.fromarray((pixels * (255 / 16)).round().astype(np.uint8), mode="L")
        image.resize((image_size, image_size), Image.Resampling.BICUBIC).save(path)
    return root


@dataclass
class DemoSettings:
    out_dir: Path | None = None  # None: demo_output/digits, or demo_output/<your folder's name>
    data: Path | None = None  # None: the embedded digits
    model: str = "resnet18"
    epochs: int | None = None  # None: 8 on the digits, 20 on your own data
    batch_size: int = 64
    lr: float = 2e-3
    image_size: int | None = None  # None: 32 on the digits; the weights' crop size (224) on your own data
    device: str = "auto"
    num_workers: int = 0
    pretrained: str | bool | None = None  # None: the default weights when cached, else from scratch
    limit_per_class: int | None = None  # a smaller digits folder (used by the tests)
    export: bool = True
    benchmark: bool = True
    accuracy_goal: float | None = DEMO_ACCURACY_GOAL  # checked only on the embedded digits


def _choose_weights(settings: DemoSettings) -> tuple[Any, str]:
    """Pretrained weights only when they need no download: the demo must run offline."""
    from .weights import cached_path, default_record, resolve_pretrained

    if settings.pretrained is False:
        return False, "from scratch (--no-pretrained)"
    if settings.pretrained not in (None, True):
        record = resolve_pretrained(settings.model, settings.pretrained)
        return settings.pretrained, f"from {getattr(record, 'full_name', record)}"
    record = default_record(settings.model)
    if cached_path(record).is_file():
        return True, f"from pretrained {record.full_name} (cached at {cached_path(record)})"
    return False, (
        f"from scratch: {record.full_name} is not cached at {cached_path(record)} "
        f"(python -m resnetzoo.weights download {settings.model} fetches it on a machine with network)"
    )


def _step(number: int, title: str) -> None:
    print(f"\n[{number}/6] {title}", flush=True)


def run_demo(settings: DemoSettings) -> dict[str, Any]:
    """Run the whole pipeline; returns the summary (also written to ``out_dir/summary.json``)."""
    from . import create
    from .data import load_splits
    from .predict import draw_prediction_grid, predict
    from .train import CURVES_PNG, Trainer
    from .weights.records import preprocessing_record

    started = time.monotonic()
    on_digits = settings.data is None
    out_dir = Path(settings.out_dir) if settings.out_dir else default_out_dir(settings.data)
    data_dir = out_dir / "data" if on_digits else Path(settings.data).resolve()
    _clear_previous_demo(out_dir, data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"data": str(data_dir), "files": {}}

    _step(1, "Data")
    if on_digits:
        write_digits_folder(data_dir, limit_per_class=settings.limit_per_class)
        print(f"scikit-learn's handwritten digits written as an image folder: {data_dir}")
    else:
        print(f"Your image folder: {data_dir}")
    image_size = settings.image_size or (DIGITS_IMAGE_SIZE if on_digits else None)
    epochs = settings.epochs or (8 if on_digits else 20)

    _step(2, f"Fine-tune {settings.model}")
    pretrained, how = _choose_weights(settings)
    print(f"Training {settings.model} {how}.")
    # Small digits keep their own eval transform (32 px); real photos use the weights' (e.g. resize 232, crop 224).
    eval_weights = preprocessing_record(settings.model, pretrained) if pretrained and not on_digits else None
    splits = load_splits(data_dir, image_size=image_size, weights=eval_weights, manifest=out_dir / "splits.json",
                         # Digits must not be mirrored (a mirrored 2 is no digit) nor cropped to a sliver.
                         crop_scale=(0.7, 1.0) if on_digits else (0.08, 1.0), hflip=not on_digits)
    print("Split: " + ", ".join(f"{name} {len(dataset)}" for name, dataset in splits.items())
          + f" images in {len(splits['train'].classes)} classes (manifest: {out_dir / 'splits.json'})")
    model = create(settings.model, pretrained=pretrained, num_classes=len(splits["train"].classes))
    run_dir = out_dir / "run"
    trainer = Trainer(splits, model, device=settings.device, epochs=epochs, batch_size=settings.batch_size,
                      lr=settings.lr, num_workers=settings.num_workers, out_dir=run_dir, overwrite=True)
    trainer.train()
    best = create(run_dir)
    test_metrics = trainer.test_metrics  # the best epoch's weights on the test split, measured by train()
    summary["test"] = test_metrics
    summary["weights"] = how
    print(f"Test split, best epoch: acc@1 {test_metrics['acc1']:.4f}  acc@5 {test_metrics['acc5']:.4f}  "
          f"({test_metrics['num_samples']} images)")
    summary["files"]["run folder (model.safetensors, config.json, checkpoint, history)"] = str(run_dir)

    _step(3, "Figures")
    test_samples = splits["test"].samples[:: max(1, len(splits["test"]) // 16)][:16]
    paths = [path for path, _ in test_samples]
    truths = [splits["test"].classes[label] for _, label in test_samples]
    predictions = predict(best, paths, topk=1, true_labels=truths)
    grid = draw_prediction_grid(paths, predictions, out_dir / "predictions.png")
    print(f"Prediction grid: {grid}")
    summary["files"]["prediction grid"] = str(grid)
    curves = run_dir / CURVES_PNG
    if curves.is_file():  # needs matplotlib (the plots extra)
        print(f"Training curves: {curves}")
        summary["files"]["training curves"] = str(curves)

    _step(4, "Export to ONNX and TorchScript (verified)")
    if settings.export:
        summary["export"] = _export_and_predict(run_dir, out_dir / "export", paths[:4], truths[:4], summary)
    else:
        print("Skipped (--no-export).")
    _step(5, "Quick benchmark against torchvision")
    if settings.benchmark:
        summary["benchmark"] = _benchmark(settings.model, out_dir / "benchmark", summary)
    else:
        print("Skipped (--no-benchmark).")

    _step(6, "Summary")
    summary["seconds"] = round(time.monotonic() - started, 1)
    goal_met = None
    if on_digits and settings.accuracy_goal is not None:
        goal_met = test_metrics["acc1"] >= settings.accuracy_goal
        summary["accuracy_goal"] = {"acc1": test_metrics["acc1"], "goal": settings.accuracy_goal, "met": goal_met}
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    summary["files"]["this summary"] = str(summary_path)
    _print_summary(summary, goal_met)
    return summary


def default_out_dir(data: Path | None) -> Path:
    """One folder per dataset, so that a demo on your photos never mixes with the digits demo."""
    return Path("demo_output") / ("digits" if data is None else Path(data).resolve().name)


# What one demo run writes into its folder; a new run replaces all of it (the digits images and, for the
# same data, the split manifest are kept so that the split stays the same).
_DEMO_OUTPUTS = ("run", "export", "benchmark", "predictions.png", "summary.json")


def _clear_previous_demo(out_dir: Path, data_dir: Path) -> None:
    previous = out_dir / "summary.json"
    if not previous.is_file():
        return
    try:
        previous_data = json.loads(previous.read_text()).get("data")
    except (OSError, ValueError):
        previous_data = None
    print(f"Replacing the previous demo run in {out_dir}.")
    outputs = list(_DEMO_OUTPUTS) + ([] if previous_data == str(data_dir) else ["splits.json"])
    for name in outputs:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _export_and_predict(run_dir: Path, export_dir: Path, images: Sequence[str], truths: Sequence[str],
                        summary: dict[str, Any]) -> dict[str, Any]:
    from .export import export_model

    manifest = export_model(run_dir, export_dir, formats=["onnx", "torchscript"], progress=False)
    summary["files"]["exported models + manifest.json"] = str(export_dir)
    for entry in manifest["files"]:
        failed = [check["check"] for check in entry["checks"] if not check["passed"]]
        print(f"  {entry['name']}: {len(entry['checks'])} checks, {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}")
    predictor = REPO_ROOT / "export" / "predict_onnx.py"
    onnx_file = export_dir / "model.onnx"
    if not predictor.is_file() or not onnx_file.is_file():
        print("  (the torch-free predictor export/predict_onnx.py is not beside this install; skipped)")
        return {"manifest": str(export_dir / "manifest.json")}
    result = subprocess.run([sys.executable, str(predictor), str(onnx_file), *map(str, images), "--top-k", "1"],
                            capture_output=True, text=True, timeout=300, check=False)
    print("  Torch-free ONNX predictor (export/predict_onnx.py, onnxruntime + numpy + Pillow only):")
    for line in result.stdout.strip().splitlines():
        print(f"    {line}")
    print(f"    true labels: {', '.join(truths)}")
    if result.returncode != 0:
        print(f"    predictor failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return {"manifest": str(export_dir / "manifest.json"), "predictor_exit_code": result.returncode}


def _benchmark(model_name: str, bench_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    script = REPO_ROOT / "benchmarks" / "throughput.py"
    if not script.is_file():
        print("  (benchmarks/throughput.py is not beside this install; skipped)")
        return {}
    command = [sys.executable, str(script), "--quick", "--models", model_name, "--device", "cpu", "--out", str(bench_dir)]
    print("  " + " ".join(command[1:]))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    table = bench_dir / "results.md"
    if table.is_file():
        print(table.read_text())
    else:
        print(result.stdout[-3000:])
    if result.returncode != 0:
        print(f"  benchmark exited with {result.returncode}: {result.stderr.strip()[-800:]}")
    summary["files"]["benchmark (results.json, results.md, throughput.png)"] = str(bench_dir)
    return {"exit_code": result.returncode, "results": str(bench_dir / "results.json")}


def _print_summary(summary: dict[str, Any], goal_met: bool | None) -> None:
    test = summary["test"]
    print(f"Model trained {summary['weights']}; test acc@1 {test['acc1']:.4f}.")
    if goal_met is not None:
        goal = summary["accuracy_goal"]["goal"]
        print(f"Accuracy goal (>= {goal:.2f} on the digits): {'met' if goal_met else 'NOT met'}.")
    print(f"Finished in {summary['seconds']:.0f} s. Files:")
    width = max(len(k) for k in summary["files"])
    for what, where in summary["files"].items():
        print(f"  {what:<{width}}  {where}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m resnetzoo.demo",
        description="The main job end to end: (1) data, (2) split and fine-tune, (3) figures, (4) export to ONNX and "
                    "TorchScript with verification, (5) a quick benchmark against torchvision, (6) a summary. On the "
                    "embedded digits by default, or on your own image folder (--data).",
    )
    parser.add_argument("--data", type=Path, help="your image folder, one sub-folder per class (default: the embedded digits)")
    parser.add_argument("--model", default="resnet18", help="registered model name (default: resnet18)")
    parser.add_argument("--epochs", type=int, help="default: 8 on the digits, 20 on your own data")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 0.002)")
    parser.add_argument("--image-size", type=int, help="default: 32 on the digits, the weights' crop size (224) otherwise")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--num-workers", type=int, default=0, help="data loading processes (default: 0)")
    parser.add_argument("--pretrained", nargs="?", const=True, default=None, metavar="TAG",
                        help="start from these weights; without TAG torchvision's default (default: the default "
                             "weights when they are cached, else from scratch)")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="train from scratch")
    parser.add_argument("--out", type=Path, help="output folder, replaced on each run (default: demo_output/digits or "
                                                 "demo_output/<your folder's name>)")
    parser.add_argument("--no-export", dest="export", action="store_false", help="skip step 4, the export")
    parser.add_argument("--no-benchmark", dest="benchmark", action="store_false", help="skip step 5, the benchmark")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # resnetzoo's own progress lines; other libraries (the ONNX exporter is chatty) only warn.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("resnetzoo").setLevel(logging.INFO)
    logging.getLogger("resnetzoo.hub").setLevel(logging.WARNING)  # "Saved ..." after every better epoch
    from .errors import ResnetzooError

    settings = DemoSettings(
        out_dir=args.out, data=args.data, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, image_size=args.image_size, device=args.device, num_workers=args.num_workers,
        pretrained=args.pretrained, export=args.export, benchmark=args.benchmark,
    )
    if args.data is not None and not args.data.is_dir():
        print(f"error: --data {args.data} is not a folder (expected one sub-folder of images per class)", file=sys.stderr)
        return 2
    try:
        summary = run_demo(settings)
    except ResnetzooError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    goal = summary.get("accuracy_goal")
    return 1 if goal is not None and not goal["met"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
