"""Datasets of the GradAttn benchmark: one module per source, one split helper, Table 2's
transforms, and a registry.

    >>> ds = load("digits", root="data", split_seed=42)
    >>> ds.train.images.shape, ds.meta.num_classes
    ((1257, 1, 8, 8), 10)

This package never imports `harness`; it raises `DatasetError` (a ValueError) with one line
naming the problem and the fix, which the command line turns into its own error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets._core import DatasetError, DatasetMeta, LoadedDataset, Split
from datasets._source import FileStatus, Source

# The paper's eight, in Table 3's order; then the embedded set.
PAPER_DATASETS = (
    "tinyimagenet",
    "svhn",
    "cifar10",
    "fashionmnist",
    "tissuemnist",
    "bloodmnist",
    "pcam",
    "padufes20",
)
DATASET_NAMES = (*PAPER_DATASETS, "digits")

__all__ = [
    "DATASET_NAMES",
    "DatasetError",
    "DatasetMeta",
    "FileStatus",
    "LoadedDataset",
    "PAPER_DATASETS",
    "Source",
    "Split",
    "TorchSplit",
    "build_transform",
    "get_source",
    "load",
]


def get_source(name: str) -> Source:
    """The source object of one dataset (fetch, verify, files on disk, load)."""
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    # Imported on demand: `harness data list` must not pay for torchvision/medmnist/h5py.
    if name == "cifar10":
        from datasets.cifar10 import SOURCE
    elif name == "svhn":
        from datasets.svhn import SOURCE
    elif name == "fashionmnist":
        from datasets.fashionmnist import SOURCE
    elif name == "tissuemnist":
        from datasets.medmnist_sets import TISSUE as SOURCE
    elif name == "bloodmnist":
        from datasets.medmnist_sets import BLOOD as SOURCE
    elif name == "pcam":
        from datasets.pcam import SOURCE
    elif name == "tinyimagenet":
        from datasets.tinyimagenet import SOURCE
    elif name == "padufes20":
        from datasets.padufes20 import SOURCE
    else:
        from datasets.digits import SOURCE
    return SOURCE


def load(
    name: str,
    root: str | Path,
    split_seed: int = 42,
    protocol: str = "paper",
    download: bool = False,
    **options: Any,
) -> LoadedDataset:
    """Load one dataset's train/val/test splits and metadata.

    `options` are per-source: svhn `merge_extra`, tissuemnist/bloodmnist `medmnist_size`,
    padufes20 `patient_split`; an unknown option raises ValueError listing the valid ones.
    """
    return get_source(name).load(Path(root), split_seed, protocol, download, **options)


def __getattr__(attr: str) -> Any:
    # The transforms pull in torchvision; import them only when asked for.
    if attr in ("build_transform", "TorchSplit"):
        from datasets import transforms

        return getattr(transforms, attr)
    raise AttributeError(f"module 'datasets' has no attribute {attr!r}")
