"""FashionMNIST: the official idx files in torchvision's raw layout
(`<root>/fashionmnist/FashionMNIST/raw/*-ubyte[.gz]`, or `<root>/FashionMNIST/raw` as
torchvision writes it), read through torchvision.

Protocol: the official 60,000 train and 10,000 test images merged and split 70/15/15 by
`split_seed` (49,000/10,500/10,500). One channel, as the authors' ResNet-18 takes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets._core import (
    DatasetError,
    LoadedDataset,
    completeness,
    corrupt,
    digest_splits,
    meta_from_shape,
    require_files,
)
from harness.datasets._source import Source
from harness.datasets.download import Remote, gunzip
from harness.datasets.shape import DataShape
from harness.datasets.splits import random_split

_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
# Published md5s of the .gz files (the values torchvision declares).
REMOTES = (
    Remote(
        f"{_BASE}/train-images-idx3-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    ),
    Remote(
        f"{_BASE}/train-labels-idx1-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        md5="25c81989df183df01b3e8a0aad5dffbe",
    ),
    Remote(
        f"{_BASE}/t10k-images-idx3-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        md5="bef4ecab320f06d8554ea6380940ec79",
    ),
    Remote(
        f"{_BASE}/t10k-labels-idx1-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        md5="bb300cfdad3c16e7a12a480ee83cd310",
    ),
)
RAW = Path("FashionMNIST") / "raw"
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
EXPECTED_SIZES = (49_000, 10_500, 10_500)
MEAN = (0.2860,)  # Table 2
STD = (0.3530,)
TRAIN_AUGMENT = (
    {"op": "hflip", "p": 0.5},
    {"op": "rotate", "degrees": 10},
    {"op": "affine", "translate": [0.1, 0.1]},
)


SHAPE = DataShape("fashionmnist", 1, (28, 28), None, 10, *EXPECTED_SIZES[:2], MEAN, STD, TRAIN_AUGMENT)


class FashionMnistSource(Source):
    name = "fashionmnist"
    label = "FashionMNIST"
    shape = SHAPE
    remotes = REMOTES

    def candidates(self, root: Path) -> list[Path]:
        # torchvision's raw folder (the published .gz files and their unpacked copies): ours
        # under <root>/fashionmnist, or the one torchvision.datasets.FashionMNIST(root) wrote.
        return [Path(root) / self.name / RAW, Path(root) / RAW]

    def files_in(self, directory: Path, **options: Any) -> list[Path]:
        return [directory / r.filename[: -len(".gz")] for r in self.remotes]

    def _available(self, path: Path) -> bool:
        return path.is_file() or path.with_name(path.name + ".gz").is_file()  # unpacked on load

    def _prepare(self, directory: Path) -> list[Path]:
        return self._prepare_raw(directory)

    def _prepare_raw(self, raw: Path) -> list[Path]:
        produced = []
        for remote in self.remotes:
            packed = raw / remote.filename
            plain = raw / remote.filename[: -len(".gz")]
            if packed.is_file() and not plain.is_file():
                gunzip(packed, plain)
                produced.append(plain)
        return produced

    def _load(self, root: Path, split_seed: int, protocol: str, **options: Any) -> LoadedDataset:
        raw = self.directory(root)
        tv_root = raw.parent.parent  # what torchvision calls root
        if raw.is_dir():
            self._prepare_raw(raw)  # torchvision reads the uncompressed files
        files = self.files_in(raw)
        require_files(self.name, files)
        from torchvision.datasets import FashionMNIST

        images, labels = [], []
        for train in (True, False):
            try:
                ds = FashionMNIST(str(tv_root), train=train, download=False)
            except Exception as exc:  # a parser fails in its own ways on a damaged file
                stem = "train" if train else "t10k"
                bad = next((f for f in files if f.name.startswith(stem)), files[0])
                raise corrupt(self.name, bad, exc) from None
            data = ds.data.numpy()
            if data.ndim != 3:
                raise DatasetError(f"{self.name}: unexpected image array shape {data.shape}")
            images.append(data[:, None, :, :])
            labels.append(ds.targets.numpy().astype(np.int64))
        train, val, test = random_split(np.concatenate(images), np.concatenate(labels), split_seed)
        sizes = (len(train), len(val), len(test))
        meta = meta_from_shape(
            SHAPE,
            class_names=CLASSES,
            digest=digest_splits((train, val, test), extra=self.name),
            source=f"{_BASE}/ (train + t10k idx) merged, 70/15/15 by split_seed",
            split_seed=split_seed,
            protocol=protocol,
            complete=completeness(self.name, sizes, EXPECTED_SIZES),
        )
        return LoadedDataset(train, val, test, meta)


SOURCE = FashionMnistSource()
