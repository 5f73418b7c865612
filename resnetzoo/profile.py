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

    Counted from the output shapes seen by forward hooks while the model runs on meta tensors
    (``torch.func.functional_call`` with meta stand-ins for its weights): no copy of the model, no memory for
    activations, no arithmetic. BatchNorm, ReLU, pooling and additions are left out, as in torchvision.
    """
    if in_chans is None:
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        in_chans = first_conv.in_channels
    total = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += module_macs(module, output)

    meta_state = {name: torch.empty_like(tensor, device="meta")
                  for name, tensor in [*model.named_parameters(), *model.named_buffers()]}
    handles = [module.register_forward_hook(hook) for module in model.modules()
               if isinstance(module, nn.Conv2d | nn.Linear)]
    try:
        with torch.no_grad():
            # Two images, not one: a model left in training mode has BatchNorms that refuse a single value per
            # channel (a 1x1 map at the last stage). MACs grow linearly with the batch, so half is one image's.
            images = torch.empty(2, in_chans, image_size, image_size, device="meta")
            torch.func.functional_call(model, meta_state, (images,))
    finally:
        for handle in handles:
            handle.remove()
    return total // 2
