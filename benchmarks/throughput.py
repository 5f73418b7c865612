"""Inference throughput of resnetzoo against torchvision: same machine, same weights, same run.

    python benchmarks/throughput.py --models resnet18 resnet50 --batch-sizes 1 8 256 --device cpu \\
        --precision fp32 bf16 --image-size 224 --out benchmarks/results/my-run
    python benchmarks/throughput.py --quick --out /tmp/bench        # ~1 minute on 2 CPU cores

Backends, all holding torchvision's weights (random init from a fixed seed, or ``--pretrained``):
torchvision eager (the baseline), resnetzoo eager, resnetzoo ``optimize_for_inference`` (BN folded +
channels_last + the precision's dtype), the same under ``torch.compile``, TorchScript (traced and frozen),
and ONNX Runtime (CPU provider; CUDA and TensorRT providers on ``--device cuda``). Before any timing,
each backend's logits are compared with torchvision's fp32 eager logits; a backend beyond its dtype's
tolerance (``resnetzoo.optimize.LOGIT_TOLERANCE``) is reported as failed and the script exits with 1.

Timing: warm-up, then ``--rounds`` rounds that visit every backend in a new random order (so a burst of
load from other processes hits all backends alike), each round running enough iterations to fill
``--min-time / --rounds`` seconds. CUDA backends are timed with CUDA events; ONNX Runtime and CPU
backends with ``time.perf_counter`` (an ONNX Runtime run returns only when its GPU work is done).
Writes ``results.json``, ``results.md`` and ``throughput.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import json
import logging
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from tqdm.auto import tqdm

import resnetzoo
from resnetzoo.export import export_model, file_name
from resnetzoo.export.torchscript import quiet_jit
from resnetzoo.optimize import LOGIT_TOLERANCE, logit_error, optimize_for_inference
from resnetzoo.profile import count_macs

logger = logging.getLogger("benchmarks.throughput")

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BASELINE = "torchvision"
TORCH_BACKENDS = ["torchvision", "resnetzoo", "resnetzoo-optimized", "resnetzoo-compiled", "torchscript"]
ORT_BACKENDS = {"onnxruntime-cpu": "CPUExecutionProvider", "onnxruntime-cuda": "CUDAExecutionProvider",
                "onnxruntime-tensorrt": "TensorrtExecutionProvider"}
ALL_BACKENDS = TORCH_BACKENDS + list(ORT_BACKENDS)
DEFAULT_BACKENDS = {"cpu": TORCH_BACKENDS + ["onnxruntime-cpu"],
                    "cuda": TORCH_BACKENDS + ["onnxruntime-cuda", "onnxruntime-tensorrt"]}
# torch.compile on 2 CPU cores takes about a minute per model and shape: too slow for --quick.
QUICK_BACKENDS = [b for b in DEFAULT_BACKENDS["cpu"] if b != "resnetzoo-compiled"]
SEED = 0


class Skip(Exception):
    """This backend cannot run this configuration (e.g. bf16 in ONNX Runtime); not a failure."""


@dataclass
class Backend:
    name: str
    run: Callable[[torch.Tensor], torch.Tensor]
    build_s: float = 0.0
    # ONNX Runtime blocks the host until its GPU work is done, so CUDA events on torch's stream cannot see it.
    host_timed: bool = False
    peak_memory_mb: float | None = None
    memory_delta_mb: float | None = None
    iterations_per_round: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # process CPU time per call (CPU device only)


@dataclass
class Row:
    model: str
    precision: str
    batch_size: int
    backend: str
    status: str  # ok | failed | skipped
    reason: str = ""
    logit_error: float | None = None
    tolerance: float | None = None
    top1_agreement: float | None = None
    images_per_s: float | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p99_ms: float | None = None
    iterations: int = 0
    peak_memory_mb: float | None = None
    memory_delta_mb: float | None = None
    gflops_per_s: float | None = None
    percent_of_ceiling: float | None = None
    speedup_vs_torchvision: float | None = None
    cpu_ms_p50: float | None = None
    images_per_cpu_s: float | None = None
    speedup_cpu_time: float | None = None
    build_s: float | None = None


# ----------------------------------------------------------------------------------------------------------------
# Machine description


def cpu_description() -> dict[str, Any]:
    info: dict[str, Any] = {"name": platform.processor() or platform.machine(), "logical_cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    info["name"] = fields.get("model name", info["name"])
    info["family_model_stepping"] = f"{fields.get('cpu family')}/{fields.get('model')}/{fields.get('stepping')}"
    flags = set(fields.get("flags", "").split())
    # The instructions that decide which precision can be fast on this CPU.
    info["flags"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "amx_tile"})
    return info


def device_description(device: torch.device) -> dict[str, Any]:
    description = {"type": device.type, "cpu": cpu_description(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        description.update(name=properties.name, memory_gb=round(properties.total_memory / 2**30, 1),
                           capability=f"{properties.major}.{properties.minor}", cuda=torch.version.cuda,
                           cudnn=torch.backends.cudnn.version())
    else:
        description["name"] = description["cpu"]["name"]
    return description


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
                "resnetzoo": resnetzoo.__version__}
    for module in ("onnxruntime", "numpy", "onnx"):
        with contextlib.suppress(ImportError):
            versions[module] = __import__(module).__version__
    return versions


# ----------------------------------------------------------------------------------------------------------------
# Memory


class PeakRss:
    """Samples this process's resident memory in a thread; ``peak_mb`` is the largest value seen.

    ``ru_maxrss`` would be simpler, but it only ever grows over the process's life, so it cannot tell
    one backend's peak from the previous one's.
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.start_mb = self._rss_mb()
        self.peak_mb = self.start_mb
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss_mb(self) -> float:
        return self._process.memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._rss_mb())
            self._stop.wait(self._interval_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())


