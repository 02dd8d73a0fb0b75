"""Table 2's preprocessing as torchvision.transforms.v2 pipelines, built from the dataset's
metadata (`meta.train_augment` is data, so a GPU pipeline can read the same spec).

One CHW uint8 tensor in, one normalized float32 CHW tensor out. Validation and test get only
the resize (when `meta.resize`) and normalization; augmentation only when `train=True`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from harness.datasets._core import DatasetMeta, Split

# Reference-code quirk 1 hits only these sets, and only their training split.
CORRUPTED_SETS = ("fashionmnist", "cifar10")
AUGMENT_OPS = ("hflip", "rotate", "affine", "pad_crop", "color_jitter", "resized_crop")


def augmentation(spec: Mapping[str, Any]) -> v2.Transform:
    """One Table 2 operation from its plain-dict form."""
    op = spec.get("op")
    if op == "hflip":
        return v2.RandomHorizontalFlip(p=float(spec.get("p", 0.5)))
    if op == "rotate":
        return v2.RandomRotation(degrees=float(spec["degrees"]))
    if op == "affine":
        return v2.RandomAffine(degrees=0, translate=tuple(spec["translate"]))
    if op == "pad_crop":
        return v2.RandomCrop(int(spec["size"]), padding=int(spec["padding"]))
    if op == "color_jitter":
        return v2.ColorJitter(
            brightness=spec.get("brightness", 0),
            contrast=spec.get("contrast", 0),
            saturation=spec.get("saturation", 0),
            hue=spec.get("hue", 0),
        )
    if op == "resized_crop":
        return v2.RandomResizedCrop(int(spec["size"]), scale=tuple(spec["scale"]), antialias=True)
    raise ValueError(f"unknown augmentation op {op!r}; valid ops: {', '.join(AUGMENT_OPS)}")


class WrapAroundUint8(torch.nn.Module):
    """The authors' bug (REFERENCE_NOTES quirk 1), as torchvision's ToPILImage does it on a
    normalized float tensor: multiply by 255 and cast to uint8. The cast truncates toward zero
    and wraps modulo 256, written out here so the result does not depend on the platform."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.normalize = v2.Normalize(list(mean), list(std))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        normalized = self.normalize(image.to(torch.float32) / 255.0)
        scaled = torch.trunc(normalized * 255.0).to(torch.int64)
        return torch.remainder(scaled, 256).to(torch.uint8)


def build_transform(
    meta: DatasetMeta, train: bool, quirks: Mapping[str, bool] | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The pipeline for one split of `meta`'s dataset.

    quirks: `corrupt_train_images` reproduces reference-code quirk 1 (training split of
    FashionMNIST and CIFAR-10 only; ignored elsewhere, as the notebooks of the other sets
    did not have the bug).
    """
    quirks = quirks or {}
    steps: list[Any] = [v2.ToImage()]
    if train and quirks.get("corrupt_train_images") and meta.name in CORRUPTED_SETS:
        steps.append(WrapAroundUint8(meta.mean, meta.std))
    if meta.resize is not None:
        steps.append(v2.Resize(list(meta.resize), antialias=True))
    if train:
        steps += [augmentation(spec) for spec in meta.train_augment]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(meta.mean), list(meta.std))]
    pipeline = v2.Compose(steps)

    def transform(image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise ValueError(
                f"expected one CHW uint8 image tensor, got {tuple(image.shape)} {image.dtype}"
            )
        return pipeline(image).as_subclass(torch.Tensor)

    return transform


class TorchSplit(Dataset):
    """A split as a torch Dataset yielding (normalized float tensor, int label)."""

    def __init__(self, split: Split, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.ascontiguousarray(self.split.images[index]))
        return self.transform(image), int(self.split.labels[index])
