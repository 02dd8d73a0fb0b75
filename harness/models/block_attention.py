"""Intra-block attention modules for the SE- and CBAM-ResNet-18 baselines.

Both act on the residual branch of a BasicBlock, before the shortcut addition. All their
layers are bias-free, as in the authors' notebooks and the original SE/CBAM papers' MLPs.
The ReLUs here are not in-place: a full backward hook on the Linear in front of them (the
gradient-health measurement hooks every Linear) must not see its output modified in place.
"""

from __future__ import annotations

import torch
from torch import nn


def _reduced_width(channels: int, reduction: int) -> int:
    if reduction < 1:
        raise ValueError(f"reduction must be a positive integer, got {reduction}")
    if channels < reduction:
        raise ValueError(
            f"reduction {reduction} leaves no hidden units for {channels} channels; "
            f"use a reduction of at most {channels}"
        )
    return channels // reduction


class SqueezeExcitation(nn.Module):
    """avg-pool -> Linear(C, C/r) -> ReLU -> Linear(C/r, C) -> sigmoid -> channel scale."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _reduced_width(channels, reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=(2, 3))
        scale = torch.sigmoid(self.fc2(self.relu(self.fc1(squeezed))))
        return x * scale[:, :, None, None]


class ChannelAttention(nn.Module):
    """CBAM channel attention: one shared MLP over the avg- and max-pooled descriptors, summed."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _reduced_width(channels, reduction)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, channels, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        # Both descriptors go through the MLP in one call: the same result as two calls, and a
        # hook on the MLP's Linears fires once per forward pass rather than twice.
        descriptors = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=0)
        logits = self.mlp(descriptors)
        scale = torch.sigmoid(logits[:batch] + logits[batch:])
        return x * scale[:, :, None, None]


class SpatialAttention(nn.Module):
    """CBAM spatial attention: [mean, max] over channels -> k x k conv (2 -> 1) -> sigmoid."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"spatial_kernel must be a positive odd integer, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention."""

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
