"""The one ResNet-18 implementation behind resnet18, se_resnet18, cbam_resnet18 and the GradAttn
backbone. The variants differ only by configuration: whether blocks keep their shortcut and
which attention module (if any) sits on the residual branch.

Module names follow torchvision.models.resnet18 (conv1, bn1, layer1..4, downsample.0/1, fc), so
the plain ResNet-18's state_dict has torchvision's keys and shapes, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# Builds the attention module of one block from its output channel count.
BlockAttentionFactory = Callable[[int], nn.Module]

STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = (2, 2, 2, 2)
STEM_WIDTH = 64


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU-3x3 conv-BN [-attention] [+ shortcut] -ReLU.

    With `skip=False` the block has neither an identity nor a projection shortcut, and becomes
    conv-BN-ReLU-conv-BN-ReLU (the GradAttn backbone block).
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        skip: bool = True,
        attention: BlockAttentionFactory | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.attention = attention(out_channels) if attention is not None else None
        self.skip = skip
        self.downsample: nn.Module | None = None
        if skip and (stride != 1 or in_channels != out_channels):
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.attention is not None:
            out = self.attention(out)
        if self.skip:
            identity = self.downsample(x) if self.downsample is not None else x
            out = out + identity
        return self.relu(out)


class ResNet(nn.Module):
    """ImageNet-style ResNet-18: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool, 4 stages of 2 blocks.

    `num_classes=None` builds a headless backbone (no avgpool/fc), as GradAttn uses it.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int | None,
        *,
        skip: bool = True,
        attention: BlockAttentionFactory | None = None,
    ) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        if num_classes is not None:
            _check_positive("num_classes", num_classes)
        self.conv1 = nn.Conv2d(in_channels, STEM_WIDTH, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        width = STEM_WIDTH
        for index, (out_width, blocks) in enumerate(
            zip(STAGE_WIDTHS, BLOCKS_PER_STAGE, strict=True), 1
        ):
            stride = 1 if index == 1 else 2
            stage = [BasicBlock(width, out_width, stride, skip=skip, attention=attention)]
            stage += [
                BasicBlock(out_width, out_width, 1, skip=skip, attention=attention)
                for _ in range(blocks - 1)
            ]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            width = out_width
        self.avgpool: nn.Module | None = None
        self.fc: nn.Linear | None = None
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's ResNet initialisation; Linear layers keep PyTorch's default.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels after the max-pool and after each stage (GradAttn's five token sources)."""
        return (STEM_WIDTH, *STAGE_WIDTHS)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature map after the max-pool, then after each of the four stages."""
        maps = [self.stem(x)]
        for stage in self.stages:
            maps.append(stage(maps[-1]))
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc is None:
            raise RuntimeError("a headless ResNet backbone has no classifier; use feature_maps()")
        features = self.feature_maps(x)[-1]
        return self.fc(torch.flatten(self.avgpool(features), 1))


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