@contextlib.contextmanager
def measure_memory(device: torch.device, backend_holder: dict[str, Backend]) -> Iterator[None]:
    """Peak memory while a backend is built, checked and warmed up; stored on ``backend_holder['backend']``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield
        torch.cuda.synchronize(device)
        backend = backend_holder.get("backend")
        if backend is not None and not backend.name.startswith("onnxruntime"):
            # Only what this backend added: its weights copy, activations and workspaces.
            backend.peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
            backend.memory_delta_mb = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        return
    try:
        sampler = PeakRss()
    except ImportError:  # psutil is a dev dependency; the benchmark still runs without memory numbers
        yield
        return
    with sampler:
        yield
    backend = backend_holder.get("backend")
    if backend is not None:
        backend.peak_memory_mb = sampler.peak_mb
        backend.memory_delta_mb = sampler.peak_mb - sampler.start_mb


# ----------------------------------------------------------------------------------------------------------------
# Kernel ceiling


# Big, regular kernels that run near the device's arithmetic peak: a square matrix product and a 3x3
# convolution in channels_last (oneDNN / cuDNN's best layout). (matrix size, conv batch, channels, side).
CEILING_SHAPES = {"cpu": (2048, 8, 256, 28), "cuda": (8192, 128, 256, 56)}


def measure_ceiling(device: torch.device, dtype: torch.dtype, min_time_s: float = 0.5) -> dict[str, Any]:
    """The fastest GFLOP/s this device, dtype and thread count reached on the probe kernels.

    Not the datasheet peak (clock speeds and boost differ per machine and run) but what the same libraries
    sustain on the most favourable shapes in the same process: a ResNet cannot run faster than its
    convolutions can, so ``GFLOP/s / ceiling`` shows how much headroom a backend has left. Each kernel runs
    for at least ``min_time_s`` and its fastest call counts (a ceiling, not a typical value).
    """
    matrix, batch, channels, side = CEILING_SHAPES[device.type]
    generator = torch.Generator().manual_seed(SEED)
    a = torch.randn(matrix, matrix, generator=generator).to(device, dtype)
    b = torch.randn(matrix, matrix, generator=generator).to(device, dtype)
    images = torch.randn(batch, channels, side, side, generator=generator).to(device, dtype)
    images = images.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, channels, 3, 3, generator=generator).to(device, dtype)
    weight = weight.contiguous(memory_format=torch.channels_last)
    kernels = {
        f"conv3x3 {batch}x{channels}x{side}x{side} channels_last":
            (lambda: torch.nn.functional.conv2d(images, weight, padding=1), 2 * batch * side * side * channels**2 * 9),
    }
    # fp16 matmul on a CPU falls back to scalar code (one 2048^3 product takes ~40 s on a Zen 4); the
    # convolution alone is a fair ceiling there.
    if not (device.type == "cpu" and dtype == torch.float16):
        kernels[f"matmul {matrix}x{matrix}"] = (lambda: torch.mm(a, b), 2 * matrix**3)
    results: dict[str, float] = {}
    with torch.inference_mode():
        for name, (kernel, flops) in kernels.items():
            start = time.perf_counter()
            kernel()  # first call: library initialisation, algorithm choice, weight reorders
            synchronize(device)
            # Bursts of calls between synchronisations (>= ~20 ms each), so that on a GPU the host's sync
            # latency is not counted against sub-millisecond kernels.
            per_burst = max(1, math.ceil(0.02 / max(time.perf_counter() - start, 1e-6)))
            best = math.inf
            deadline = time.perf_counter() + min_time_s
            bursts = 0
            while bursts < 3 or time.perf_counter() < deadline:
                start = time.perf_counter()
                for _ in range(per_burst):
                    kernel()
                synchronize(device)
                best = min(best, (time.perf_counter() - start) / per_burst)
                bursts += 1
            results[name] = flops / best / 1e9
    kernel_name = max(results, key=results.__getitem__)
    return {"gflops_per_s": results[kernel_name], "kernel": kernel_name, "kernels": results}


# ----------------------------------------------------------------------------------------------------------------
# Backends


@dataclass
class Context:
    name: str
    torchvision_model: torch.nn.Module
    resnetzoo_model: torch.nn.Module
    device: torch.device
    precision: str
    images: torch.Tensor  # the timed batch
    check: CheckSet  # the images every backend's logits are compared on, with torchvision's logits
    compile_mode: str
    onnx_dir: Path | None
    onnx_cache: dict[tuple[str, str], Path]
    work_dir: Path

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]


def _eager(model: torch.nn.Module, ctx: Context) -> Callable[[torch.Tensor], torch.Tensor]:
    model = copy.deepcopy(model).eval()
    if ctx.precision == "fp32":
        return model
    # Eager reduced precision is what most people run: autocast (AMP) over fp32 weights.
    dtype, device_type = ctx.dtype, ctx.device.type

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, dtype=dtype):
            return model(images)

    return run


def build_torchvision(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor]:
    return _eager(ctx.torchvision_model, ctx)


def build_resnetzoo(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor]:
    return _eager(ctx.resnetzoo_model, ctx)


def build_optimized(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor]:
    return optimize_for_inference(ctx.resnetzoo_model, dtype=None if ctx.precision == "fp32" else ctx.dtype)


def build_compiled(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor]:
    # Every configuration compiles ResNet.forward anew; after torch._dynamo's recompile limit (8) it would
    # silently run eager and the row would still say "compiled". Earlier configurations' graphs are not needed.
    torch._dynamo.reset()
    dtype = None if ctx.precision == "fp32" else ctx.dtype
    return optimize_for_inference(ctx.resnetzoo_model, dtype=dtype, compile=ctx.compile_mode)


def build_torchscript(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor]:
    # Trace the model with BN already folded in fp32 and then cast. torch.jit.freeze would fold BN by itself, but
    # after the cast: in bf16 that rounds the folded scale twice, and on a trained resnet50 the logits moved
    # 5e-2 from fp32 (over the 3e-2 tolerance) against 1e-2 when folding first.
    model = optimize_for_inference(ctx.resnetzoo_model, dtype=None if ctx.precision == "fp32" else ctx.dtype)
    example = ctx.images.to(ctx.dtype).contiguous(memory_format=torch.channels_last)
    with quiet_jit(), torch.no_grad():
        scripted = torch.jit.freeze(torch.jit.trace(model, example))
    dtype = ctx.dtype

    def run(images: torch.Tensor) -> torch.Tensor:
        with quiet_jit():
            return scripted(images.to(dtype).contiguous(memory_format=torch.channels_last))

    return run


def onnx_file(ctx: Context) -> Path:
    """The model's ONNX file: from ``--onnx-dir`` when given, else exported once per model and dtype."""
    half = ctx.precision == "fp16"
    if ctx.onnx_dir is not None:
        candidates = [ctx.onnx_dir / ctx.name / file_name("onnx", half),
                      ctx.onnx_dir / f"{ctx.name}{'.fp16' if half else ''}.onnx"]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise Skip(f"no pre-exported file for {ctx.name} in {ctx.onnx_dir} (looked for "
                   f"{', '.join(str(c.relative_to(ctx.onnx_dir)) for c in candidates)})")
    key = (ctx.name, ctx.precision)
    if key not in ctx.onnx_cache:
        out_dir = ctx.work_dir / "onnx" / ctx.name
        # verify=False: the benchmark runs its own, stricter parity check against torchvision right after.
        # export_model works on a CPU copy of the model it is given.
        export_model(ctx.resnetzoo_model, out_dir, formats=["onnx"], image_size=ctx.images.shape[-1], fp16=half,
                     verify=False, progress=False)
        ctx.onnx_cache[key] = out_dir / file_name("onnx", half)
    return ctx.onnx_cache[key]


