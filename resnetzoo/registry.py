"""Names -> architectures. Variants are data: one table, not a builder function per model."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass

from .errors import UnknownModelError
from .model import BasicBlock, Bottleneck

__all__ = ["Variant", "VARIANTS", "list_models", "get_variant"]


@dataclass(frozen=True)
class Variant:
    """The shape of one ResNet-family architecture; ``ResNet(**variant.kwargs())`` builds it."""

    block: type[BasicBlock] | type[Bottleneck]
    layers: tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64

    def kwargs(self) -> dict:
        return {
            "block": self.block,
            "num_layers": list(self.layers),
            "groups": self.groups,
            "width_per_group": self.width_per_group,
        }


# Names are torchvision's, so its weights enums (torchvision.models.get_model_weights(name)) apply as they are.
VARIANTS: dict[str, Variant] = {
    "resnet18": Variant(BasicBlock, (2, 2, 2, 2)),
    "resnet34": Variant(BasicBlock, (3, 4, 6, 3)),
    "resnet50": Variant(Bottleneck, (3, 4, 6, 3)),
    "resnet101": Variant(Bottleneck, (3, 4, 23, 3)),
    "resnet152": Variant(Bottleneck, (3, 8, 36, 3)),
    "resnext50_32x4d": Variant(Bottleneck, (3, 4, 6, 3), groups=32, width_per_group=4),
    "resnext101_32x8d": Variant(Bottleneck, (3, 4, 23, 3), groups=32, width_per_group=8),
    "resnext101_64x4d": Variant(Bottleneck, (3, 4, 23, 3), groups=64, width_per_group=4),
    # Wide ResNet: the bottleneck is twice as wide; the block's output channels stay the same.
    "wide_resnet50_2": Variant(Bottleneck, (3, 4, 6, 3), width_per_group=64 * 2),
    "wide_resnet101_2": Variant(Bottleneck, (3, 4, 23, 3), width_per_group=64 * 2),
}


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard, e.g. ``"resnext*"``, in registry order."""
    return [name for name in VARIANTS if fnmatch.fnmatchcase(name, pattern.lower())]


def get_variant(name: str) -> Variant:
    """The architecture registered under ``name``; an unknown name raises with close matches."""
    key = name.lower()
    if key not in VARIANTS:
        raise UnknownModelError(name, close_matches(key, VARIANTS))
    return VARIANTS[key]


def close_matches(word: str, candidates, n: int = 3) -> list[str]:
    """Up to ``n`` candidates spelled like ``word`` (difflib ratio), best first; prefixes count too."""
    candidates = list(candidates)
    matches = difflib.get_close_matches(word, candidates, n=n, cutoff=0.6)
    for candidate in candidates:
        if len(matches) >= n:
            break
        if candidate not in matches and word and (candidate.startswith(word) or word in candidate):
            matches.append(candidate)
    return matches
