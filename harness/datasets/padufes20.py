"""PAD-UFES-20 (Mendeley Data, doi:10.17632/zr7vgbcyr2.1): 2,298 smartphone skin-lesion
images of 1,373 patients, 6 diagnostic classes.

Mendeley publishes no checksum and no stable direct link for the archive, so the download is
manual (instructions below and in docs/DATASETS.md); `harness data fetch padufes20` then
unpacks the archive (and the nested imgs_part_N.zip files) safely and checks the result.
Protocol: 70/15/15 by image (as the authors did); `patient_split=True` keeps every patient in
one split. Images are resized to 224x224 when read (Table 2's Resize) and cached decoded.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets._core import (
    DatasetError,
    DatasetMeta,
    LoadedDataset,
    cached_array,
    completeness,
    corrupt,
    digest_splits,
)
from harness.datasets._source import Source
from harness.datasets.download import safe_extract
from harness.datasets.shape import DataShape
from harness.datasets.splits import random_split

PAGE = "https://data.mendeley.com/datasets/zr7vgbcyr2/1"
ARCHIVE_NAME = "zr7vgbcyr2-1.zip"
CLASSES = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")
TOTAL_IMAGES = 2298
EXPECTED_SIZES = (1_608, 345, 345)
SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # Table 2
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_AUGMENT = (
    {"op": "hflip", "p": 0.5},
    {"op": "rotate", "degrees": 10},
    {"op": "color_jitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
    {"op": "resized_crop", "size": 224, "scale": [0.8, 1.0]},
)
MANUAL = (
    "padufes20: no automatic download (Mendeley Data publishes no direct link or checksum): "
    f"open {PAGE}, click 'Download All', save the archive as {{dir}}/{ARCHIVE_NAME} "
    "(or unpack it there: metadata.csv and images/imgs_part_1..3), then run "
    "`harness data fetch padufes20` again"
)
_CACHE = ".decoded-224.npz"


SHAPE = DataShape(
    "padufes20", 3, (SIZE, SIZE), (SIZE, SIZE), len(CLASSES), *EXPECTED_SIZES[:2],
    IMAGENET_MEAN, IMAGENET_STD, TRAIN_AUGMENT, batch_size=64,
)


class PadUfes20Source(Source):
    name = "padufes20"
    label = "PAD-UFES-20"
    shape = SHAPE
    manual = MANUAL
    options = ("patient_split",)

    def metadata(self, root: Path) -> Path | None:
        found = sorted(self.directory(root).rglob("metadata.csv"), key=lambda p: len(p.parts))
        return found[0] if found else None

    def required_files(self, root: Path, **options: Any) -> list[Path]:
        return [self.metadata(root) or self.directory(root) / "metadata.csv"]

    def fetch(self, root: Path, mirror: str | None = None) -> None:
        directory = self.directory(root)
        archive = directory / ARCHIVE_NAME
        if archive.is_file():
            safe_extract(archive, directory)
        # The archive nests one zip per image folder (images/imgs_part_N.zip).
        for inner in sorted(directory.rglob("imgs_part_*.zip")):
            if not inner.with_suffix("").exists():
                safe_extract(inner, inner.parent)
        if self.metadata(root) is None:
            raise DatasetError(MANUAL.format(dir=directory))
        rows = _read_metadata(self.name, self.metadata(root))  # type: ignore[arg-type]
        missing = [r["img_id"] for r in rows if r["img_id"] not in _png_index(directory)]
        if missing:
            raise DatasetError(
                f"padufes20: {len(missing)} images named in metadata.csv are missing "
                f"(first: {missing[0]}); " + MANUAL.format(dir=directory)
            )

    def _load(self, root: Path, split_seed: int, protocol: str, **options: Any) -> LoadedDataset:
        directory = self.directory(root)
        meta_path = self.metadata(root)
        if meta_path is None:
            raise DatasetError(
                f"padufes20: missing file {directory / 'metadata.csv'}; "
                + MANUAL.format(dir=directory)
            )
        rows = _read_metadata(self.name, meta_path)
        images = _decoded(self.name, directory, meta_path, [r["img_id"] for r in rows])
        labels = np.asarray([CLASSES.index(r["diagnostic"]) for r in rows], dtype=np.int64)
        patient_split = bool(options.get("patient_split", False))
        groups = [r["patient_id"] for r in rows] if patient_split else None
        train, val, test = random_split(images, labels, split_seed, groups=groups)
        sizes = (len(train), len(val), len(test))
        complete = len(rows) == TOTAL_IMAGES
        if not patient_split:
            complete = completeness(self.name, sizes, EXPECTED_SIZES)
        meta = DatasetMeta(
            name=self.name,
            num_classes=len(CLASSES),
            channels=3,
            image_size=(SIZE, SIZE),
            class_names=CLASSES,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            resize=(SIZE, SIZE),
            train_augment=TRAIN_AUGMENT,
            digest=digest_splits((train, val, test), extra=f"{self.name}:{patient_split}"),
            source=f"{PAGE}; 70/15/15 by {'patient' if patient_split else 'image'}, "
            f"images resized to {SIZE}x{SIZE} when read",
            split_seed=split_seed,
            protocol=protocol,
            complete=complete,
            options={"patient_split": patient_split},
        )
        return LoadedDataset(train, val, test, meta)


def _read_metadata(name: str, path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise corrupt(name, path, exc) from None
    need = {"patient_id", "img_id", "diagnostic"}
    if not rows or not need <= set(rows[0]):
        raise corrupt(name, path, ValueError(f"expected columns {sorted(need)}"))
    bad = sorted({r["diagnostic"] for r in rows} - set(CLASSES))
    if bad:
        raise corrupt(name, path, ValueError(f"unknown diagnostic(s) {bad}; valid: {CLASSES}"))
    return rows


def _png_index(directory: Path) -> dict[str, Path]:
    return {p.name: p for p in directory.rglob("*.png")}


def _decoded(name: str, directory: Path, meta_path: Path, img_ids: list[str]) -> np.ndarray:
    """Decode and resize every image once; later loads read the cache (keyed by the metadata
    file and the names and sizes of the PNGs, so a changed file invalidates it)."""
    index = _png_index(directory)
    key = hashlib.sha256(meta_path.read_bytes())
    for img_id in img_ids:
        path = index.get(img_id)
        if path is None:
            raise DatasetError(
                f"{name}: image {img_id} named in {meta_path} is missing under {directory}; "
                + MANUAL.format(dir=directory)
            )
        key.update(f"{img_id}:{path.stat().st_size};".encode())
    return cached_array(directory / _CACHE, key.hexdigest(), lambda: _decode(name, index, img_ids))


def _decode(name: str, index: dict[str, Path], img_ids: list[str]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(img_ids), 3, SIZE, SIZE), dtype=np.uint8)
    for i, img_id in enumerate(img_ids):
        try:
            with Image.open(index[img_id]) as img:
                rgb = img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise corrupt(name, index[img_id], exc) from None
        out[i] = np.asarray(rgb).transpose(2, 0, 1)
    return out


SOURCE = PadUfes20Source()