def build_onnxruntime(ctx: Context, provider: str) -> Backend:
    import onnxruntime as ort

    if ctx.precision == "bf16":
        raise Skip("ONNX Runtime has no bf16 convolution kernels")
    if provider == "CPUExecutionProvider" and ctx.device.type != "cpu":
        raise Skip("the CPU provider is benchmarked with --device cpu")
    if provider != "CPUExecutionProvider" and ctx.device.type != "cuda":
        raise Skip(f"{provider} needs --device cuda")
    if ctx.precision == "fp16" and provider == "CPUExecutionProvider":
        raise Skip("fp16 is not a fast path of ONNX Runtime's CPU provider on x86; use --device cuda for fp16")
    if provider not in ort.get_available_providers():
        raise Skip(f"{provider} is not in this onnxruntime build")
    path = onnx_file(ctx)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Same thread budget as torch, so the comparison is about kernels, not core counts.
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    provider_options: dict[str, Any] = {}
    if provider == "TensorrtExecutionProvider":
        provider_options = {"trt_fp16_enable": ctx.precision == "fp16", "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": str(ctx.work_dir / "trt_cache")}
        if ctx.precision == "fp32":
            # TensorRT may choose TF32 kernels for an fp32 engine; NVIDIA's libraries honour this variable to
            # forbid TF32, so fp32 means fp32 here as it does for torch (configure_precision).
            os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
    if provider == "CUDAExecutionProvider":
        # Same reason: ONNX Runtime's CUDA provider uses TF32 for fp32 convolutions unless told not to.
        provider_options["use_tf32"] = "0"
    if provider != "CPUExecutionProvider":
        provider_options["device_id"] = ctx.device.index or 0
    providers = [(provider, provider_options)] if provider_options else [provider]
    session = ort.InferenceSession(str(path), options, providers=providers)
    if session.get_providers()[0] != provider:
        # ORT falls back to the CPU provider silently when a GPU provider's libraries are missing.
        raise Skip(f"{provider} could not start (missing CUDA/cuDNN/TensorRT libraries?); "
                   f"session fell back to {session.get_providers()}")
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    half = ctx.precision == "fp16"

    if provider == "CPUExecutionProvider":
        def run(images: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run([output_name], {input_name: images.numpy()})[0])

        return Backend("", run, host_timed=True)

    # GPU providers: bind torch's CUDA buffers directly, so no host round trip is timed (io binding).
    element_type = np.float16 if half else np.float32
    out_dtype = torch.float16 if half else torch.float32
    device_id = ctx.device.index or 0
    binding = session.io_binding()

    def run_cuda(images: torch.Tensor) -> torch.Tensor:
        images = images.to(out_dtype).contiguous()
        output = torch.empty((images.shape[0], ctx.resnetzoo_model.num_classes), dtype=out_dtype, device=ctx.device)
        torch.cuda.current_stream(ctx.device).synchronize()  # ORT runs on its own stream
        binding.bind_input(input_name, "cuda", device_id, element_type, tuple(images.shape), images.data_ptr())
        binding.bind_output(output_name, "cuda", device_id, element_type, tuple(output.shape), output.data_ptr())
        session.run_with_iobinding(binding)
        return output

    return Backend("", run_cuda, host_timed=True)


BUILDERS: dict[str, Callable[[Context], Any]] = {
    "torchvision": build_torchvision,
    "resnetzoo": build_resnetzoo,
    "resnetzoo-optimized": build_optimized,
    "resnetzoo-compiled": build_compiled,
    "torchscript": build_torchscript,
    **{name: (lambda ctx, p=provider: build_onnxruntime(ctx, p)) for name, provider in ORT_BACKENDS.items()},
}


# ----------------------------------------------------------------------------------------------------------------
# Timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_iterations(backend: Backend, images: torch.Tensor, iterations: int,
                    device: torch.device) -> tuple[list[float], list[float]]:
    """Per-iteration wall-clock latencies and process CPU times in milliseconds (CPU times empty on CUDA)."""
    if device.type == "cuda" and not backend.host_timed:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iterations)]
        synchronize(device)
        for start, end in events:
            start.record()
            backend.run(images)
            end.record()
        synchronize(device)  # one sync at the end: per-iteration syncs would add host latency to GPU time
        return [start.elapsed_time(end) for start, end in events], []
    latencies, cpu_times = [], []
    synchronize(device)
    for _ in range(iterations):
        start, cpu_start = time.perf_counter(), time.process_time()
        backend.run(images)
        synchronize(device)
        latencies.append((time.perf_counter() - start) * 1e3)
        cpu_times.append((time.process_time() - cpu_start) * 1e3)
    return latencies, ([] if device.type == "cuda" else cpu_times)


# ----------------------------------------------------------------------------------------------------------------
# The check set


class InputError(Exception):
    """Arguments or files the benchmark cannot use; main() reports it and exits with 2."""


@dataclass
class CheckSet:
    """The images every backend's logits are compared on, with torchvision fp32 eager's logits for them.

    ``images`` is a whole number of timed-size batches (the last one padded by repeating images); only the
    first ``count`` rows are compared. Top-1 agreement means something only when torchvision's top-1 varies
    over the images: a randomly initialised ResNet gives nearly every input the same class (a shared bias
    dominates its logits), and agreement is then ~100% whatever a backend does to the logits' fine detail.
    """

    source: str
    batch_size: int
    images: torch.Tensor
    count: int
    reference: torch.Tensor  # fp32 logits on the CPU, ``count`` rows

    @property
    def dominant_share(self) -> float:
        """The fraction of check images that torchvision puts in its most frequent top-1 class."""
        return torch.bincount(self.reference.argmax(1)).max().item() / self.count

    @property
    def informative(self) -> bool:
        # With half the images or more in one class, agreeing on top-1 mostly means sharing that bias.
        return self.dominant_share < 0.5

    def summary(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "source": self.source, "images": self.count,
                "distinct_top1": int(self.reference.argmax(1).unique().numel()),
                "dominant_share": self.dominant_share, "informative": self.informative}


