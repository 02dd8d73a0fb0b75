"""TissueMNIST and BloodMNIST (MedMNIST v2): the official npz files, read through the
medmnist package, with MedMNIST's official train/val/test splits.

The paper uses the 28x28 files resized to 64x64 (Table 2); option `medmnist_size=64` reads the
native 64x64 files instead (no resize). Gray TissueMNIST is repeated to 3 channels, as the
authors' notebooks feed it to a 3-channel ResNet-18.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets._core import (
    DatasetMeta,
    LoadedDataset,
    Split,
    completeness,
    corrupt,
    digest_splits,
    require_files,
)
from harness.datasets._source import Source
from harness.datasets.download import Remote
from harness.datasets.shape import DataShape

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # Table 2 uses ImageNet statistics for both sets
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_AUGMENT = (
    {"op": "rotate", "degrees": 10},
    {"op": "hflip", "p": 0.5},
    {"op": "color_jitter", "brightness": 0.1, "contrast": 0.1, "saturation": 0, "hue": 0},
)
SIZES = (28, 64)
_ZENODO = "https://zenodo.org/records/10519652/files"

# Zenodo record 10519652 (MedMNIST v2/v3 npz); md5s as published there and in medmnist.INFO.
REMOTES: dict[str, dict[int, Remote]] = {
    "tissuemnist": {
        28: Remote(
            f"{_ZENODO}/tissuemnist.npz?download=1",
            "tissuemnist.npz",
            md5="ebe78ee8b05294063de985d821c1c34b",
        ),
        64: Remote(
            f"{_ZENODO}/tissuemnist_64.npz?download=1",
            "tissuemnist_64.npz",
            md5="123ece2eba09d0aa5d698fda57103344",
        ),
    },
    "bloodmnist": {
        28: Remote(
            f"{_ZENODO}/bloodmnist.npz?download=1",
            "bloodmnist.npz",
            md5="7053d0359d879ad8a5505303e11de1dc",
        ),
        64: Remote(
            f"{_ZENODO}/bloodmnist_64.npz?download=1",
            "bloodmnist_64.npz",
            md5="2b94928a2ae4916078ca51e05b6b800b",
        ),
    },
}
EXPECTED_SIZES = {
    "tissuemnist": (165_466, 23_640, 47_280),
    "bloodmnist": (11_959, 1_712, 3_421),
}
LABELS = {"tissuemnist": "TissueMNIST", "bloodmnist": "BloodMNIST"}
NUM_CLASSES = {"tissuemnist": 8, "bloodmnist": 8}


class MedMnistSource(Source):
    """One MedMNIST 2D set; the files of all MedMNIST sets share `<root>/medmnist/` (or a
    folder medmnist itself wrote: `<root>/*.npz`, `~/.medmnist/*.npz`)."""

    options = ("medmnist_size",)

    def __init__(self, name: str) -> None:
        self.name = name
        self.label = LABELS[name]
        # Held at 28x28 (the paper's file), resized to 64 on the device; RGB for both (Table 2).
        self.shape = DataShape(
            name, 3, (28, 28), (64, 64), NUM_CLASSES[name], *EXPECTED_SIZES[name][:2],
            IMAGENET_MEAN, IMAGENET_STD, TRAIN_AUGMENT,
        )
        self.remotes = tuple(REMOTES[name].values())  # `verify` checks whichever are present

    def fetch(self, root: Path, mirror: str | None = None) -> None:
        """The paper's 28x28 file; the 64x64 one comes with load(download=True, medmnist_size=64)."""
        from harness.datasets.download import download

        download(self.name, REMOTES[self.name][28], self.directory(root), mirror)

    def candidates(self, root: Path) -> list[Path]:
        # Ours, then medmnist's own layouts: flat in the root given to it, or its default
        # ~/.medmnist (where `medmnist.BloodMNIST(download=True)` puts the files).
        return [Path(root) / "medmnist", Path(root), Path.home() / ".medmnist"]

    def size_on_disk(self, root: Path) -> int:
        paths = {self.required_files(root, medmnist_size=size)[0] for size in SIZES}
        return sum(p.stat().st_size for p in paths if p.is_file())

    def files_in(self, directory: Path, **options: Any) -> list[Path]:
        return [directory / REMOTES[self.name][_size(options)].filename]

    def load(
        self,
        root: Path,
        split_seed: int = 42,
        protocol: str = "paper",
        download: bool = False,
        **options: Any,
    ) -> LoadedDataset:
        size = _size(options)
        if (
            download
            and size != 28
            and not self.required_files(root, medmnist_size=size)[0].is_file()
        ):
            from harness.datasets.download import download as fetch_one

            fetch_one(self.name, REMOTES[self.name][size], self.directory(root))
        # The 28x28 file is fetched only when it is the one being read.
        return super().load(root, split_seed, protocol, download and size == 28, **options)

    def _load(self, root: Path, split_seed: int, protocol: str, **options: Any) -> LoadedDataset:
        size = _size(options)
        path = self.required_files(root, medmnist_size=size)[0]
        require_files(self.name, [path])
        import medmnist

        info = medmnist.INFO[self.name]
        cls = getattr(medmnist, info["python_class"])
        splits = []
        for part in ("train", "val", "test"):
            try:
                ds = cls(split=part, root=str(path.parent), size=size, download=False)
                images, labels = np.asarray(ds.imgs), np.asarray(ds.labels)
            except Exception as exc:  # numpy's zip reader fails in its own ways
                raise corrupt(self.name, path, exc) from None
            splits.append(Split(images=_nchw_rgb(images), labels=labels.reshape(-1)))
        train, val, test = splits
        sizes = (len(train), len(val), len(test))
        names = tuple(info["label"][str(i)] for i in range(len(info["label"])))
        meta = DatasetMeta(
            name=self.name,
            num_classes=len(names),
            channels=self.shape.channels,
            image_size=self.shape.image_size,
            class_names=names,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            resize=(64, 64) if size != 64 else None,
            train_augment=TRAIN_AUGMENT,
            digest=digest_splits(splits, extra=f"{self.name}:{size}"),
            source=f"{REMOTES[self.name][size].url} (MedMNIST official splits, {size}x{size})",
            split_seed=split_seed,
            protocol=protocol,
            complete=completeness(self.name, sizes, EXPECTED_SIZES[self.name]),
            options={"medmnist_size": size},
        )
        return LoadedDataset(train, val, test, meta)


def _size(options: dict[str, Any]) -> int:
    size = int(options.get("medmnist_size", 28))
    if size not in SIZES:
        raise ValueError(
            f"medmnist_size={size} is not supported; valid: {', '.join(map(str, SIZES))}"
        )
    return size


def _nchw_rgb(images: np.ndarray) -> np.ndarray:
    """(N,H,W) gray -> (N,3,H,W) repeated; (N,H,W,3) -> (N,3,H,W). A real, writable copy (not
    a broadcast view): torch and in-place consumers warn about or mishandle read-only arrays,
    and TissueMNIST at 28x28x3 is only about 0.55 GB."""
    if images.ndim == 3:
        return np.repeat(images[:, None, :, :], 3, axis=1)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


TISSUE = MedMnistSource("tissuemnist")
BLOOD = MedMnistSource("bloodmnist")
