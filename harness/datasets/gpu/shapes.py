"""Each dataset's `DataShape`, collected from its source module through the registry.

Used by `harness bench` to time synthetic data of each dataset's shape, and to turn step times
into epoch times. The embedded digits set has no shape (it is not benchmarked).
"""

from __future__ import annotations

from harness.datasets import DATASET_NAMES, get_source
from harness.datasets.shape import DataShape

__all__ = ["SHAPES", "DataShape", "get_shape"]

SHAPES: dict[str, DataShape] = {
    name: shape for name in DATASET_NAMES if (shape := get_source(name).shape) is not None
}


def get_shape(name: str) -> DataShape:
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown dataset shape {name!r}; valid: {', '.join(SHAPES)}") from None
