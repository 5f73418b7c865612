"""The ResNet family, built by hand.

Parameter and buffer names are the checkpoint format: they match torchvision's
``torchvision.models.resnet`` exactly (``conv1``, ``bn1``, ``layer1..4``, ``downsample.0/.1``,
``fc``), so a torchvision state dict loads here with ``strict=True`` and no renaming.

Nothing in this module knows about files, URLs or names of variants; see ``registry`` for the
table of variants and ``weights`` for loading checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    # No bias: every conv is followed by BatchNorm, whose shift makes a bias redundant.
    return nn.Conv2d(
        in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
        groups=groups, bias=False, dilation=dilation,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34)."""

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and width_per_group=64; use Bottleneck for ResNeXt/Wide.")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        # In place, as torchvision does: a new tensor per block costs ~4% of resnet50's CPU time (allocation
        # and page faults for each large activation); autograd allows it, the BN backward needs its input only.
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand, and a shortcut (ResNet-50 and deeper, ResNeXt, Wide ResNet).

    The stride sits on the 3x3 convolution ("ResNet v1.5", as torchvision): it keeps more
    spatial information than striding the first 1x1 and is what torchvision's weights expect.
    """

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity  # in place: see BasicBlock.forward
        return self.relu(out)


class ResNet(nn.Module):
    """A ResNet classifier: stem, four stages of residual blocks, global average pool, linear head.

    Args:
        in_channels: channels of the input images (3 for RGB).
        num_classes: size of the classifier head; 0 replaces the head by an identity.
        block: ``BasicBlock`` or ``Bottleneck``.
        num_layers: number of blocks in each of the four stages, e.g. ``[3, 4, 6, 3]``.
        groups: grouped-convolution cardinality of the 3x3 convs (ResNeXt: 32 or 64).
        width_per_group: channels per group (64 for ResNet, 4 or 8 for ResNeXt, 128 for Wide ResNet).
        zero_init_residual: start each residual branch's last BatchNorm at zero, so that each block
            begins as an identity; helps training from scratch (Goyal et al., 2017).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock,
        num_layers: Sequence[int] = (2, 2, 2, 2),
        groups: int = 1,
        width_per_group: int = 64,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(num_layers) != 4:
            raise ValueError(f"num_layers must give four stages, e.g. [2, 2, 2, 2]; got {list(num_layers)}.")
        if in_channels < 1 or num_classes < 0:
            raise ValueError(f"in_channels must be >= 1 and num_classes >= 0; got {in_channels} and {num_classes}.")
        self.in_channels = in_channels
        self.groups = groups
        self.base_width = width_per_group
        self.inplanes = 64

        self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(block, 64, num_layers[0])
        self.layer2 = self._make_stage(block, 128, num_layers[1], stride=2)
        self.layer3 = self._make_stage(block, 256, num_layers[2], stride=2)
        self.layer4 = self._make_stage(block, 512, num_layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features: int = 512 * block.expansion
        self.num_classes: int = num_classes
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        self._init_weights(zero_init_residual)

    def _make_stage(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            # Projection shortcut: a strided 1x1 conv + BN when the residual changes shape.
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # Same scheme as torchvision, so a model trained from scratch behaves like theirs.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before pooling: ``(N, num_features, H/32, W/32)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool a feature map and classify it; ``pre_logits=True`` returns the pooled features."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a freshly initialised one with ``num_classes`` outputs (0: no head)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0; got {num_classes}.")
        device = self.conv1.weight.device
        dtype = self.conv1.weight.dtype
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes, device=device, dtype=dtype) if num_classes > 0 else nn.Identity()
        config = getattr(self, "config", None)  # attached by resnetzoo.create; keep it describing this model
        if config is not None:
            config.num_classes = num_classes
            config.class_names = None

    def save_pretrained(self, folder: str | os.PathLike, **kwargs: Any) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ README.md) to ``folder``; ``resnetzoo.create(folder)``
        rebuilds it. Keyword options (``metrics=``, ``model_card=``) are those of ``resnetzoo.hub.save_pretrained``."""
        from .hub import save_pretrained  # files are the hub module's business, not the model's

        return save_pretrained(self, folder, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload to the Hugging Face Hub as ``repo_id`` ("org/name"); returns the commit URL.

        ``resnetzoo.create("hf-hub:" + repo_id)`` loads it back. Keyword options (``revision``,
        ``private``, ``token``, ``commit_message``, ``create_pr``) are those of ``resnetzoo.hub.push_to_hub``.
        """
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)
