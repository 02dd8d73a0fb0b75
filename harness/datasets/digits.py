"""scikit-learn's embedded digits (1,797 8x8 images, 10 classes): no download, no files.

It lets the whole loop (demo, tests) run offline on the CPU. Pixel values 0..16 become uint8
by round(v * 255 / 16). No augmentation; 70/15/15 by `split_seed` (1,257/270/270).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets._core import DatasetMeta, LoadedDataset, completeness, digest_splits
from harness.datasets._source import Source
from harness.datasets.splits import random_split

# Mean and std of all 1,797 images after scaling to [0, 1]; tests recompute them from the data.
MEAN = (0.3053,)
STD = (0.3759,)
EXPECTED_SIZES = (1_257, 270, 270)


def raw_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 1, 8, 8) uint8 images and int64 labels, in scikit-learn's order."""
    values = _digits_csv()
    images = np.round(values[:, :-1].reshape(-1, 8, 8) * 255.0 / 16.0).astype(np.uint8)
    return images[:, None, :, :], values[:, -1].astype(np.int64)


def _digits_csv() -> np.ndarray:
    """The (1797, 65) table behind sklearn.datasets.load_digits (64 pixels, then the label).

    Read from the file scikit-learn ships, without importing scikit-learn: its import takes
    seconds, which every worker process would pay before its first digits job."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as handle:
                return np.loadtxt(handle, delimiter=",")
    from sklearn.datasets import load_digits  # a layout this reader does not know

    bunch = load_digits()
    return np.column_stack([bunch.data, bunch.target])


class DigitsSource(Source):
    name = "digits"
    label = "Digits (embedded)"

    def required_files(self, root: Path, **options: Any) -> list[Path]:
        return []

    def fetch(self, root: Path, mirror: str | None = None) -> None:
        return None  # embedded in scikit-learn

    def size_on_disk(self, root: Path) -> int:
        return 0

    def _load(self, root: Path, split_seed: int, protocol: str, **options: Any) -> LoadedDataset:
        images, labels = raw_arrays()
        train, val, test = random_split(images, labels, split_seed)
        sizes = (len(train), len(val), len(test))
        meta = DatasetMeta(
            name=self.name,
            num_classes=10,
            channels=1,
            image_size=(8, 8),
            class_names=tuple(str(d) for d in range(10)),
            mean=MEAN,
            std=STD,
            resize=None,
            train_augment=(),
            digest=digest_splits((train, val, test), extra=self.name),
            source="sklearn.datasets.load_digits (embedded); 70/15/15 by split_seed",
            split_seed=split_seed,
            protocol=protocol,
            complete=completeness(self.name, sizes, EXPECTED_SIZES),
        )
        return LoadedDataset(train, val, test, meta)


SOURCE = DigitsSource()
