"""What the GPU pipeline needs to know about each dataset without loading it.

Image size as stored, channels the model receives, classes, paper-protocol split sizes, batch
size, normalisation and resize; the Table 2 augmentation spec is read from the dataset's own
module, so there is one source for it. Used by `harness bench` to time synthetic data of each
dataset's shape, and to turn step times into epoch times.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class DataShape:
    name: str
    channels: int  # after any grey -> RGB repeat (TissueMNIST, BloodMNIST are RGB here)
    stored_size: tuple[int, int]  # (H, W) of the uint8 images held on the device
    resize: tuple[int, int] | None  # applied on the device before augmentation
    num_classes: int
    train_size: int
    val_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment_source: (
        str | None
    )  # "module:ATTRIBUTE" holding the Table 2 spec; None = no augmentation
    batch_size: int = 128  # Table 1 (PAD-UFES-20: 64)

    def train_augment(self) -> tuple[dict[str, Any], ...]:
        if self.augment_source is None:
            return ()
        module, attribute = self.augment_source.split(":")
        return tuple(getattr(importlib.import_module(module), attribute))

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) the model sees."""
        size = self.resize or self.stored_size
        for op in self.train_augment():
            if op["op"] in ("pad_crop", "resized_crop"):
                size = (int(op["size"]), int(op["size"]))
        return size


# Split sizes: the paper protocol's (REFERENCE_NOTES.md "Protocol as run"; the datasets'
# EXPECTED_SIZES). SVHN without `extra` (the reference-code quirk merges it: 441,294 train).
SHAPES: dict[str, DataShape] = {
    shape.name: shape
    for shape in (
        DataShape("tinyimagenet", 3, (64, 64), None, 200, 77_000, 16_500, *IMAGENET, None),
        DataShape(
            "svhn",
            3,
            (32, 32),
            None,
            10,
            69_502,
            14_893,
            (0.4377, 0.4438, 0.4728),
            (0.1980, 0.2010, 0.1970),
            None,
        ),
        DataShape(
            "cifar10",
            3,
            (32, 32),
            None,
            10,
            42_000,
            9_000,
            (0.4914, 0.4822, 0.4465),
            (0.2023, 0.1994, 0.2010),
            "harness.datasets.cifar10:TRAIN_AUGMENT",
        ),
        DataShape(
            "fashionmnist",
            1,
            (28, 28),
            None,
            10,
            49_000,
            10_500,
            (0.2860,),
            (0.3530,),
            "harness.datasets.fashionmnist:TRAIN_AUGMENT",
        ),
        DataShape(
            "tissuemnist",
            3,
            (28, 28),
            (64, 64),
            8,
            165_466,
            23_640,
            *IMAGENET,
            "harness.datasets.medmnist_sets:TRAIN_AUGMENT",
        ),
        DataShape(
            "bloodmnist",
            3,
            (28, 28),
            (64, 64),
            8,
            11_959,
            1_712,
            *IMAGENET,
            "harness.datasets.medmnist_sets:TRAIN_AUGMENT",
        ),
        DataShape("pcam", 3, (96, 96), None, 2, 262_144, 32_768, *IMAGENET, None),
        DataShape(
            "padufes20",
            3,
            (224, 224),
            (224, 224),
            6,
            1_608,
            345,
            *IMAGENET,
            "harness.datasets.padufes20:TRAIN_AUGMENT",
            batch_size=64,
        ),
    )
}


def get_shape(name: str) -> DataShape:
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown dataset shape {name!r}; valid: {', '.join(SHAPES)}") from None
