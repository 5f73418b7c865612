"""Training throughput: resnetzoo's Trainer against a bare PyTorch loop on the same model and data.

Both train the same architecture from the same initial weights on the same image-folder dataset
(same transforms, same DataLoader settings, same AMP and memory format), for two epochs; the second
epoch is timed (the first warms up allocators, kernels and worker processes). The goal is a ratio
Trainer / bare >= 0.95: the Trainer's extras (progress bar, metrics, scheduler, broken-image handling,
per-sample seeding) must not cost throughput.

    python benchmarks/train_throughput.py --model resnet18 --image-size 64 --batch-size 64 --images 1024

Writes benchmarks/results/train_throughput.json and .md (use --out to change).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import resnetzoo
from resnetzoo.config import ModelConfig, build_model
from resnetzoo.data import load_splits
from resnetzoo.train import Trainer


def make_dataset(root: Path, num_images: int, num_classes: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(num_images):
        label = index % num_classes
        folder = root / f"class_{label:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{index:05d}.png")


def build(name: str, num_classes: int) -> nn.Module:
    if name == "tiny":
        return build_model(ModelConfig(architecture=None, num_classes=num_classes, num_layers=[1, 1, 1, 1]))
    return resnetzoo.create(name, num_classes=num_classes)


class TimedTrainer(Trainer):
    """Also records the CPU time of each training epoch: on a machine shared with other jobs, wall-clock
    throughput swings with their load, while CPU seconds per image measure the work each loop does."""

    def _train_one_epoch(self, epoch: int, frozen: bool) -> dict[str, float]:
        start = time.process_time()
        metrics = super()._train_one_epoch(epoch, frozen)
        metrics["cpu_s"] = time.process_time() - start
        metrics["images"] = metrics["images_per_s"] * metrics["time_s"]
        return metrics


def bare_loop(model: nn.Module, dataset, trainer: Trainer, epochs: int) -> tuple[float, float]:
    """The loop a careful user would write by hand, with the Trainer's resolved settings.

    Returns (images/s, images per CPU second) of the last epoch."""
    device = trainer.device
    options = trainer._loader_options()
    options.pop("collate_fn")
    loader = torch.utils.data.DataLoader(dataset, batch_size=trainer.recipe.batch_size, shuffle=True, drop_last=True,
                                         **options)
    optimizer = torch.optim.AdamW(model.parameters(), lr=trainer.recipe.lr, weight_decay=trainer.recipe.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=trainer.recipe.label_smoothing)
    memory_format = torch.channels_last if trainer.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format).train()
    scaler = torch.amp.GradScaler(device.type, enabled=trainer.amp_dtype == torch.float16)
    throughput = per_cpu_second = 0.0
    for _ in range(epochs):
        seen = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        for images, labels in loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=trainer.amp_dtype or torch.bfloat16, enabled=trainer.amp_dtype is not None):
                loss = criterion(model(images), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            seen += labels.numel()
        if device.type == "cuda":
            torch.cuda.synchronize()
        throughput = seen / (time.perf_counter() - start)
        per_cpu_second = seen / (time.process_time() - cpu_start)
    return throughput, per_cpu_second


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="registered name, or 'tiny' (ResNet with one block per stage)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1024, help="training images (random PNGs)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's); 1 is faster on a CPU shared with other jobs")
    parser.add_argument("--repeats", type=int, default=2, help="alternate Trainer and bare runs this many times; best of each")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        make_dataset(Path(folder), args.images, args.classes, args.image_size + args.image_size // 7)
        dataset = load_splits(folder, image_size=args.image_size, val_fraction=0, test_fraction=0,
                              manifest=Path(folder) / "splits.json")["train"]
        torch.manual_seed(0)
        initial = build(args.model, args.classes)
        trainer_speeds, bare_speeds, trainer_cpu, bare_cpu = [], [], [], []
        for _ in range(args.repeats):
            trainer = TimedTrainer({"train": dataset}, copy.deepcopy(initial), device=args.device, epochs=2,
                                   batch_size=args.batch_size, lr=1e-3, num_workers=args.num_workers, progress=False)
            last = trainer.train()[-1]
            trainer_speeds.append(last["train_images_per_s"])
            trainer_cpu.append(last["train_images"] / last["train_cpu_s"])
            speed, per_cpu = bare_loop(copy.deepcopy(initial), dataset, trainer, epochs=2)
            bare_speeds.append(speed)
            bare_cpu.append(per_cpu)
        device = trainer.device

    result = {
        "benchmark": "train_throughput",
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "images": args.images,
        "num_workers": args.num_workers,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "off",
        "channels_last": trainer.channels_last,
        "torch": torch.__version__,
        "trainer_images_per_s": max(trainer_speeds),
        "bare_images_per_s": max(bare_speeds),
        "all_trainer_images_per_s": trainer_speeds,
        "all_bare_images_per_s": bare_speeds,
        # Only meaningful with --num-workers 0 (worker processes' CPU time is not counted).
        "trainer_images_per_cpu_s": max(trainer_cpu),
        "bare_images_per_cpu_s": max(bare_cpu),
    }
    result["ratio"] = result["trainer_images_per_s"] / result["bare_images_per_s"]
    result["cpu_ratio"] = result["trainer_images_per_cpu_s"] / result["bare_images_per_cpu_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = (
        f"| model | device | image | batch | workers | AMP | Trainer img/s | bare loop img/s | ratio "
        f"| Trainer img/CPU-s | bare img/CPU-s | CPU ratio |\n"
        f"|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {args.model} | {result['device_name']} ({device.type}, {result['cpu_threads']} threads) | {args.image_size} | "
        f"{args.batch_size} | {args.num_workers} | {result['amp']} | {result['trainer_images_per_s']:.1f} | "
        f"{result['bare_images_per_s']:.1f} | {result['ratio']:.3f} | {result['trainer_images_per_cpu_s']:.1f} | "
        f"{result['bare_images_per_cpu_s']:.1f} | {result['cpu_ratio']:.3f} |\n"
    )
    command = "python benchmarks/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result["command"] = command
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("# Training throughput (epoch 2 of 2, best of repeats)\n\n" + table
                                           + f"\nCommand: `{command}`\n")
    print(table)
    print(f"Trainer / bare loop: {result['ratio']:.3f} wall clock, {result['cpu_ratio']:.3f} per CPU second (goal >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
