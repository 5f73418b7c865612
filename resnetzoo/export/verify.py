"""The verification gate: reload each exported file the way a consumer would and prove it equals PyTorch.

Every check is a ``CheckResult`` row (file, check, pass/fail, measured value, limit) so that a failure
says which check failed and by how much, and the manifest stores exactly what was proven.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .metadata import INPUT_NAME, OUTPUT_NAME, from_onnx_props

__all__ = [
    "CheckResult",
    "Reference",
    "FP32_TOLERANCE",
    "FP16_MIN_AGREEMENT",
    "verification_inputs",
    "make_reference",
    "verify_file",
    "format_table",
]

logger = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4  # max |logit difference| against PyTorch eval mode, fp32, across runtimes
FP16_MIN_AGREEMENT = 0.99  # share of inputs whose fp16 top-1 equals the fp32 PyTorch top-1
DEFAULT_NUM_INPUTS = 32


@dataclass
class CheckResult:
    """One row of the gate: ``passed`` is False only for a check that ran and failed (skips pass)."""

    file: str
    check: str
    passed: bool
    value: str = ""
    limit: str = ""
    skipped: bool = False
    measured: float | None = None  # the number behind ``value``, for programs reading the manifest

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        status = "skipped" if self.skipped else ("passed" if self.passed else "FAILED")
        measured = f": {self.value}" if self.value else ""
        limit = f" (limit {self.limit})" if self.limit else ""
        return f"{self.file}: {self.check} {status}{measured}{limit}"


@dataclass
class Reference:
    """Fixed inputs and the PyTorch fp32 eval-mode logits every exported file is compared with.

    ``single_logits`` is the first input run alone: PyTorch's own convolutions pick different algorithms
    for batch 1 and batch N (~1e-5 apart on deep models), so each batch size is compared with PyTorch at
    that same batch size.
    """

    inputs: torch.Tensor
    logits: torch.Tensor
    single_logits: torch.Tensor


def verification_inputs(
    in_chans: int, image_size: int, mean: Sequence[float], std: Sequence[float],
    count: int = DEFAULT_NUM_INPUTS, seed: int = 0,
) -> torch.Tensor:
    """A fixed set of normalised pseudo-images: smooth random colour fields plus a little pixel noise.

    Smooth fields rather than white noise: like photographs, they give a trained network confident,
    varied predictions, so top-1 agreement measures something. Seeded, so every run checks the same set.
    """
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, in_chans, 8, 8, generator=generator)
    images = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images + 0.05 * torch.randn(images.shape, generator=generator)).clamp(0.0, 1.0)
    mean_t = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
    if mean_t.shape[1] != in_chans:  # a stem adapted to other channels keeps RGB statistics; use their average
        mean_t, std_t = mean_t.mean().view(1, 1, 1, 1), std_t.mean().view(1, 1, 1, 1)
    return (images - mean_t) / std_t


@torch.no_grad()
def make_reference(model: torch.nn.Module, inputs: torch.Tensor) -> Reference:
    """Run the fp32 model in eval mode on the CPU; ``model`` itself is left untouched."""
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters(), None)
        if parameter is not None and (parameter.dtype != torch.float32 or parameter.device.type != "cpu"):
            raise ValueError("The reference model must be fp32 on the CPU.")
        logits = model(inputs).float()
        single_logits = model(inputs[:1]).float()
    finally:
        model.train(was_training)
    return Reference(inputs=inputs, logits=logits, single_logits=single_logits)


def _compare(
    label: str, runtime: str, outputs: np.ndarray, reference: np.ndarray, dtype: str,
    tolerance: float, min_agreement: float,
) -> list[CheckResult]:
    batch = reference.shape[0]
    results = []
    if str(outputs.dtype) != dtype:
        results.append(CheckResult(label, f"{runtime}, batch {batch}: output dtype", False, str(outputs.dtype), dtype))
        return results
    outputs32 = outputs.astype(np.float32)
    if outputs32.shape != reference.shape:
        results.append(CheckResult(label, f"{runtime}, batch {batch}: output shape", False,
                                   str(list(outputs32.shape)), str(list(reference.shape))))
        return results
    non_finite = int((~np.isfinite(outputs32)).sum())
    # The dtype was checked above; naming it here shows in the table that float16 files return float16.
    results.append(CheckResult(label, f"{runtime}, batch {batch}: {dtype} outputs, NaN/Inf", non_finite == 0,
                               str(non_finite), "0", measured=non_finite))
    max_diff = float(np.abs(outputs32 - reference).max()) if non_finite == 0 else math.inf
    if dtype == "float32":
        # The logit scale tells a real defect (diff ~ scale) from fp32 rounding on huge logits (diff ~ 1e-7 * scale).
        scale = float(np.abs(reference).max())
        results.append(CheckResult(label, f"{runtime}, batch {batch}: max|diff| vs PyTorch", max_diff <= tolerance,
                                   f"{max_diff:.2e} (max|logit| {scale:.3g})", f"<= {tolerance:.0e}",
                                   measured=max_diff if math.isfinite(max_diff) else None))
    else:
        agreement = float((outputs32.argmax(axis=1) == reference.argmax(axis=1)).mean())
        results.append(CheckResult(
            label, f"{runtime}, batch {batch}: top-1 agreement vs PyTorch fp32", agreement >= min_agreement,
            f"{agreement:.1%} (max|diff| {max_diff:.2e})", f">= {min_agreement:.0%}", measured=agreement,
        ))
    return results


def _run_two_batches(label: str, runtime: str, run: Callable[[torch.Tensor], np.ndarray], reference: Reference,
                     dtype: str, tolerance: float, min_agreement: float) -> list[CheckResult]:
    """Batch 1 and the whole set: a batch axis that was silently fixed at export fails one of the two."""
    results = []
    for stop in (1, reference.inputs.shape[0]):
        expected = reference.single_logits if stop == 1 else reference.logits
        inputs = reference.inputs[:stop].to(getattr(torch, dtype))
        try:
            outputs = run(inputs)
        except Exception as error:  # a runtime that refuses the input: report it as the failed check
            results.append(CheckResult(label, f"{runtime}, batch {stop}: run", False, _short(error)))
            continue
        results += _compare(label, runtime, outputs, expected[:stop].numpy(), dtype, tolerance, min_agreement)
    return results


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


def _metadata_check(label: str, found: dict[str, Any], expected: dict[str, Any]) -> CheckResult:
    wrong = sorted(key for key in expected if found.get(key) != expected[key])
    value = f"{len(expected)} keys match" if not wrong else f"missing or different: {', '.join(wrong)}"
    return CheckResult(label, "metadata", not wrong, value)


def _verify_onnx(path: Path, label: str, reference: Reference, metadata: dict[str, Any], dtype: str,
                 tolerance: float, min_agreement: float) -> list[CheckResult]:
    import onnx
    import onnxruntime as ort

    results = []
    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
        results.append(CheckResult(label, "onnx.checker (full_check)", True))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        results.append(CheckResult(label, "onnx.checker (full_check)", False, _short(error)))

    results.append(_interface_check(label, proto, metadata, dtype))
    props = from_onnx_props({entry.key: entry.value for entry in proto.metadata_props})
    results.append(_metadata_check(label, props, metadata))

    providers: list[tuple[str, Any]] = [("onnxruntime CPU", "CPUExecutionProvider")]
    if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
        # ONNX Runtime's CUDA provider runs fp32 convolutions in TF32 (10 mantissa bits) unless told otherwise,
        # which alone puts ResNet logits ~5e-4 off; the gate checks the file's fp32 arithmetic, so no TF32.
        providers.append(("onnxruntime CUDA", ("CUDAExecutionProvider", {"use_tf32": "0"})))
    else:  # say so, rather than let a CPU-only gate look like it covered the GPU
        results.append(CheckResult(label, "onnxruntime CUDA", True, "no CUDA device or provider", skipped=True))
    for runtime, provider in providers:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's business
        session = ort.InferenceSession(str(path), options, providers=[provider])
        provider_name = provider if isinstance(provider, str) else provider[0]
        if session.get_providers()[0] != provider_name:
            results.append(CheckResult(label, runtime, True, "provider unavailable", skipped=True))
            continue

        def run(inputs: torch.Tensor, session=session) -> np.ndarray:
            return session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})[0]

        results += _run_two_batches(label, runtime, run, reference, dtype, tolerance, min_agreement)
    return results


def _interface_check(label: str, proto: Any, metadata: dict[str, Any], dtype: str) -> CheckResult:
    import onnx

    def describe(value_info: Any) -> tuple[str, str, list]:
        tensor_type = value_info.type.tensor_type
        dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
                for d in tensor_type.shape.dim]
        return value_info.name, onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name, dims

    inputs = [describe(v) for v in proto.graph.input]
    outputs = [describe(v) for v in proto.graph.output]
    _, channels, height, width = metadata["input_shape"]
    problems = []
    if len(inputs) != 1 or inputs[0][0] != INPUT_NAME or inputs[0][1] != dtype or inputs[0][2][1:] != [channels, height, width]:
        problems.append(f"input {inputs} (expected {INPUT_NAME} {dtype} [batch, {channels}, {height}, {width}])")
    if len(outputs) != 1 or outputs[0][0] != OUTPUT_NAME or outputs[0][1] != dtype or outputs[0][2][1:] != [metadata["num_classes"]]:
        problems.append(f"output {outputs} (expected {OUTPUT_NAME} {dtype} [batch, {metadata['num_classes']}])")
    for name, _, dims in inputs[:1] + outputs[:1]:
        if not dims or not isinstance(dims[0], str) or dims[0] == "?":
            problems.append(f"batch axis of {name} is fixed at {dims[0] if dims else '?'}, not symbolic")
    if problems:
        return CheckResult(label, "interface", False, "; ".join(problems))
    name, in_dtype, dims = inputs[0]
    return CheckResult(label, "interface", True, f"{name} {in_dtype} {dims} -> {outputs[0][0]} {outputs[0][2]}")


def _verify_torch(path: Path, label: str, kind: str, reference: Reference, metadata: dict[str, Any], dtype: str,
                  tolerance: float, min_agreement: float) -> list[CheckResult]:
    if kind == "torchscript":
        from .torchscript import load_torchscript as load

        runtime = "torch.jit.load"
    else:
        from .program import load_program as load

        runtime = "torch.export.load"
    module, found = load(path)
    results = [_metadata_check(label, found, metadata)]

    @torch.no_grad()
    def run(inputs: torch.Tensor) -> np.ndarray:
        return module(inputs).detach().cpu().numpy()

    return results + _run_two_batches(label, runtime, run, reference, dtype, tolerance, min_agreement)


def verify_file(
    path: str | Path, kind: str, reference: Reference, metadata: dict[str, Any], dtype: str = "float32",
    tolerance: float = FP32_TOLERANCE, min_agreement: float = FP16_MIN_AGREEMENT, label: str | None = None,
) -> list[CheckResult]:
    """Reload one exported file (``kind``: onnx, torchscript or exported) and check it against ``reference``.

    A file that cannot even be loaded yields one failed "load" row rather than an exception, so that the
    gate always reports every file.
    """
    path = Path(path)
    label = label or path.name
    try:
        if kind == "onnx":
            return _verify_onnx(path, label, reference, metadata, dtype, tolerance, min_agreement)
        return _verify_torch(path, label, kind, reference, metadata, dtype, tolerance, min_agreement)
    except Exception as error:  # reported as a failed check; the caller refuses the file
        logger.debug("Loading %s failed", path, exc_info=True)
        return [CheckResult(label, "load", False, _short(error))]


def format_table(results: Sequence[CheckResult]) -> str:
    """A small fixed-width table of the gate's rows."""
    header = ("file", "check", "result", "value", "limit")
    rows = [(r.file, r.check, "skipped" if r.skipped else ("ok" if r.passed else "FAILED"), r.value, r.limit)
            for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
