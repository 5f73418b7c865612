"""Where a forward pass spends its time: per layer kind, against the kernel ceiling measured in the same run.

    python benchmarks/layer_profile.py --model resnet50 --batch-size 8 --image-size 224 --device cpu --threads 1

``throughput.py`` says how fast each backend is; this says why. It times every convolution, BatchNorm, ReLU,
pooling and linear layer with forward hooks (synchronising on CUDA) in three set-ups holding the same weights:
torchvision eager (NCHW, the benchmark's baseline), the same model in channels_last, and resnetzoo's
``optimize_for_inference`` (BN folded into the convolutions, channels_last). Each layer kind gets its share of
the time and its GFLOP/s as a percentage of the kernel ceiling (``throughput.measure_ceiling``): a kind far below
the ceiling is where a faster backend can win; one near it can only get faster by doing less arithmetic.
"other" is the forward time outside the hooked layers (residual additions, flatten, Python).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from resnetzoo.optimize import optimize_for_inference
from resnetzoo.profile import count_macs, module_macs

# Run as a script, benchmarks/ is on sys.path; the tests load this file by path with the same effect.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import PRECISIONS, make_models, measure_ceiling, synchronize  # noqa: E402

TIMED_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear)


@dataclass
class LayerKind:
    setup: str
    kind: str  # e.g. "conv 3x3 stride 1", "BatchNorm2d", "other"
    calls: int
    ms: float  # per forward pass, median over the repeats
    share: float  # of the forward pass
    gflops_per_s: float | None  # convolutions and linear layers only
    percent_of_ceiling: float | None


def kind_of(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        kernel, stride = module.kernel_size, module.stride
        return f"conv {kernel[0]}x{kernel[1]} stride {stride[0]}"
    return type(module).__name__


def profile_layers(model: nn.Module, images: torch.Tensor, repeats: int, setup: str,
                   ceiling_gflops: float) -> tuple[list[LayerKind], float]:
    """Per layer kind of ``model`` on ``images``, and the unhooked forward time in ms (both medians)."""
    device = images.device
    starts: dict[nn.Module, float] = {}
    times: dict[str, list[float]] = defaultdict(list)  # kind -> seconds, one entry per call
    macs: dict[str, int] = defaultdict(int)
    calls: dict[str, int] = defaultdict(int)

    def before(module: nn.Module, _inputs: object) -> None:
        synchronize(device)
        starts[module] = time.perf_counter()

    def after(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        synchronize(device)
        kind = kind_of(module)
        times[kind].append(time.perf_counter() - starts[module])
        macs[kind] += module_macs(module, output)
        calls[kind] += 1

    with torch.inference_mode():
        model(images)  # warm-up: oneDNN/cuDNN algorithm choice and weight reorders
        synchronize(device)
        plain = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(images)
            synchronize(device)
            plain.append(time.perf_counter() - start)
        handles = [handle for module in model.modules() if isinstance(module, TIMED_LAYERS)
                   for handle in (module.register_forward_pre_hook(before), module.register_forward_hook(after))]
        try:
            per_pass: dict[str, list[float]] = defaultdict(list)
            for _ in range(repeats):
                times.clear()
                macs.clear()
                calls.clear()
                model(images)
                for kind, seconds in times.items():
                    per_pass[kind].append(sum(seconds))
        finally:
            for handle in handles:
                handle.remove()
    total_s = statistics.median(plain)
    rows = []
    for kind, seconds in sorted(per_pass.items(), key=lambda item: -statistics.median(item[1])):
        median_s = statistics.median(seconds)
        gflops = 2 * macs[kind] / median_s / 1e9 if macs[kind] else None
        rows.append(LayerKind(setup, kind, calls[kind], 1e3 * median_s, median_s / total_s, gflops,
                              None if gflops is None else 100 * gflops / ceiling_gflops))
    # Hooks add a little time of their own, so "other" is floored at zero rather than allowed to go negative.
    other_s = max(0.0, total_s - sum(statistics.median(s) for s in per_pass.values()))
    rows.append(LayerKind(setup, "other", 0, 1e3 * other_s, other_s / total_s, None, None))
    return rows, 1e3 * total_s


def markdown(rows: list[LayerKind], totals: dict[str, float], macs_per_pass: int, ceiling: dict) -> str:
    lines = [f"Kernel ceiling: {ceiling['gflops_per_s']:,.0f} GFLOP/s ({ceiling['kernel']}).", ""]
    for setup, total_ms in totals.items():
        overall = 2 * macs_per_pass / (total_ms / 1e3) / 1e9
        lines.append(f"- {setup}: {total_ms:,.1f} ms per forward pass, {overall:,.0f} GFLOP/s overall "
                     f"({100 * overall / ceiling['gflops_per_s']:.0f}% of the ceiling)")
    lines += ["", "| setup | layer kind | calls | ms | share | GFLOP/s | % of ceiling |", "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        gflops = "-" if row.gflops_per_s is None else f"{row.gflops_per_s:,.0f}"
        percent = "-" if row.percent_of_ceiling is None else f"{row.percent_of_ceiling:.0f}"
        lines.append(f"| {row.setup} | {row.kind} | {row.calls or '-'} | {row.ms:,.1f} | {100 * row.share:.0f}% "
                     f"| {gflops} | {percent} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/layer_profile.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", help="a registered model name (default: resnet50)")
    parser.add_argument("--batch-size", type=int, default=8, help="default: 8")
    parser.add_argument("--image-size", type=int, default=224, help="default: 224")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="weights and inputs in this dtype for every set-up (default: fp32)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5, help="forward passes per set-up; medians (default: 5)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.image_size < 32 or args.repeats < 1:
        parser.error("--batch-size and --repeats must be >= 1 and --image-size >= 32")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = PRECISIONS[args.precision]
    ceiling = measure_ceiling(device, dtype)
    reference, ours = make_models(args.model, None)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size,
                         generator=torch.Generator().manual_seed(0)).to(device, dtype)
    setups = {
        "torchvision eager, NCHW": (reference.to(device, dtype), images),
        "torchvision eager, channels_last": (
            optimize_for_inference(reference, fold_bn=False, dtype=dtype).to(device),
            images.contiguous(memory_format=torch.channels_last)),
        "resnetzoo optimize_for_inference (BN folded, channels_last)": (
            optimize_for_inference(ours, dtype=dtype).to(device),
            images.contiguous(memory_format=torch.channels_last)),
    }
    macs_per_pass = count_macs(ours, args.image_size) * args.batch_size
    rows: list[LayerKind] = []
    totals: dict[str, float] = {}
    for setup, (model, inputs) in setups.items():
        setup_rows, totals[setup] = profile_layers(model, inputs, args.repeats, setup, ceiling["gflops_per_s"])
        rows += setup_rows
    print(f"# {args.model}, batch {args.batch_size}, {args.image_size} px, {args.precision}, {device.type}, "
          f"{torch.get_num_threads()} thread(s)\n")
    print(markdown(rows, totals, macs_per_pass, ceiling))
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "ceiling": ceiling,
                                         "totals_ms": totals, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
