"""An inference fast path: fold BatchNorm into the convolutions, go channels_last, optionally bf16/fp16 and compiled.

    >>> fast = resnetzoo.optimize_for_inference(model, dtype=torch.bfloat16)
    >>> logits = fast(images)          # fp32 NCHW images are converted by the model itself

Each step keeps the model's results within the dtype's tolerance (``LOGIT_TOLERANCE``) and works on a
copy, so the model you pass in is never changed. ``benchmarks/throughput.py`` measures what each step buys.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import ResnetzooError

__all__ = ["LOGIT_TOLERANCE", "FreezingCompiled", "OptimizationError", "fold_batchnorm", "logit_error",
           "optimize_for_inference"]

logger = logging.getLogger(__name__)

# Largest allowed logit error of an optimized model, relative to the size of the reference logits
# (see ``logit_error``). fp32 only reorders float arithmetic; bf16 keeps 8 mantissa bits (rounding
# ~0.4% per op) and fp16 11 bits, and the error grows with depth, hence the looser bounds.
LOGIT_TOLERANCE: dict[torch.dtype, float] = {
    torch.float32: 1e-4,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class OptimizationError(ResnetzooError, ValueError):
    """A model or option that ``optimize_for_inference`` cannot handle."""


def logit_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """``max|output - reference| / max(1, max|reference|)``, computed in fp32.

    An absolute error for logits of order one; relative for larger ones, where fp32 rounding alone
    (about 1e-7 of the magnitude per operation) would make a fixed absolute bound meaningless.
    """
    output = output.detach().float().cpu()
    reference = reference.detach().float().cpu()
    if output.shape != reference.shape:
        raise OptimizationError(f"Output shape {tuple(output.shape)} differs from the reference's {tuple(reference.shape)}.")
    scale = max(1.0, reference.abs().max().item())
    return (output - reference).abs().max().item() / scale


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a convolution into it, in place; returns how many were folded.

    The conv gains the BatchNorm's scale and shift (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and the
    BatchNorm becomes ``nn.Identity``, so parameter names and the module tree (``layer1.0.conv1``,
    ``downsample.0``, ...) stay as they were. The conv -> BN pairs are found in a ``torch.fx`` trace of
    the forward pass rather than guessed from names, so a BatchNorm is folded only where the data really
    flows conv -> BN and nothing else reads the conv's output. The model must be in eval mode.
    """
    if model.training:
        raise OptimizationError("fold_batchnorm needs a model in eval mode (call model.eval()): folding uses running statistics.")
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as error:  # fx raises many types for untraceable Python control flow
        raise OptimizationError(
            f"Cannot trace {type(model).__name__} with torch.fx to find conv -> BatchNorm pairs ({error}). "
            "Pass fold_bn=False to optimize it without folding."
        ) from error

    modules = dict(model.named_modules())
    pairs: list[tuple[str, str]] = []
    # A module called twice (shared weights) cannot be folded for one call site only.
    call_counts: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            call_counts[node.target] = call_counts.get(node.target, 0) + 1
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module"):
            continue
        conv = modules[source.target]
        if not isinstance(conv, nn.Conv2d) or len(source.users) != 1:
            continue
        if call_counts[source.target] != 1 or call_counts[node.target] != 1:
            continue
        if not modules[node.target].track_running_stats:
            continue  # a BN without running statistics normalises with batch statistics even in eval mode
        pairs.append((source.target, node.target))

    for conv_name, bn_name in pairs:
        fused = fuse_conv_bn_eval(modules[conv_name], modules[bn_name])
        _set_submodule(model, conv_name, fused)
        _set_submodule(model, bn_name, nn.Identity())
    logger.debug("Folded %d BatchNorm layers into convolutions.", len(pairs))
    return len(pairs)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


