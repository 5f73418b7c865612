"""Which pretrained weights exist: read from torchvision's own weights enums, never copied by hand.

torchvision already records, for every checkpoint, its URL (whose file name carries a SHA-256
prefix), ImageNet metrics, parameter count, compute and evaluation transform. We wrap each enum
member in a small ``WeightsRecord`` with the fields resnetzoo needs and resolve the many ways a
user may say which weights they want.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import UnknownWeightsError, WeightsFileError
from ..registry import get_variant

__all__ = ["WeightsRecord", "weights_records", "default_record", "resolve_pretrained", "preprocessing_record",
           "WEIGHTS_SUFFIXES"]

WEIGHTS_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")

# torchvision names its files <stem>-<first 8+ hex digits of the SHA-256>.<ext> (torch.hub's convention).
_HASH_IN_FILENAME = re.compile(r"-([a-f0-9]{8,})\.")


@dataclass(frozen=True)
class WeightsRecord:
    """One published checkpoint of one architecture."""

    model_name: str
    tag: str  # e.g. "IMAGENET1K_V2"
    url: str
    num_params: int
    acc1: float | None
    acc5: float | None
    gflops: float | None  # torchvision's "_ops" (multiply-accumulates, in billions)
    file_size_mb: float | None
    categories: tuple[str, ...]
    enum_member: Any  # the torchvision WeightsEnum member, for its transforms

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        match = _HASH_IN_FILENAME.search(self.filename)
        if match is None:  # every torchvision ResNet file has one; refuse to trust a file we cannot check
            raise ValueError(f"{self.filename} carries no SHA-256 prefix in its name.")
        return match.group(1)

    @property
    def full_name(self) -> str:
        return f"{self.model_name}.{self.tag}"

    def eval_transform_config(self) -> dict[str, Any]:
        """The evaluation preprocessing these weights were measured with (V2: resize 232, V1: 256; crop 224)."""
        preset = self.enum_member.transforms()
        return {
            "resize_size": int(preset.resize_size[0]),
            "crop_size": int(preset.crop_size[0]),
            "mean": [float(v) for v in preset.mean],
            "std": [float(v) for v in preset.std],
            "interpolation": preset.interpolation.value,
        }


def _model_weights(model_name: str) -> Any:
    """torchvision's weights enum for a model. Imported here, not at the top: torchvision takes about 1.5 s to
    import, and `import resnetzoo` should not pay that before weights are asked for."""
    from torchvision.models import get_model_weights

    return get_model_weights(model_name.lower())


def _record(model_name: str, member: Any) -> WeightsRecord:
    meta = member.meta
    metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
    return WeightsRecord(
        model_name=model_name,
        tag=member.name,
        url=member.url,
        num_params=int(meta["num_params"]),
        acc1=metrics.get("acc@1"),
        acc5=metrics.get("acc@5"),
        gflops=meta.get("_ops"),
        file_size_mb=meta.get("_file_size"),
        categories=tuple(meta.get("categories") or ()),
        enum_member=member,
    )


@cache
def weights_records(model_name: str) -> tuple[WeightsRecord, ...]:
    """Every published checkpoint for a registered model, in torchvision's order (V1 first)."""
    get_variant(model_name)  # unknown names raise with suggestions, not torchvision's bare error
    enum_cls = _model_weights(model_name)
    return tuple(_record(model_name.lower(), member) for member in enum_cls)


def default_record(model_name: str) -> WeightsRecord:
    """torchvision's ``DEFAULT`` weights: IMAGENET1K_V2 where it exists, else V1."""
    get_variant(model_name)  # unknown names raise with suggestions, not torchvision's bare error
    default_member = _model_weights(model_name).DEFAULT
    return next(r for r in weights_records(model_name) if r.tag == default_member.name)


def _record_for_tag(model_name: str, tag: str) -> WeightsRecord:
    wanted = tag.strip()
    # Accept torchvision's spelling too: "ResNet50_Weights.IMAGENET1K_V2".
    if "." in wanted and not wanted.lower().startswith("imagenet"):
        wanted = wanted.rsplit(".", 1)[-1]
    if wanted.upper() == "DEFAULT":
        return default_record(model_name)
    for record in weights_records(model_name):
        if record.tag.upper() == wanted.upper():
            return record
    raise UnknownWeightsError(model_name, tag, [r.tag for r in weights_records(model_name)])


def _is_weights_enum(value: Enum) -> bool:
    from torchvision.models import WeightsEnum

    return isinstance(value, WeightsEnum)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(WEIGHTS_SUFFIXES) or Path(value).exists()


def preprocessing_record(model_name: str, pretrained: Any) -> WeightsRecord | None:
    """The published weights whose eval transform data should follow, or None.

    A weights file (``pretrained=Path``) records no preprocessing, so it gets the dataset's default, as
    random init does; only a published tag says how its images were resized and normalised.
    """
    resolved = resolve_pretrained(model_name, pretrained)
    return resolved if isinstance(resolved, WeightsRecord) else None


def resolve_pretrained(model_name: str, pretrained: Any) -> WeightsRecord | Path | None:
    """Turn any accepted ``pretrained=`` value into a record of published weights, a file path, or None.

    Accepted: ``False``/``None`` (no weights), ``True`` (torchvision's default tag), a tag string
    such as ``"IMAGENET1K_V1"`` (any case), a torchvision ``Weights`` enum member, or a path to a
    ``.pth``/``.pt``/``.safetensors`` state dict.
    """
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        return default_record(model_name)
    if isinstance(pretrained, Enum) and _is_weights_enum(pretrained):
        expected_enum = _model_weights(model_name)
        if not isinstance(pretrained, expected_enum):
            raise UnknownWeightsError(
                model_name, str(pretrained), [r.tag for r in weights_records(model_name)]
            )
        return _record_for_tag(model_name, pretrained.name)
    if isinstance(pretrained, os.PathLike) or (isinstance(pretrained, str) and _looks_like_path(pretrained)):
        path = Path(pretrained).expanduser()
        if path.is_dir():
            raise WeightsFileError(
                path, "it is a folder, and pretrained= takes a weights file.",
                f"For a folder written by save_pretrained() or a training run, load it whole with "
                f"resnetzoo.create({str(path)!r}), or pass its weights file: pretrained={str(path / 'model.safetensors')!r}.",
            )
        if not path.is_file():
            raise WeightsFileError(path, "no such file.", "Check the path, or pass a weights tag such as 'IMAGENET1K_V1'.")
        return path
    if isinstance(pretrained, str):
        return _record_for_tag(model_name, pretrained)
    raise TypeError(
        f"pretrained must be a bool, a weights tag, a torchvision Weights member or a file path; got {type(pretrained).__name__}."
    )
