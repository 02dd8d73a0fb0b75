"""Training data on the accelerator: device-resident uint8 splits and batched augmentation.

`DeviceSplit` keeps a split's uint8 images on the device (or in shared host memory, streamed in
chunks) and serves batches by index; `BatchAugment` applies Table 2's augmentation to a whole
batch with per-sample random parameters and normalises it. Both run unchanged on the CPU.
"""

from __future__ import annotations

from harness.datasets.gpu.augment import VALID_OPS, BatchAugment, parse_size
from harness.datasets.gpu.split import DeviceSplit

__all__ = ["VALID_OPS", "BatchAugment", "DeviceSplit", "parse_size"]
