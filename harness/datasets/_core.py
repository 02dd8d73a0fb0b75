"""Shared types of the datasets package: splits, metadata, the error type and digests."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from harness.datasets.shape import DataShape

PROTOCOLS = ("paper", "reference-code")
# Images hashed per chunk so that lazy readers and broadcast views never materialise whole.
_DIGEST_CHUNK = 4096


class DatasetError(ValueError):
    """A missing, corrupt or unreachable dataset: the message names the file and the fix."""


class ImageArray(Protocol):
    """What `Split.images` must support: numpy arrays and lazy readers alike."""

    shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> np.ndarray: ...


@dataclass
class Split:
    """One split: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: ImageArray
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.images) != len(self.labels):
            raise DatasetError(
                f"split has {len(self.images)} images but {len(self.labels)} labels; "
                "the dataset files disagree, re-fetch them"
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DatasetMeta:
    """What a model and a training pipeline need to know about a loaded dataset."""

    name: str
    num_classes: int
    channels: int  # what the model receives (after any gray -> RGB repeat)
    image_size: tuple[int, int]  # (H, W) the model sees, after `resize`
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: tuple[int, int] | None  # applied to every split when set
    train_augment: tuple[dict[str, Any], ...]  # Table 2 as data, in the paper's order
    digest: str  # sha256 of the split arrays, or of the source files for lazy sets
    source: str  # provenance notes: files, split rule, options
    split_seed: int = 42
    protocol: str = "paper"
    complete: bool = True  # False when the files hold fewer images than the official set
    options: dict[str, Any] = field(default_factory=dict)


def meta_from_shape(shape: DataShape, **loaded: Any) -> DatasetMeta:
    """A loaded set's meta whose fixed fields are its module's DataShape; `loaded` holds the
    rest (class_names, digest, source, split_seed, protocol, complete, options)."""
    return DatasetMeta(
        name=shape.name,
        num_classes=shape.num_classes,
        channels=shape.channels,
        image_size=shape.image_size,
        mean=shape.mean,
        std=shape.std,
        resize=shape.resize,
        train_augment=shape.augment,
        **loaded,
    )


@dataclass
class LoadedDataset:
    train: Split
    val: Split
    test: Split
    meta: DatasetMeta

    def split_sizes(self) -> tuple[int, int, int]:
        return (len(self.train), len(self.val), len(self.test))


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")


def check_options(name: str, options: dict[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")


def digest_splits(splits: Iterable[Split], extra: str = "") -> str:
    """sha256 over shapes, image bytes and labels of each split, in order."""
    h = hashlib.sha256(extra.encode())
    for split in splits:
        images = split.images
        h.update(repr(tuple(images.shape)).encode())
        for start in range(0, len(images), _DIGEST_CHUNK):
            chunk = images[start : start + _DIGEST_CHUNK]
            h.update(np.ascontiguousarray(chunk, dtype=np.uint8).tobytes())
        h.update(np.ascontiguousarray(split.labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def file_hash(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest_files(paths: Sequence[Path], extra: str = "") -> str:
    """sha256 over the files' sha256 digests; cached per (path, size, mtime) beside the files
    so that a lazily read 8 GB set is hashed once, not at every load."""
    h = hashlib.sha256(extra.encode())
    for path in paths:
        h.update(path.name.encode())
        h.update(_cached_file_sha256(path).encode())
    return h.hexdigest()


def _cached_file_sha256(path: Path) -> str:
    cache_path = path.parent / ".sha256-cache.json"
    stat = path.stat()
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(path.name)
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        return str(entry["sha256"])
    value = file_hash(path)
    cache[path.name] = {"stamp": stamp, "sha256": value}
    tmp = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        os.replace(tmp, cache_path)
    except OSError:
        pass  # a read-only data root still loads; it just hashes again next time
    return value


def require_files(name: str, paths: Sequence[Path]) -> None:
    """Raise one clear line naming the first missing file and the fetch command."""
    for path in paths:
        if not path.is_file():
            raise DatasetError(
                f"{name}: missing file {path}; run `harness data fetch {name}` "
                "(or see docs/DATASETS.md to place it by hand)"
            )


def corrupt(name: str, path: Path, exc: BaseException) -> DatasetError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DatasetError(
        f"{name}: cannot read {path} ({reason}); the file is corrupt or truncated: delete it "
        f"and run `harness data fetch {name}`, then `harness data verify {name}`"
    )


def completeness(name: str, counts: Sequence[int], expected: Sequence[int] | None) -> bool:
    """True when the split sizes equal the official ones; a full-size set with other split
    sizes is a bug in the split rule, so that raises instead of passing silently."""
    if expected is None:
        return True
    if sum(counts) == sum(expected) and tuple(counts) != tuple(expected):
        raise DatasetError(
            f"{name}: split sizes {tuple(counts)} differ from the expected {tuple(expected)} "
            "for the full dataset"
        )
    return tuple(counts) == tuple(expected)


def to_nchw(images: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) uint8 -> contiguous (N, C, H, W) uint8."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DatasetError(f"expected uint8 images, got {images.dtype}")
    if images.ndim == 3:
        return images[:, None, :, :]
    if images.ndim == 4:
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    raise DatasetError(f"expected images of shape (N,H,W) or (N,H,W,C), got {images.shape}")


def cached_array(cache: Path, key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """`build()`'s array, stored at `cache` with `key` (a digest of the source files' names and
    sizes) so that decoding thousands of image files happens once; a stale or damaged cache is
    rebuilt, and a read-only data root just decodes every time."""
    if cache.is_file():
        try:
            with np.load(cache) as stored:
                if str(stored["key"]) == key:
                    return stored["images"]
        except (OSError, ValueError, KeyError, EOFError):
            pass
    images = build()
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.part.npy")
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, images=images, key=np.asarray(key))
        os.replace(tmp, cache)
    except OSError:
        tmp.unlink(missing_ok=True)
    return images
