"""SVHN (cropped digits, format 2): the official .mat files, read through torchvision.

torchvision maps the files' label 10 to digit 0. Protocol: train (73,257) + test (26,032)
merged and split 70/15/15 by `split_seed`; option `merge_extra=True` also merges the 531,131
`extra` images (reference-code quirk 4: 630,420 images, 441,294/94,563/94,563).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets._core import (
    LoadedDataset,
    completeness,
    corrupt,
    digest_splits,
    meta_from_shape,
    require_files,
)
from harness.datasets._source import Source
from harness.datasets.download import Remote
from harness.datasets.shape import DataShape
from harness.datasets.splits import random_split

_BASE = "http://ufldl.stanford.edu/housenumbers"
# Published md5s (the values torchvision declares for the same files).
REMOTES = {
    "train": Remote(
        f"{_BASE}/train_32x32.mat", "train_32x32.mat", md5="e26dedcc434d2e4c54c9b2d4a06d8373"
    ),
    "test": Remote(
        f"{_BASE}/test_32x32.mat", "test_32x32.mat", md5="eb5a983be6a315427106f1b164d9cef3"
    ),
    "extra": Remote(
        f"{_BASE}/extra_32x32.mat", "extra_32x32.mat", md5="a93ce644f1a588dc4d68dda5feec44a7"
    ),
}
EXPECTED_SIZES = {False: (69_502, 14_893, 14_894), True: (441_294, 94_563, 94_563)}
MEAN = (0.4377, 0.4438, 0.4728)  # Table 2
STD = (0.1980, 0.2010, 0.1970)


def _reader() -> type:
    """torchvision's SVHN; its per-load md5 check is left to `harness data verify`.
    (Built on first use: `harness data list` must not import torchvision.)"""
    from torchvision.datasets import SVHN

    class _TorchvisionSVHN(SVHN):
        def _check_integrity(self) -> bool:
            return (Path(self.root) / self.filename).is_file()

    return _TorchvisionSVHN


# Without `extra` (the reference-code quirk merges it: 441,294 train).
SHAPE = DataShape("svhn", 3, (32, 32), None, 10, *EXPECTED_SIZES[False][:2], MEAN, STD)


class SvhnSource(Source):
    name = "svhn"
    label = "SVHN"
    shape = SHAPE
    remotes = tuple(REMOTES.values())
    options = ("merge_extra",)

    def candidates(self, root: Path) -> list[Path]:
        # torchvision.datasets.SVHN(root) keeps the .mat files in root itself.
        return [Path(root) / self.name, Path(root)]

    def files_in(self, directory: Path, **options: Any) -> list[Path]:
        keys = ("train", "test", "extra") if options.get("merge_extra") else ("train", "test")
        return [directory / REMOTES[k].filename for k in keys]

    def _load(self, root: Path, split_seed: int, protocol: str, **options: Any) -> LoadedDataset:
        merge_extra = bool(options.get("merge_extra", False))
        parts = ("train", "test", "extra") if merge_extra else ("train", "test")
        files = self.required_files(root, merge_extra=merge_extra)
        require_files(self.name, files)
        images, labels = [], []
        for part, path in zip(parts, files, strict=True):
            try:
                ds = _reader()(str(path.parent), split=part, download=False)
            except Exception as exc:  # scipy's reader fails in its own ways on a damaged file
                raise corrupt(self.name, path, exc) from None
            images.append(np.ascontiguousarray(ds.data, dtype=np.uint8))  # already (N, 3, 32, 32)
            labels.append(np.asarray(ds.labels, dtype=np.int64))
        train, val, test = random_split(np.concatenate(images), np.concatenate(labels), split_seed)
        sizes = (len(train), len(val), len(test))
        meta = meta_from_shape(
            SHAPE,
            class_names=tuple(str(d) for d in range(10)),
            digest=digest_splits((train, val, test), extra=f"{self.name}:{merge_extra}"),
            source=f"{_BASE}/ ({' + '.join(parts)}) merged, 70/15/15 by split_seed",
            split_seed=split_seed,
            protocol=protocol,
            complete=completeness(self.name, sizes, EXPECTED_SIZES[merge_extra]),
            options={"merge_extra": merge_extra},
        )
        return LoadedDataset(train, val, test, meta)


SOURCE = SvhnSource()
