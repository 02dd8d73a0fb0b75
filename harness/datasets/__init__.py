"""Datasets of the GradAttn benchmark: one module per source, one split helper, Table 2's
transforms, and a registry.

    >>> ds = load("digits", root="data", split_seed=42)
    >>> ds.train.images.shape, ds.meta.num_classes
    ((1257, 1, 8, 8), 10)

This package never imports `harness`; it raises `DatasetError` (a ValueError) with one line
naming the problem and the fix, which the command line turns into its own error.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from harness.datasets._core import DatasetError, DatasetMeta, LoadedDataset, Split
from harness.datasets._source import FileStatus, Source

# The registry: one line per dataset, name -> "module:SOURCE". A source module holds the
# download spec (URLs, checksums), split, transforms, shapes and paper name beside its loader;
# everything else (CLI choices, Table 2 shapes, the fetch list) derives from this table.
# Imported on demand: `harness data list` must not pay for torchvision/medmnist/h5py.
REGISTRY: dict[str, str] = {
    "tinyimagenet": "harness.datasets.tinyimagenet:SOURCE",
    "svhn": "harness.datasets.svhn:SOURCE",
    "cifar10": "harness.datasets.cifar10:SOURCE",
    "fashionmnist": "harness.datasets.fashionmnist:SOURCE",
    "tissuemnist": "harness.datasets.medmnist_sets:TISSUE",
    "bloodmnist": "harness.datasets.medmnist_sets:BLOOD",
    "pcam": "harness.datasets.pcam:SOURCE",
    "padufes20": "harness.datasets.padufes20:SOURCE",
    "digits": "harness.datasets.digits:SOURCE",  # embedded (scikit-learn), not in the paper
}
# The paper's eight, in Table 3's order; then the embedded set.
DATASET_NAMES = tuple(REGISTRY)
PAPER_DATASETS = DATASET_NAMES[:-1]

__all__ = [
    "DATASET_NAMES",
    "DatasetError",
    "DatasetMeta",
    "FileStatus",
    "LoadedDataset",
    "PAPER_DATASETS",
    "REGISTRY",
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
    module_name, _, attribute = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module_name), attribute)


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
        from harness.datasets import transforms

        return getattr(transforms, attr)
    raise AttributeError(f"module 'datasets' has no attribute {attr!r}")
