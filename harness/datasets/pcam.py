"""PatchCamelyon (PCam): the official h5 files, read lazily with h5py; official splits
(262,144/32,768/32,768). The 7 GB of training images are never loaded at once: `Split.images`
is an `H5Images` reader that returns numpy uint8 (N, 3, 96, 96) batches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets._core import (
    DatasetMeta,
    LoadedDataset,
    Split,
    completeness,
    corrupt,
    digest_files,
    require_files,
)
from harness.datasets._source import Source
from harness.datasets.download import Remote, gunzip
from harness.datasets.shape import DataShape

_ZENODO = "https://zenodo.org/records/2546921/files"
_STEM = "camelyonpatch_level_2_split"
# md5 of the published .h5.gz files (PCam README / Zenodo record 2546921; torchvision's PCAM
# declares the same values).
_MD5 = {
    "train_x": "1571f514728f59376b705fc836ff4b63",
    "train_y": "35c2d7259d906cfc8143347bb8e05be7",
    "valid_x": "d5b63470df7cfa627aeec8b9dc0c066e",
    "valid_y": "2b85f58b927af9964a4c15b8f7e8f179",
    "test_x": "d8c2d60d490dbd479f8199bdfa0cf6ec",
    "test_y": "60a7035772fbdb7f34eb86d4420cf66a",
}
REMOTES = tuple(
    Remote(f"{_ZENODO}/{_STEM}_{key}.h5.gz?download=1", f"{_STEM}_{key}.h5.gz", md5=md5)
    for key, md5 in _MD5.items()
)
PARTS = ("train", "valid", "test")
EXPECTED_SIZES = (262_144, 32_768, 32_768)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # Table 2
IMAGENET_STD = (0.229, 0.224, 0.225)


class H5Images:
    """Lazy (N, 3, H, W) uint8 view of an h5 dataset of (N, H, W, 3) images.

    The file is opened on first access in each process (h5py handles must not cross a fork,
    as DataLoader workers do), so the reader is safe to hand to worker processes.
    """

    def __init__(self, path: Path, key: str = "x") -> None:
        import h5py

        self.path = Path(path)
        self.key = key
        self._handle: Any = None
        self._pid: int | None = None
        with h5py.File(self.path, "r") as f:
            shape = f[key].shape
        if len(shape) != 4 or shape[3] != 3:
            raise ValueError(f"expected (N, H, W, 3) images under {key!r}, got {shape}")
        self.shape = (shape[0], 3, shape[1], shape[2])
        self.dtype = np.dtype(np.uint8)

    def _data(self) -> Any:
        import h5py

        if self._handle is None or self._pid != os.getpid():
            self._handle = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._handle[self.key]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        data = self._data()
        if isinstance(index, (int, np.integer)):
            return np.ascontiguousarray(data[int(index)].transpose(2, 0, 1))
        if isinstance(index, slice):
            return np.ascontiguousarray(data[index].transpose(0, 3, 1, 2))
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return np.empty((0, *self.shape[1:]), dtype=np.uint8)
        idx = np.where(idx < 0, idx + len(self), idx)
        # h5py fancy indexing wants increasing unique indices: read those, then reorder.
        unique, inverse = np.unique(idx, return_inverse=True)
        block = data[unique.tolist()]
        return np.ascontiguousarray(block[inverse].transpose(0, 3, 1, 2))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_pid": None}

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype)


SHAPE = DataShape("pcam", 3, (96, 96), None, 2, *EXPECTED_SIZES[:2], IMAGENET_MEAN, IMAGENET_STD)


class PcamSource(Source):
    name = "pcam"
    label = "PCam"
    shape = SHAPE
    remotes = REMOTES

    def h5_files(self, root: Path) -> list[tuple[Path, Path]]:
        d = self.directory(root)
        return [(d / f"{_STEM}_{p}_x.h5", d / f"{_STEM}_{p}_y.h5") for p in PARTS]

    def required_files(self, root: Path, **options: Any) -> list[Path]:
        return [p for pair in self.h5_files(root) for p in pair]

    def _prepare(self, directory: Path) -> list[Path]:
        produced = []
        for remote in self.remotes:
            packed = directory / remote.filename
            plain = directory / remote.filename[: -len(".gz")]
            if packed.is_file() and not plain.is_file():
                gunzip(packed, plain)
                produced.append(plain)
        return produced

    def _load(self, root: Path, split_seed: int, protocol: str, **options: Any) -> LoadedDataset:
        import h5py

        files = self.required_files(root)
        require_files(self.name, files)
        splits = []
        for x_path, y_path in self.h5_files(root):
            try:
                images = H5Images(x_path)
            except Exception as exc:  # h5py fails in its own ways on a damaged file
                raise corrupt(self.name, x_path, exc) from None
            try:
                with h5py.File(y_path, "r") as f:
                    labels = np.asarray(f["y"][:]).reshape(-1).astype(np.int64)
            except Exception as exc:  # h5py fails in its own ways on a damaged file
                raise corrupt(self.name, y_path, exc) from None
            splits.append(Split(images=images, labels=labels))
        train, val, test = splits
        sizes = (len(train), len(val), len(test))
        meta = DatasetMeta(
            name=self.name,
            num_classes=2,
            channels=3,
            image_size=(train.images.shape[2], train.images.shape[3]),
            class_names=("normal", "metastatic"),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            resize=None,
            train_augment=(),
            digest=digest_files(files, extra=self.name),
            source=f"{_ZENODO}/ (official train/valid/test h5), read lazily",
            split_seed=split_seed,
            protocol=protocol,
            complete=completeness(self.name, sizes, EXPECTED_SIZES),
        )
        return LoadedDataset(train, val, test, meta)


SOURCE = PcamSource()
