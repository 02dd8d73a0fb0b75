"""Tiny dataset files written in each source's exact on-disk format, for the tests.

Each writer returns the labels it wrote (in file order) so tests can check what the real
loading code reads back.
"""

from __future__ import annotations

import csv
import gzip
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

RNG_SEED = 1234


def _rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 5) -> np.ndarray:
    """<root>/cifar10/cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng()
    labels_all = []
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        labels = [int(x) for x in rng.integers(0, 10, n)]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        entry = {
            "batch_label": name.encode(),
            "labels": labels,
            "data": data,
            "filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle)
        labels_all += labels
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump(
            {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, handle
        )
    return np.asarray(labels_all)


def write_svhn(
    root: Path, n_train: int = 12, n_test: int = 8, n_extra: int = 6
) -> dict[str, np.ndarray]:
    """<root>/svhn/{train,test,extra}_32x32.mat: X (32,32,3,N) uint8, y (N,1) in 1..10."""
    from scipy.io import savemat

    folder = root / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng()
    written = {}
    for part, n in (("train", n_train), ("test", n_test), ("extra", n_extra)):
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0, 0] = 10  # at least one digit 0, stored as 10
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        savemat(folder / f"{part}_32x32.mat", {"X": x, "y": y})
        written[part] = y.reshape(-1)
    return written


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format of the MNIST family: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashionmnist(
    root: Path, n_train: int = 14, n_test: int = 6, gz: bool = True
) -> np.ndarray:
    """torchvision's raw layout: <root>/fashionmnist/FashionMNIST/raw/*-idx?-ubyte[.gz]."""
    raw = root / "fashionmnist" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = _rng()
    labels_all = []
    for stem, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            payload = idx_bytes(array)
            name = f"{stem}-{kind}-ubyte"
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (raw / name).write_bytes(payload)
        labels_all.append(labels)
    return np.concatenate(labels_all).astype(np.int64)


def write_medmnist(
    path: Path, gray: bool, sizes: tuple[int, int, int] = (10, 4, 6), side: int = 28
) -> dict[str, np.ndarray]:
    """A MedMNIST npz with the official keys: {train,val,test}_{images,labels}."""
    rng = _rng()
    arrays = {}
    for part, n in zip(("train", "val", "test"), sizes, strict=True):
        shape = (n, side, side) if gray else (n, side, side, 3)
        arrays[f"{part}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{part}_labels"] = rng.integers(0, 8, (n, 1)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays


def write_pcam(
    root: Path, sizes: tuple[int, int, int] = (8, 4, 4)
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """<root>/pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5: x (N,96,96,3), y (N,1,1,1)."""
    import h5py

    folder = root / "pcam"
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng()
    written = {}
    for part, n in zip(("train", "valid", "test"), sizes, strict=True):
        x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        y = rng.integers(0, 2, (n, 1, 1, 1)).astype(np.uint8)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{part}_x.h5", "w") as f:
            f.create_dataset("x", data=x, chunks=(1, 96, 96, 3))
        with h5py.File(folder / f"camelyonpatch_level_2_split_{part}_y.h5", "w") as f:
            f.create_dataset("y", data=y)
        written[part] = (x, y.reshape(-1))
    return written


TINY_WNIDS = ("n02124075", "n01443537", "n09999999")  # deliberately not in sorted order


def write_tinyimagenet(base: Path, per_class: int = 3, val_per_class: int = 2) -> Path:
    """The tiny-imagenet-200 tree: wnids.txt, words.txt, train/<wnid>/images/*.JPEG (with
    one grayscale JPEG), val/images + val/val_annotations.txt, test/images. Returns the tree."""
    from PIL import Image

    tree = base / "tiny-imagenet-200"
    rng = _rng()
    (tree / "val" / "images").mkdir(parents=True, exist_ok=True)
    (tree / "test" / "images").mkdir(parents=True, exist_ok=True)
    (tree / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (tree / "words.txt").write_text(
        "n01443537\tgoldfish, Carassius auratus\nn02124075\tEgyptian cat\n"
        "n09999999\tsomething, else\nn00000001\tunused entry\n"
    )
    for c, wnid in enumerate(TINY_WNIDS):
        folder = tree / "train" / wnid / "images"
        folder.mkdir(parents=True, exist_ok=True)
        (tree / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(per_class):
            pixels = np.full((64, 64, 3), 40 * c + i, dtype=np.uint8)
            if c == 0 and i == 0:
                Image.fromarray(pixels[:, :, 0], mode="L").save(
                    folder / f"{wnid}_{i}.JPEG", quality=95
                )
            else:
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=95)
    lines = []
    k = 0
    for wnid in TINY_WNIDS:
        for _ in range(val_per_class):
            name = f"val_{k}.JPEG"
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                tree / "val" / "images" / name
            )
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
            k += 1
    (tree / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(
        tree / "test" / "images" / "test_0.JPEG"
    )
    return tree


def zip_tree(tree: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree.rglob("*")):
            zf.write(path, path.relative_to(tree.parent).as_posix())
    return archive


PAD_COLUMNS = [
    "patient_id",
    "lesion_id",
    "smoke",
    "drink",
    "background_father",
    "background_mother",
    "age",
    "pesticide",
    "gender",
    "skin_cancer_history",
    "cancer_history",
    "has_piped_water",
    "has_sewage_system",
    "fitspatrick",
    "region",
    "diameter_1",
    "diameter_2",
    "diagnostic",
    "itch",
    "grew",
    "hurt",
    "changed",
    "bleed",
    "elevation",
    "img_id",
    "biopsed",
]
PAD_CLASSES = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")


def write_padufes20(root: Path, patients: int = 12, per_patient: int = 2) -> list[dict[str, str]]:
    """<root>/padufes20/: metadata.csv with the real columns + PNGs of various sizes in the
    nested images/imgs_part_N/imgs_part_N folders of the Mendeley archive."""
    from PIL import Image

    folder = root / "padufes20"
    rng = _rng()
    rows = []
    n = 0
    for p in range(patients):
        for lesion in range(per_patient):
            img_id = f"PAT_{p}_{100 + lesion}_{n}.png"
            part = 1 + n % 3
            target = folder / "images" / f"imgs_part_{part}" / f"imgs_part_{part}"
            target.mkdir(parents=True, exist_ok=True)
            h, w = (int(v) for v in rng.integers(30, 90, 2))
            # One flat colour per patient (10 * p + 5) so a test can tell patients apart after
            # the loader's resize.
            Image.fromarray(np.full((h, w, 3), 10 * p + 5, dtype=np.uint8)).save(target / img_id)
            row = dict.fromkeys(PAD_COLUMNS, "")
            row.update(
                patient_id=f"PAT_{p}",
                lesion_id=str(100 + lesion),
                img_id=img_id,
                diagnostic=PAD_CLASSES[n % len(PAD_CLASSES)],
                biopsed="True",
                age="55",
            )
            rows.append(row)
            n += 1
    with open(folder / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PAD_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows
