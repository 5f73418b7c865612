"""Fit a checkpoint to a model: strip wrapper prefixes, adapt the stem and the head, and say so.

Anything beyond these three known adaptations is an error that names the offending keys: a
silently half-loaded model is the worst outcome of fine-tuning.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from ..errors import StateDictMismatchError

__all__ = ["strip_prefixes", "adapt_input_conv", "fit_state_dict", "describe_key_mismatch"]

logger = logging.getLogger(__name__)

# DistributedDataParallel saves "module.*", torch.compile saves "_orig_mod.*"; either may wrap the other.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_STEM = "conv1.weight"
_HEAD = ("fc.weight", "fc.bias")


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stripped = {}
    for key, value in state_dict.items():
        new_key = key
        while new_key.startswith(_WRAPPER_PREFIXES):
            new_key = new_key.split(".", 1)[1]
        stripped[new_key] = value
    if any(a != b for a, b in zip(state_dict, stripped, strict=True)):
        logger.info("Stripped 'module.'/'_orig_mod.' prefixes from the checkpoint's keys.")
    return stripped


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt an RGB stem ``(out, 3, k, k)`` to ``in_chans`` input channels.

    One channel: the sum over RGB (a gray image is R = G = B, so the response is unchanged).
    Otherwise: repeat the RGB filters cyclically and rescale by ``3 / in_chans`` so that the
    activation scale stays that of the pretrained stem.
    """
    source_chans = weight.shape[1]
    if in_chans == source_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_chans / source_chans)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (source_chans / in_chans)


def fit_state_dict(state_dict: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Return a state dict that loads into ``model`` with ``strict=True``.

    Adapts (and logs): wrapper prefixes, the stem when ``in_chans`` differs, a head whose class
    count differs (kept from ``model``'s fresh initialisation). Raises ``StateDictMismatchError``
    naming every other missing, unexpected or mis-shaped key.
    """
    state_dict = strip_prefixes(state_dict)
    target = model.state_dict()

    stem = state_dict.get(_STEM)
    if stem is not None and _STEM in target and stem.shape[1] != target[_STEM].shape[1]:
        if stem.shape[0] != target[_STEM].shape[0] or stem.shape[2:] != target[_STEM].shape[2:]:
            raise StateDictMismatchError(f"{source}: conv1.weight has shape {tuple(stem.shape)}, model expects {tuple(target[_STEM].shape)}.")
        in_chans = target[_STEM].shape[1]
        state_dict[_STEM] = adapt_input_conv(stem, in_chans).to(stem.dtype)
        logger.info("Adapted conv1 of %s from %d to %d input channels.", source, stem.shape[1], in_chans)

    head_in_checkpoint = [k for k in _HEAD if k in state_dict]
    head_in_model = [k for k in _HEAD if k in target]
    head_fits = head_in_checkpoint == head_in_model and all(state_dict[k].shape == target[k].shape for k in head_in_model)
    if head_in_checkpoint and not head_fits:
        source_classes = state_dict["fc.weight"].shape[0] if "fc.weight" in state_dict else "?"
        model_classes = target["fc.weight"].shape[0] if "fc.weight" in target else 0
        feature_mismatch = (
            "fc.weight" in state_dict and "fc.weight" in target and state_dict["fc.weight"].shape[1] != target["fc.weight"].shape[1]
        )
        if not feature_mismatch:
            for key in head_in_checkpoint:
                del state_dict[key]
            for key in head_in_model:
                state_dict[key] = target[key]
            logger.info("Re-initialised the classifier head: %s classes in %s, %s in the model.", source_classes, source, model_classes)

    # Checkpoints saved before BatchNorm counted its batches lack this buffer; it is not learned.
    for key, value in target.items():
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = value

    mismatch = describe_key_mismatch({k: tuple(v.shape) for k, v in target.items()},
                                     {k: tuple(v.shape) for k, v in state_dict.items()})
    if mismatch:
        raise StateDictMismatchError(
            f"The weights in {source} do not fit this architecture: {mismatch}. Check that the model name (and "
            "groups/width overrides) match the checkpoint."
        )
    return state_dict


def describe_key_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]],
                          expected_by: str = "model", shown: int = 8) -> str | None:
    """``"2 missing: a, b; 1 mis-shaped: c (1, 2) vs model (3, 4)"`` for tensors by name and shape; None if equal."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [f"{k} {found[k]} vs {expected_by} {expected[k]}" for k in expected if k in found and found[k] != expected[k]]
    parts = [f"{len(keys)} {label}: " + ", ".join(keys[:shown]) + (f" ... (+{len(keys) - shown} more)" if len(keys) > shown else "")
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
    return "; ".join(parts) or None
