"""What the GPU pipeline and the benchmarks need to know about a dataset without loading it.

Each source module declares its own `DataShape` beside its loader (from the same constants the
loader uses), so a new dataset adds its shape in its own file; `harness.datasets.gpu.shapes`
collects them from the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DataShape:
    name: str
    channels: int  # after any grey -> RGB repeat (TissueMNIST, BloodMNIST are RGB here)
    stored_size: tuple[int, int]  # (H, W) of the uint8 images held on the device
    resize: tuple[int, int] | None  # applied on the device before augmentation
    num_classes: int
    train_size: int  # the paper protocol's split sizes (the module's EXPECTED_SIZES)
    val_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: tuple[dict[str, Any], ...] = ()  # the module's Table 2 TRAIN_AUGMENT; () = none
    batch_size: int = 128  # Table 1 (PAD-UFES-20: 64)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) the model sees."""
        size = self.resize or self.stored_size
        for op in self.augment:
            if op["op"] in ("pad_crop", "resized_crop"):
                size = (int(op["size"]), int(op["size"]))
        return size