def check_source(args: argparse.Namespace, model: torch.nn.Module) -> tuple[torch.Tensor, str]:
    """The check images on the CPU and where they came from: ``--images`` files or seeded random images."""
    if not args.images:
        generator = torch.Generator().manual_seed(SEED)
        size = args.image_size
        return torch.randn(args.check_images, 3, size, size, generator=generator), "random normal images"
    from resnetzoo.data import IMAGE_SUFFIXES, BrokenImageError, find_image_files, load_image
    from resnetzoo.transforms import eval_transform, eval_transform_config

    files = [file for path in args.images for file in find_image_files(path)]
    if not files:
        raise InputError(f"--images {' '.join(map(str, args.images))}: no image files found "
                         f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    # Evenly spaced picks first, so that a class-per-folder dataset contributes from every class rather than
    # from the first one or two folders; the other files stand in for picks that cannot be decoded.
    step = max(1.0, len(files) / args.check_images)
    picks = list(dict.fromkeys(min(len(files) - 1, int(i * step)) for i in range(args.check_images)))
    picked = set(picks)
    order = picks + [i for i in range(len(files)) if i not in picked]
    # The model's own preprocessing (its weights' mean/std and resize ratio), at the benchmarked size.
    transform = eval_transform(eval_transform_config(args.image_size, weights=model.config))
    images: list[torch.Tensor] = []
    skipped: list[str] = []
    for index in order:
        if len(images) == args.check_images:
            break
        try:
            images.append(transform(load_image(files[index])))
        except BrokenImageError as error:
            logger.warning("Skipping check image %s", error)
            skipped.append(str(files[index]))
    if not images:
        raise InputError(f"--images {' '.join(map(str, args.images))}: none of the {len(files)} file(s) found "
                         "could be decoded as an image (each is named above)")
    if len(images) < args.check_images:
        logger.warning("--images gave %d usable image(s); the parity check runs on those, not on --check-images %d.",
                       len(images), args.check_images)
    source = f"images from {', '.join(map(str, args.images))}"
    if skipped:
        source += f" ({len(skipped)} unreadable file(s) skipped: {', '.join(skipped[:3])}{', ...' * (len(skipped) > 3)})"
    return torch.stack(images), source


def make_check_set(images: torch.Tensor, source: str, batch_size: int, reference_model: torch.nn.Module,
                   device: torch.device) -> CheckSet:
    count = len(images)
    padded_count = math.ceil(count / batch_size) * batch_size
    padded = images.repeat(math.ceil(padded_count / count), 1, 1, 1)[:padded_count].to(device)
    with torch.inference_mode():
        reference = torch.cat([reference_model(chunk).float().cpu() for chunk in padded.split(batch_size)])
    return CheckSet(source, batch_size, padded, count, reference[:count])


# ----------------------------------------------------------------------------------------------------------------
# The run


def make_models(name: str, pretrained: str | None) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(torchvision model, resnetzoo model) holding identical weights, in eval mode on the CPU."""
    if pretrained and Path(pretrained).expanduser().is_dir():
        # A saved folder (save_pretrained, a training run): it carries its own architecture and head.
        ours = resnetzoo.create(Path(pretrained).expanduser())
        if ours.config.architecture != name:
            raise InputError(f"--pretrained {pretrained} holds a {ours.config.architecture or 'custom ResNet'}, "
                             f"not a {name}; pass --models {ours.config.architecture or '...'}")
    elif pretrained:
        ours = resnetzoo.create(name, pretrained=pretrained)
    else:
        torch.manual_seed(SEED)
        ours = resnetzoo.create(name)
    reference = torchvision.models.get_model(name, weights=None, num_classes=ours.num_classes)
    # One state dict for both: the torchvision model gets exactly our weights (strict: no key left out).
    reference.load_state_dict(ours.state_dict(), strict=True)
    return reference.eval(), ours.eval()


def configure_precision(device: torch.device) -> None:
    if device.type == "cuda":
        # fp32 means fp32: TF32 convolutions would be ~1e-3 off and make "fp32" mean different things per GPU.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True  # every backend gets cuDNN's fastest algorithm for its shapes


def check_backend(backend: Backend, check: CheckSet, precision: str, perturb: str | None) -> tuple[float, float, float]:
    """(logit error, tolerance, top-1 agreement) of a backend against torchvision fp32 eager on the check set."""
    # One call per timed-size batch: a compiled or traced backend then never sees a shape it will not be timed on.
    # Each output is copied at once: under CUDA graphs (compile mode reduce-overhead) the next call overwrites it.
    outputs = [backend.run(chunk).detach().float().cpu() for chunk in check.images.split(check.batch_size)]
    output = torch.cat(outputs)[:check.count]
    reference = check.reference
    if perturb == backend.name:
        # Debug hook (--debug-perturb): the test suite uses it to prove that divergence is caught.
        output = output + 1e-2 * max(1.0, reference.abs().max().item())
    error = logit_error(output, reference)
    tolerance = LOGIT_TOLERANCE[PRECISIONS[precision]]
    agreement = (output.argmax(1) == reference.argmax(1)).float().mean().item()
    return error, tolerance, agreement


@dataclass
class BenchmarkRun:
    rows: list[Row]
    ceilings: dict[str, dict[str, Any]]  # precision -> measure_ceiling's result
    check_sets: list[dict[str, Any]]  # CheckSet.summary() per model and batch size


def benchmark(args: argparse.Namespace) -> BenchmarkRun:
    device = torch.device(args.device)
    configure_precision(device)
    out_dir = Path(args.out)
    rows: list[Row] = []
    check_sets: list[dict[str, Any]] = []
    onnx_cache: dict[tuple[str, str], Path] = {}
    configs = [(m, p, b) for m in args.models for p in args.precision for b in args.batch_sizes]
    total_steps = len(args.precision) + len(configs) * len(args.backends) * (1 + args.rounds)
    progress = tqdm(total=total_steps, desc="benchmark", unit="step", disable=args.no_progress, file=sys.stderr)
    ceilings: dict[str, dict[str, Any]] = {}
    for precision in args.precision:
        progress.set_description(f"kernel ceiling {precision}")
        ceilings[precision] = measure_ceiling(device, PRECISIONS[precision], min_time_s=min(1.0, args.min_time / 10))
        progress.update(1)
    # Backends are built outside inference mode (torch.export and tracing refuse inference tensors); every
    # forward pass (checks, warm-up, timing) runs inside it.
    with tempfile.TemporaryDirectory(prefix="resnetzoo-bench-") as scratch:
        work_dir = out_dir if args.keep_onnx else Path(scratch)
        for name in args.models:
            tv_model, rz_model = make_models(name, args.pretrained)
            tv_model.to(device)
            rz_model.to(device)
            macs = count_macs(rz_model, args.image_size)
            check_images, source = check_source(args, rz_model)
            checks = {b: make_check_set(check_images, source, b, tv_model, device) for b in args.batch_sizes}
            check_sets += [{"model": name, **check.summary()} for check in checks.values()]
            for precision in args.precision:
                for batch_size in args.batch_sizes:
                    generator = torch.Generator().manual_seed(SEED + batch_size)
                    images = torch.randn(batch_size, 3, args.image_size, args.image_size, generator=generator)
                    ctx = Context(name, tv_model, rz_model, device, precision, images.to(device), checks[batch_size],
                                  args.compile_mode, args.onnx_dir, onnx_cache, work_dir)
                    rows += run_config(ctx, args, macs, ceilings[precision]["gflops_per_s"], progress)
                    gc.collect()
            del tv_model, rz_model, checks
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    progress.close()
    return BenchmarkRun(rows, ceilings, check_sets)


def run_config(ctx: Context, args: argparse.Namespace, macs: int, ceiling_gflops: float,
               progress: tqdm) -> list[Row]:
    batch_size = ctx.images.shape[0]
    label = f"{ctx.name} {ctx.precision} b{batch_size}"
    rows: dict[str, Row] = {}
    backends: list[Backend] = []
    for backend_name in args.backends:
        progress.set_description(f"{label} build {backend_name}")
        row = Row(ctx.name, ctx.precision, batch_size, backend_name, status="ok")
        rows[backend_name] = row
        holder: dict[str, Backend] = {}
        try:
            with measure_memory(ctx.device, holder):
                start = time.perf_counter()
                built = BUILDERS[backend_name](ctx)
                backend = built if isinstance(built, Backend) else Backend(backend_name, built)
                backend.name = backend_name
                holder["backend"] = backend
                with torch.inference_mode():
                    # The check doubles as the first warm-up call (and triggers torch.compile's compilation).
                    row.logit_error, row.tolerance, row.top1_agreement = check_backend(
                        backend, ctx.check, ctx.precision, args.debug_perturb)
                    backend.build_s = time.perf_counter() - start
                    for _ in range(args.warmup):
                        backend.run(ctx.images)
                    synchronize(ctx.device)
        except Skip as reason:
            row.status, row.reason = "skipped", str(reason)
            progress.update(1 + args.rounds)
            continue
        except Exception as error:  # a backend that crashes is a result to report, not a reason to stop the run
            logger.exception("%s: %s failed", label, backend_name)
            row.status, row.reason = "failed", f"{type(error).__name__}: {error}"
            progress.update(1 + args.rounds)
            continue
        row.build_s = backend.build_s
        row.peak_memory_mb, row.memory_delta_mb = backend.peak_memory_mb, backend.memory_delta_mb
        if row.logit_error > row.tolerance:
            row.status = "failed"
            row.reason = f"logits differ from torchvision by {row.logit_error:.2e} > tolerance {row.tolerance:.0e}"
            progress.update(1 + args.rounds)
            continue
        backends.append(backend)
        progress.update(1)

    with torch.inference_mode():
        time_backends(ctx, args, backends, progress, label)

    for backend in backends:
        row = rows[backend.name]
        latencies = backend.latencies_ms
        row.iterations = len(latencies)
        row.latency_p50_ms, row.latency_p90_ms, row.latency_p99_ms = (
            float(v) for v in np.percentile(latencies, [50, 90, 99]))
        row.images_per_s = batch_size / (row.latency_p50_ms / 1e3)
        row.gflops_per_s = 2 * macs * row.images_per_s / 1e9
        row.percent_of_ceiling = 100 * row.gflops_per_s / ceiling_gflops
        if backend.cpu_ms:
            row.cpu_ms_p50 = float(np.median(backend.cpu_ms))
            row.images_per_cpu_s = batch_size / (row.cpu_ms_p50 / 1e3) if row.cpu_ms_p50 > 0 else None
    baseline = rows.get(BASELINE)
    if baseline is not None and baseline.images_per_s:
        for row in rows.values():
            if row.images_per_s:
                row.speedup_vs_torchvision = row.images_per_s / baseline.images_per_s
            if row.images_per_cpu_s and baseline.images_per_cpu_s:
                row.speedup_cpu_time = row.images_per_cpu_s / baseline.images_per_cpu_s
    return list(rows.values())


def time_backends(ctx: Context, args: argparse.Namespace, backends: list[Backend], progress: tqdm, label: str) -> None:
    """Fill each backend's ``latencies_ms``, visiting the backends in turn for ``args.rounds`` rounds."""
    # Iterations per round from two timed calls of each backend: enough to fill min_time over all rounds.
    for backend in backends:
        single = statistics.median(time_iterations(backend, ctx.images, 2, ctx.device)[0])
        per_round = math.ceil(args.min_time * 1e3 / max(single, 1e-3) / args.rounds)
        backend.iterations_per_round = max(args.min_iterations, min(per_round, args.max_iterations))
    # A new order every round: a backend that always ran right after another (or always first) could inherit
    # its cache state or a periodic load pattern; shuffling turns that into noise the median absorbs.
    order = random.Random(SEED)
    for round_index in range(args.rounds):
        for backend in order.sample(backends, len(backends)):
            progress.set_description(f"{label} time {backend.name} ({round_index + 1}/{args.rounds})")
            latencies, cpu_times = time_iterations(backend, ctx.images, backend.iterations_per_round, ctx.device)
            backend.latencies_ms += latencies
            backend.cpu_ms += cpu_times
            progress.update(1)


# ----------------------------------------------------------------------------------------------------------------
# Reports


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _uninformative(check_sets: list[dict[str, Any]] | None) -> set[tuple[str, int]]:
    """(model, batch size) whose check set cannot make top-1 agreement mean anything (see ``CheckSet``)."""
    return {(c["model"], c["batch_size"]) for c in check_sets or [] if not c["informative"]}


def markdown_table(rows: list[Row], check_sets: list[dict[str, Any]] | None = None) -> str:
    uninformative = _uninformative(check_sets)
    lines = ["| model | precision | batch | backend | images/s | x torchvision | x torchvision (CPU time) | p50 ms "
             "| p90 ms | p99 ms | GFLOP/s | % of ceiling | peak MB | +MB | logit err | top-1 agree | status |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        status = r.status if r.status == "ok" else f"**{r.status}**: {r.reason}"
        dagger = " †" if r.top1_agreement is not None and (r.model, r.batch_size) in uninformative else ""
        lines.append(
            f"| {r.model} | {r.precision} | {r.batch_size} | {r.backend} | {_fmt(r.images_per_s, ',.1f')} "
            f"| {_fmt(r.speedup_vs_torchvision, '.2f')} | {_fmt(r.speedup_cpu_time, '.2f')} "
            f"| {_fmt(r.latency_p50_ms, '.2f')} | {_fmt(r.latency_p90_ms, '.2f')} "
            f"| {_fmt(r.latency_p99_ms, '.2f')} | {_fmt(r.gflops_per_s, ',.1f')} | {_fmt(r.percent_of_ceiling, '.0f')} "
            f"| {_fmt(r.peak_memory_mb, ',.0f')} | {_fmt(r.memory_delta_mb, ',.0f')} | {_fmt(r.logit_error, '.1e')} "
            f"| {_fmt(r.top1_agreement, '.3f')}{dagger} | {status} |"
        )
    return "\n".join(lines)


def _cpu_time_note(row: Row) -> str:
    return "" if row.speedup_cpu_time is None else f" (CPU time: {row.speedup_cpu_time:.2f}x)"


def evaluate_goals(rows: list[Row], device: dict[str, Any], image_size: int,
                   ceilings: dict[str, dict[str, Any]] | None = None,
                   check_sets: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The goals of the speed issue that this run's configurations can show; each with the measured value.

    A goal whose configuration was not measured is left out rather than reported as met or missed. "met" is
    judged on wall-clock images/s, as the issue states the goals; the CPU-time ratio is shown beside it.
    "met" is None (unverified) when a goal's top-1 agreement was measured on a check set that cannot show it.
    """
    uninformative = _uninformative(check_sets)
    goals: list[dict[str, Any]] = []
    ok = [r for r in rows if r.status == "ok" and r.speedup_vs_torchvision is not None]
    for row in ok:
        if row.backend == "resnetzoo":
            goals.append({"goal": f"hand-built eager within 3% of torchvision ({row.model} {row.precision} "
                                  f"b{row.batch_size})", "target": ">= 0.97x",
                          # Three decimals: judged unrounded, 0.966 must not read "0.97x ... no".
                          "measured": f"{row.speedup_vs_torchvision:.3f}x{_cpu_time_note(row)}",
                          "met": row.speedup_vs_torchvision >= 0.97})

    def best(model: str, precision: str, batch_size: int, size: int) -> Row | None:
        if image_size != size:
            return None
        candidates = [r for r in ok if (r.model, r.precision, r.batch_size) == (model, precision, batch_size)
                      and r.backend not in ("torchvision", "resnetzoo")]
        return max(candidates, key=lambda r: r.images_per_s, default=None)

    if device["type"] == "cpu" and (row := best("resnet50", "fp32", 8, 224)) is not None:
        measured = f"{row.speedup_vs_torchvision:.2f}x{_cpu_time_note(row)} ({row.backend})"
        baseline = next(r for r in ok if (r.model, r.precision, r.batch_size, r.backend)
                        == ("resnet50", "fp32", 8, "torchvision"))
        ceiling = (ceilings or {}).get("fp32", {}).get("gflops_per_s")
        if ceiling and baseline.gflops_per_s:
            # How close the target is to what this CPU can do at all: above 100% no kernel choice can reach it.
            needed = 1.6 * baseline.gflops_per_s
            measured += (f"; 1.6x needs {needed:,.0f} GFLOP/s, {100 * needed / ceiling:.0f}% of the "
                         f"{ceiling:,.0f} GFLOP/s kernel ceiling")
        goals.append({"goal": "CPU resnet50 b8 224 px fp32: best resnetzoo path vs torchvision eager", "target": ">= 1.6x",
                      "measured": measured, "met": row.speedup_vs_torchvision >= 1.6})
    bf16_capable = device["type"] == "cuda" or {"avx512_bf16", "amx_bf16"} & set(device["cpu"].get("flags", []))
    for model, batch_size in sorted({(r.model, r.batch_size) for r in ok if r.precision == "bf16"}):
        row = best(model, "bf16", batch_size, 224)  # the issue's goals are stated at 224 px
        # Against torchvision eager in fp32, as the issue states it; top-1 agreement with the fp32 logits.
        fp32 = next((r for r in ok if (r.model, r.precision, r.batch_size, r.backend)
                     == (model, "fp32", batch_size, "torchvision")), None)
        if bf16_capable and row is not None and fp32 is not None:
            ratio = row.images_per_s / fp32.images_per_s
            measured = f"{ratio:.2f}x, top-1 {100 * row.top1_agreement:.1f}%"
            met: bool | None = ratio >= 2.5 and row.top1_agreement >= 0.99
            if (model, batch_size) in uninformative:
                measured += " (not informative here: see the check set above)"
                met = None if ratio >= 2.5 else False  # too slow is a miss whatever the agreement
            goals.append({"goal": f"bf16 {model} b{batch_size}: best path ({row.backend}) vs torchvision eager fp32",
                          "target": ">= 2.5x, top-1 >= 99%", "measured": measured, "met": met})
    if device["type"] == "cuda" and (row := next((r for r in ok if (r.model, r.precision, r.batch_size, r.backend)
                                                  == ("resnet50", "bf16", 256, "resnetzoo-compiled")), None)):
        goals.append({"goal": "CUDA resnet50 bf16 b256 compiled vs torchvision eager AMP", "target": ">= 2x",
                      "measured": f"{row.speedup_vs_torchvision:.2f}x", "met": row.speedup_vs_torchvision >= 2})
        if "H100" in device.get("name", ""):
            goals.append({"goal": "CUDA resnet50 bf16 b256 compiled on an H100", "target": ">= 25,000 images/s",
                          "measured": f"{row.images_per_s:,.0f} images/s", "met": row.images_per_s >= 25_000})
    return goals


def _ceiling_lines(ceilings: dict[str, dict[str, Any]] | None) -> list[str]:
    if not ceilings:
        return []
    measured = "; ".join(f"{precision} {c['gflops_per_s']:,.0f} GFLOP/s ({c['kernel']})"
                         for precision, c in ceilings.items())
    return [f"- Kernel ceiling, measured in this run with the same threads: {measured}. It is the faster of a "
            "large matrix product and a channels_last 3x3 convolution: what this device sustains on favourable "
            "shapes, not a datasheet peak (a backend may pass it by a few % on other shapes or a higher clock). "
            "% of ceiling = GFLOP/s / ceiling shows how much headroom a backend has left."]


def _check_set_lines(check_sets: list[dict[str, Any]] | None) -> list[str]:
    if not check_sets:
        return []
    by_model: dict[str, list[dict[str, Any]]] = {}
    for check in check_sets:
        by_model.setdefault(check["model"], []).append(check)
    parts = []
    for model, checks in by_model.items():
        first = checks[0]
        spread = ", ".join(f"b{c['batch_size']}: {c['distinct_top1']} top-1 class{'es' * (c['distinct_top1'] != 1)}, "
                           f"{100 * c['dominant_share']:.0f}% in the commonest" for c in checks)
        parts.append(f"{model}: {first['images']} {first['source']} ({spread})")
    lines = ["- Parity check set (every backend runs it in batches of the timed size; logit error and top-1 "
             "agreement come from it): " + "; ".join(parts) + "."]
    if any(not c["informative"] for c in check_sets):
        lines.append("- † top-1 agreement not informative: torchvision puts half or more of the check images in one "
                     "class (random weights do that, and so do trained ones on images unlike their training data), "
                     "so agreeing on top-1 says little. The logit error still holds. For a meaningful agreement "
                     "pass trained weights (--pretrained) and real --images at the size they were trained for.")
    return lines


def markdown_report(report: dict[str, Any], rows: list[Row]) -> str:
    device = report["device"]
    settings = report["settings"]
    memory = ("CUDA max allocated while the backend was built, checked and warmed up; +MB is what it added"
              if device["type"] == "cuda" else
              "peak process RSS while the backend was built, checked and warmed up; +MB is the rise during that time")
    lines = [
        f"# Inference throughput on {device['name']}",
        "",
        f"- Date: {report['started_at']}; duration {report['duration_s']:.0f} s",
        f"- Command: `{report['command']}`",
        f"- Device: {device['name']} ({device['type']}), torch threads {device['torch_threads']}; "
        f"CPU {device['cpu']['name']} (family/model/stepping {device['cpu'].get('family_model_stepping', 'n/a')}, "
        f"{device['cpu'].get('logical_cores')} logical cores, "
        f"flags {', '.join(device['cpu'].get('flags', [])) or 'n/a'})",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"- Settings: image size {settings['image_size']}, weights {settings['weights']}, compile mode "
        f"{settings['compile_mode']}, {settings['rounds']} interleaved rounds, >= {settings['min_time']} s per backend",
        f"- images/s from the median latency; memory: {memory}. Logit error: max|diff| / max(1, max|reference|) "
        "against torchvision fp32 eager.",
        "- x torchvision (CPU time): the same ratio from the median process CPU time per call (CPU device only). "
        "With --threads 1 it ignores time spent waiting for a core that other jobs hold, so on a shared machine it "
        "is the steadier of the two; with more threads it also counts threads spinning while they wait.",
        *_ceiling_lines(report.get("ceilings")),
        *_check_set_lines(report.get("check_sets")),
        "",
        markdown_table(rows, report.get("check_sets")),
        "",
    ]
    if report.get("goals"):
        lines += ["## Goals of the speed issue measurable in this run", ""]
        if settings.get("quick"):
            # A smoke run's few short rounds cannot separate a 3% difference from noise.
            lines += ["*A `--quick` run is a smoke test: too short to judge these goals; indicative only.*", ""]
        lines += ["| goal | target | measured | met |", "|---|---|---|---|"]
        verdicts = {True: "yes", False: "**no**", None: "unverified"}
        lines += [f"| {g['goal']} | {g['target']} | {g['measured']} | {verdicts[g['met']]} |" for g in report["goals"]]
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, title: str) -> None:
    """One panel per model and precision: speed-up over torchvision eager for each backend and batch size."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    groups = sorted({(r.model, r.precision) for r in rows}, key=lambda g: (g[0], list(PRECISIONS).index(g[1])))
    backends = [b for b in ALL_BACKENDS if any(r.backend == b and r.images_per_s for r in rows)]
    figure, axes = plt.subplots(1, max(1, len(groups)), figsize=(max(6.0, 4.5 * len(groups)), 4.5), squeeze=False)
    colors = plt.get_cmap("tab10")
    for axis, (model, precision) in zip(axes[0], groups, strict=False):
        batch_sizes = sorted({r.batch_size for r in rows if (r.model, r.precision) == (model, precision)})
        width = 0.8 / max(1, len(backends))
        for index, backend in enumerate(backends):
            values = []
            for batch_size in batch_sizes:
                match = [r for r in rows if (r.model, r.precision, r.batch_size, r.backend)
                         == (model, precision, batch_size, backend)]
                values.append(match[0].speedup_vs_torchvision or 0.0 if match else 0.0)
            positions = [i + (index - (len(backends) - 1) / 2) * width for i in range(len(batch_sizes))]
            bars = axis.bar(positions, values, width, label=backend, color=colors(index))
            axis.bar_label(bars, labels=[f"{v:.2f}" if v else "" for v in values], fontsize=7)
        axis.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        axis.margins(y=0.12)  # room for the value labels above the bars
        axis.set_xticks(range(len(batch_sizes)), [f"batch {b}" for b in batch_sizes])
        axis.set_title(f"{model}, {precision}")
        axis.set_ylabel("speed-up over torchvision eager (images/s ratio)")
    # Beside the panels, not over the bars.
    axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def write_reports(out_dir: Path, report: dict[str, Any], rows: list[Row]) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md", "png": out_dir / "throughput.png"}
    paths["json"].write_text(json.dumps({**report, "results": [asdict(r) for r in rows]}, indent=2) + "\n")
    paths["markdown"].write_text(markdown_report(report, rows))
    plot(rows, paths["png"], f"{report['device']['name']}, torch {report['versions']['torch']}")
    return paths


# ----------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/throughput.py", description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--models", nargs="+", help="registered model names (default: resnet18 resnet50; quick: resnet18)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, help="default: 1 8 256 (quick: 1 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--precision", nargs="+", choices=list(PRECISIONS), metavar="PRECISION",
                        help="any of fp32 bf16 fp16 (default: fp32)")
    parser.add_argument("--image-size", type=int, help="input height and width (default: 224; quick: 64)")
    parser.add_argument("--backends", nargs="+", choices=ALL_BACKENDS, metavar="BACKEND",
                        help=f"any of {' '.join(ALL_BACKENDS)} (default: every backend for the device; "
                        "torchvision is always added)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run, ~1 minute on 2 CPU cores: resnet18, 64 px, batch 1 and 2, short timing, no torch.compile")
    parser.add_argument("--out", required=True, type=Path, help="folder for results.json, results.md and throughput.png")
    parser.add_argument("--pretrained", metavar="WEIGHTS", help="weights instead of random init: a torchvision tag "
                        "(cached or downloadable), a weights file, or a folder written by save_pretrained or a "
                        "training run; needed for a meaningful top-1 agreement (with --images) and with "
                        "pre-exported ONNX files")
    parser.add_argument("--images", nargs="+", type=Path, metavar="PATH",
                        help="image files or folders (searched recursively) for the parity check instead of random "
                        "images; with trained weights this makes the top-1 agreement column meaningful")
    parser.add_argument("--check-images", type=int, help="images in the parity check of every backend, run in "
                        "batches of the timed size (default: 32; quick: 8)")
    parser.add_argument("--onnx-dir", type=Path, help="pre-exported ONNX files: DIR/<model>/model.onnx (the layout of "
                        "python -m resnetzoo.export) or DIR/<model>.onnx; they must hold the same weights")
    parser.add_argument("--keep-onnx", action="store_true", help="keep the exported ONNX files under OUT/onnx/")
    parser.add_argument("--compile-mode", help="torch.compile mode (default: 'default' on CPU, 'reduce-overhead' on CUDA)")
    parser.add_argument("--threads", type=int, help="torch and ONNX Runtime intra-op threads (default: torch's)")
    parser.add_argument("--warmup", type=int, help="warm-up iterations after the check (default: 5; quick: 2)")
    parser.add_argument("--rounds", type=int, help="interleaved timing rounds over all backends (default: 10; quick: 4)")
    parser.add_argument("--min-time", type=float, help="seconds of timing per backend (default: 10; quick: 1)")
    parser.add_argument("--min-iterations", type=int, default=3, help="at least this many iterations per round (default: 3)")
    parser.add_argument("--max-iterations", type=int, default=1000, help="at most this many iterations per round (default: 1000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Test hook: shift one backend's logits so that the divergence check must fail.
    parser.add_argument("--debug-perturb", metavar="BACKEND", help=argparse.SUPPRESS)
    return parser


def resolve_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    quick = args.quick
    defaults = {
        "models": ["resnet18"] if quick else ["resnet18", "resnet50"],
        "batch_sizes": [1, 2] if quick else [1, 8, 256],
        "precision": ["fp32"],
        "image_size": 64 if quick else 224,
        "warmup": 2 if quick else 5,
        "rounds": 4 if quick else 10,
        "min_time": 1.0 if quick else 10.0,
        "check_images": 8 if quick else 32,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = torch.device(args.device)
    if device.type not in DEFAULT_BACKENDS:
        parser.error(f"--device must be cpu or cuda, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device (torch.cuda.is_available() is False); use --device cpu")
    if args.backends is None:
        args.backends = QUICK_BACKENDS if quick and device.type == "cpu" else DEFAULT_BACKENDS[device.type]
    elif BASELINE not in args.backends:
        args.backends = [BASELINE, *args.backends]  # ratios need the baseline measured in the same run
    # reduce-overhead (CUDA graphs) on CUDA: removes launch overhead at small batches without autotuning, which
    # in max-autotune mode costs minutes per model and shape; pass --compile-mode max-autotune to try it.
    args.compile_mode = args.compile_mode or ("reduce-overhead" if device.type == "cuda" else "default")
    unknown = [m for m in args.models if m not in resnetzoo.list_models()]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {resnetzoo.list_models()}")
    if any(b < 1 for b in args.batch_sizes) or args.image_size < 32 or args.rounds < 1 or args.min_time <= 0:
        parser.error("batch sizes must be >= 1, --image-size >= 32, --rounds >= 1 and --min-time > 0")
    if args.check_images < 1:
        parser.error("--check-images must be >= 1")
    missing = [str(path) for path in args.images or [] if not path.exists()]
    if missing:
        parser.error(f"--images: {', '.join(missing)} does not exist")
    if args.onnx_dir is not None and not args.onnx_dir.is_dir():
        parser.error(f"--onnx-dir {args.onnx_dir} is not a folder")
    if args.debug_perturb is not None and args.debug_perturb not in args.backends:
        parser.error(f"--debug-perturb {args.debug_perturb} is not among the backends {args.backends}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = resolve_args(parser.parse_args(argv), parser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # Check the output folder before minutes of measuring, not when the results are written.
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.out):
            pass
    except OSError as error:
        print(f"error: cannot write results to {args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        run = benchmark(args)
    # e.g. --pretrained weights that are neither cached nor downloadable, or --images without a usable image
    except (resnetzoo.ResnetzooError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = run.rows
    report = {
        "command": " ".join(["python benchmarks/throughput.py", *(argv if argv is not None else sys.argv[1:])]),
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
        "device": device_description(device),
        "versions": library_versions(),
        "settings": {
            "models": args.models, "batch_sizes": args.batch_sizes, "precision": args.precision,
            "image_size": args.image_size, "backends": args.backends, "compile_mode": args.compile_mode,
            "weights": args.pretrained or f"random init (torch.manual_seed({SEED}))", "warmup": args.warmup,
            "rounds": args.rounds, "min_time": args.min_time, "quick": args.quick,
            "onnx_dir": str(args.onnx_dir) if args.onnx_dir else None,
            "check_images": args.check_images, "images": [str(p) for p in args.images or []],
            "tolerances": {name: LOGIT_TOLERANCE[dtype] for name, dtype in PRECISIONS.items()},
        },
        "ceilings": run.ceilings,
        "check_sets": run.check_sets,
    }
    report["goals"] = evaluate_goals(rows, report["device"], args.image_size, run.ceilings, run.check_sets)
    failed = [r for r in rows if r.status == "failed"]
    report["failed"] = [f"{r.model} {r.precision} b{r.batch_size} {r.backend}: {r.reason}" for r in failed]
    paths = write_reports(args.out, report, rows)
    print(markdown_table(rows, run.check_sets))
    print("\nWrote " + ", ".join(str(p) for p in paths.values()))
    if failed:
        print(f"\n{len(failed)} backend(s) FAILED:", *report["failed"], sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
