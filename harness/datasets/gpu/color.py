"""Per-sample colour adjustments on float images in [0, 1], as torchvision's adjust_* define them.

Each function takes a batch (N, C, H, W) and one factor per sample. Saturation and hue leave
single-channel images unchanged, as torchvision does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
LUMA = (0.2989, 0.587, 0.114)


def _per_sample(factor: torch.Tensor) -> torch.Tensor:
    return factor.view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = _per_sample(factor)
    return (factor * x + (1.0 - factor) * other).clamp_(0.0, 1.0)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of RGB images (the image itself when it has one channel)."""
    if x.shape[1] == 1:
        return x
    red, green, blue = x.unbind(dim=1)
    return (LUMA[0] * red + LUMA[1] * green + LUMA[2] * blue).unsqueeze(1)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), factor)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, factor)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return _blend(x, grayscale(x), factor)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> HSV with hue in [0, 1)."""
    red, green, blue = x.unbind(dim=1)
    value, _ = x.max(dim=1)
    low, _ = x.min(dim=1)
    chroma = value - low
    grey = chroma == 0
    sat = chroma / torch.where(value == 0, torch.ones_like(value), value)
    safe = torch.where(grey, torch.ones_like(chroma), chroma)
    # Hue sector by which channel is largest (red wins ties, then green), in sixths of a turn.
    hue = torch.where(
        value == red,
        (green - blue) / safe,
        torch.where(value == green, 2.0 + (blue - red) / safe, 4.0 + (red - green) / safe),
    )
    hue = torch.where(grey, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6.0, 1.0)
    return torch.stack((hue, sat, value), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    hue, sat, value = x.unbind(dim=1)
    channels = []
    for offset in (5.0, 3.0, 1.0):  # red, green, blue
        k = torch.remainder(offset + hue * 6.0, 6.0)
        ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
        channels.append(value - value * sat * ramp)
    return torch.stack(channels, dim=1).clamp_(0.0, 1.0)


def hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    hsv = rgb_to_hsv(x)
    shifted = torch.remainder(hsv[:, :1] + _per_sample(factor), 1.0)
    return hsv_to_rgb(torch.cat((shifted, hsv[:, 1:]), dim=1))


# ColorJitter's ops, in torchvision's order of names.
OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "brightness": brightness,
    "contrast": contrast,
    "saturation": saturation,
    "hue": hue,
}


def identity_factor(name: str) -> float:
    """The factor that leaves an image unchanged (0 for hue, 1 for the others)."""
    return 0.0 if name == "hue" else 1.0
