"""Model size and compute: parameters and multiply-accumulates (MACs) of one forward pass."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_parameters", "count_macs", "module_macs"]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def module_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one convolution or linear layer call that produced ``output``; 0 for other layers."""
    if isinstance(module, nn.Conv2d):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        return output.numel() * kernel * module.in_channels // module.groups
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def count_macs(model: nn.Module, image_size: int = 224, in_chans: int | None = None) -> int:
    """Multiply-accumulates of convolutions and linear layers for one image (what torchvision calls GFLOPS).

    Counted from the output shapes seen by forward hooks on a meta-device copy, so it costs no
    memory or compute. BatchNorm, ReLU, pooling and additions are left out, as in torchvision.
    """
    if in_chans is None:
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        in_chans = first_conv.in_channels
    total = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += module_macs(module, output)

    import copy

    meta_model = copy.deepcopy(model).to("meta").eval()
    handles = [module.register_forward_hook(hook) for module in meta_model.modules()
               if isinstance(module, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        meta_model(torch.empty(1, in_chans, image_size, image_size, device="meta"))
    for handle in handles:
        handle.remove()
    return total