class _InputAdapter:
    """Forward pre-hook: casts floating inputs to the model's dtype and memory format.

    Without it, fp32 NCHW images given to a bf16 channels_last model fail with a dtype mismatch (or
    silently take the slower NCHW kernels). A class, not a closure, so the model still pickles.
    """

    def __init__(self, dtype: torch.dtype | None, channels_last: bool) -> None:
        self.dtype = dtype
        self.channels_last = channels_last

    def __call__(self, _module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return None
        images = args[0]
        if self.dtype is not None and images.dtype != self.dtype:
            images = images.to(self.dtype)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return (images, *args[1:])


class FreezingCompiled(nn.Module):
    """A ``torch.compile``'d inference copy, called with Inductor's ``freezing`` switched on.

    Freezing makes the weights constants of the compiled graph (pre-packed for oneDNN/cuDNN, folded once)
    instead of inputs read on every call: on a Zen 4 CPU it took resnet50 fp32 at batch 8 from 1.23x to
    1.40x torchvision eager (ONNX Runtime: 1.46x in the same run). The copy is for inference only.
    ``torch.compile(options={"freezing": True})`` is not enough: Dynamo decides while tracing, from the
    global ``torch._inductor.config``, whether parameters become constants, and the options reach only
    Inductor (measured: 704 ms instead of 611). So the global flag is set around each call (tracing happens
    inside the first one) and restored after it; costs ~4 us per call. Attributes other than the wrapper's
    own (``num_classes``, ``forward_features``, ...) come from the ResNet, at ``_orig_mod`` as on
    ``torch.compile``'s own wrapper.
    """

    def __init__(self, compiled: nn.Module) -> None:
        super().__init__()
        self.compiled = compiled

    @property
    def _orig_mod(self) -> nn.Module:
        return self.compiled._orig_mod

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("compiled")._orig_mod, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        inductor_config = torch._inductor.config
        previous = inductor_config.freezing
        inductor_config.freezing = True
        try:
            return self.compiled(*args, **kwargs)
        finally:
            inductor_config.freezing = previous


def optimize_for_inference(
    model: nn.Module,
    *,
    channels_last: bool = True,
    fold_bn: bool = True,
    dtype: torch.dtype | None = None,
    compile: str | bool | None = None,
) -> nn.Module:
    """An optimized copy of ``model`` for inference; ``model`` itself is left untouched.

    Args:
        model: a ResNet (or any module whose convolutions feed BatchNorms directly).
        channels_last: store weights (and convert inputs) in NHWC order, which the oneDNN (CPU) and
            cuDNN (GPU) convolution kernels prefer at ImageNet sizes. On a CPU with small inputs (64 px
            and below) and batches above 1, oneDNN's NHWC 3x3 kernels can be slower than NCHW (measured on
            Zen 4: 0.6-0.8x at 32 px); ``benchmarks/throughput.py`` shows which wins for your shapes.
        fold_bn: fold each BatchNorm into the convolution before it, including the projection
            shortcuts (``downsample.0/.1``); see ``fold_batchnorm``.
        dtype: ``torch.bfloat16`` or ``torch.float16`` to cast weights (and inputs); ``None`` keeps
            the model's dtype. Outputs then come in that dtype.
        compile: a ``torch.compile`` mode (``"default"``, ``"reduce-overhead"``, ``"max-autotune"``,
            ...) or ``True`` for the default mode; ``None``/``False`` does not compile. Inductor's
            ``freezing`` is switched on for its calls (see ``FreezingCompiled``): the weights become
            constants of the graph; it applies to calls under ``torch.inference_mode()``/``no_grad``.
            Compilation happens on the first call, which is slow (seconds to minutes).

    Returns:
        The model in eval mode with a forward pre-hook that converts floating inputs to its dtype and
        memory format (``forward_features``/``forward_head`` called directly bypass that hook). With
        ``compile`` it is a ``FreezingCompiled`` wrapper; the ResNet is at ``._orig_mod``. Its outputs
        match the original's within ``LOGIT_TOLERANCE[dtype]`` as measured by ``logit_error``.
    """
    if not isinstance(model, nn.Module):
        raise OptimizationError(f"optimize_for_inference expects a torch.nn.Module; got {type(model).__name__}.")
    if dtype is not None and dtype not in _SUPPORTED_DTYPES:
        raise OptimizationError(f"dtype must be one of torch.float32, torch.bfloat16, torch.float16 or None; got {dtype}.")
    if compile is not None and not isinstance(compile, (bool, str)):
        raise OptimizationError(f"compile must be a torch.compile mode string, True, False or None; got {compile!r}.")

    mode = "default" if compile is True else compile
    if compile:  # checked before any copying or tracing
        from torch._inductor import list_mode_options  # imports Inductor: only when compiling

        if mode not in list_mode_options():
            raise OptimizationError(
                f"Unknown torch.compile mode {mode!r}; use one of {', '.join(list_mode_options())} (or True)."
            )

    optimized = copy.deepcopy(model).eval()
    # Inference only: no autograd state in the parameters, so a forward never builds a graph by accident.
    for parameter in optimized.parameters():
        parameter.requires_grad_(False)
    applied: dict[str, Any] = {"fold_bn": False, "channels_last": channels_last, "dtype": None, "compile": None}
    if fold_bn:
        # Folding happens in fp32 before any cast: fusing in bf16 would round the scale twice.
        applied["fold_bn"] = fold_batchnorm(optimized)
    if dtype is not None:
        optimized.to(dtype)
        applied["dtype"] = str(dtype).removeprefix("torch.")
    if channels_last:
        optimized.to(memory_format=torch.channels_last)
    if channels_last or dtype is not None:
        optimized.register_forward_pre_hook(_InputAdapter(dtype, channels_last))

    # The Identity modules that replace folded BatchNorms are new, and in training mode like any new module.
    optimized.eval()
    # Saving would write folded weights under the original names, which no loader can rebuild.
    # hub.save_pretrained refuses a model carrying this: folded weights no longer fit the saved-folder format.
    optimized.inference_optimizations = applied
    if compile:
        applied["compile"] = mode
        optimized = FreezingCompiled(torch.compile(optimized, mode=None if mode == "default" else mode)).eval()
    logger.info("Optimized %s for inference: %s", type(model).__name__, applied)
    return optimized
