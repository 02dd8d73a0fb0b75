"""What a training job needs around its loop: data loaders, seeds, device and determinism.

Kept apart from harness/training/loop.py so that the loop there reads top to bottom.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.experiment.config import PIPELINES, JobSpec, TrainConfig

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}

# --------------------------------------------------------------------------- data

_dataset_cache: dict[str, Any] = {}


def load_data(spec: JobSpec, data_root: Path) -> Any:
    """datasets.load for the job, cached in-process: a worker runs many jobs on one set."""
    from harness import datasets

    options = dict(spec.config.data)
    key = json.dumps(
        [spec.dataset, str(Path(data_root).resolve()), spec.split_seed, spec.protocol, options],
        sort_keys=True,
        default=str,
    )
    if _dataset_cache.get("key") != key:
        _dataset_cache.clear()  # hold one dataset at a time: they can be gigabytes
        loaded = datasets.load(
            spec.dataset,
            data_root,
            split_seed=spec.split_seed,
            protocol=spec.protocol,
            download=False,
            **options,
        )
        _dataset_cache.update(key=key, data=loaded)
    return _dataset_cache["data"]


def make_loader(
    split: Any,
    meta: Any,
    config: TrainConfig,
    *,
    train: bool,
    device: str,
    generator: torch.Generator | None = None,
) -> torch.utils.data.DataLoader:
    """A DataLoader over one split with the Table-2 transform; shuffled only for training."""
    from harness import datasets

    transform = datasets.build_transform(meta, train=train, quirks=dict(config.quirks))
    return torch.utils.data.DataLoader(
        datasets.TorchSplit(split, transform),
        batch_size=config.batch_size,
        shuffle=train,
        generator=generator,
        num_workers=0,  # in-process: the per-epoch torch seed then covers augmentation too
        pin_memory=device.startswith("cuda"),
    )


class DeviceBatches:
    """The "device" pipeline's stand-in for a DataLoader: batches of a DeviceSplit, augmented
    (training) and normalised by BatchAugment on the device. Re-iterable and sized, like a
    DataLoader, so evaluation and the gradient measurement take either."""

    def __init__(
        self,
        split: Any,
        meta: Any,
        config: TrainConfig,
        *,
        train: bool,
        order: torch.Generator | None = None,
        augment_seed: int = 0,
    ) -> None:
        from harness.datasets.gpu import BatchAugment
        from harness.datasets.transforms import CORRUPTED_SETS, WrapAroundUint8

        self.split, self.train, self.order = split, train, order
        self.batch_size = config.batch_size
        self.augment = BatchAugment(
            list(meta.train_augment) if train else [],
            list(meta.mean),
            list(meta.std),
            meta.resize,
            tuple(split.image_shape[1:]),
        )
        # Reference-code quirk 1 acts on the uint8 image before anything else, as in
        # datasets.build_transform; WrapAroundUint8 is elementwise, so it takes whole batches.
        corrupt = train and config.quirk("corrupt_train_images") and meta.name in CORRUPTED_SETS
        self.corrupt = WrapAroundUint8(meta.mean, meta.std) if corrupt else None
        self.augment_seed = augment_seed
        # Without augmentation or resize, normalise with torchvision's very arithmetic (ToDtype
        # multiplies by 1/255, Normalize subtracts then divides): such batches are then bitwise
        # the loader's, so the pipelines differ only where augmentation or the step does.
        self.exact = not self.augment.spec and meta.resize is None
        self.mean = torch.tensor(meta.mean, dtype=torch.float32).view(1, -1, 1, 1).to(split.device)
        self.std = torch.tensor(meta.std, dtype=torch.float32).view(1, -1, 1, 1).to(split.device)

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # The augmentation stream lives on the device, seeded afresh per pass (per epoch).
        generator = torch.Generator(device=self.split.device).manual_seed(self.augment_seed)
        if self.train and self.order is not None:
            # A DataLoader's iterator draws one int64 (its base seed) from the generator before
            # its sampler's randperm; drawing it here too gives both pipelines the same order,
            # so without augmentation they train on the same batches.
            torch.empty((), dtype=torch.int64).random_(generator=self.order)
        for images, labels in self.split.epoch(self.batch_size, self.order, shuffle=self.train):
            if self.corrupt is not None:
                images = self.corrupt(images)
            if self.exact:
                yield images.float().mul_(1.0 / 255.0).sub_(self.mean).div_(self.std), labels
            else:
                yield self.augment(images, generator), labels


_device_split_cache: dict[str, Any] = {}


def device_splits(data: Any, device: torch.device) -> tuple[Any, Any, Any]:
    """The loaded dataset's train/val/test as DeviceSplits on `device`, cached like the data."""
    from harness.datasets.gpu import DeviceSplit

    key = f"{id(data)}:{device}"
    if _device_split_cache.get("key") != key or _device_split_cache.get("data") is not data:
        _device_split_cache.clear()
        splits = tuple(DeviceSplit.from_split(s, device) for s in (data.train, data.val, data.test))
        _device_split_cache.update(key=key, data=data, splits=splits)
    return _device_split_cache["splits"]


def check_pipeline(pipeline: str) -> None:
    if pipeline not in PIPELINES:
        raise HarnessError(
            f"unknown pipeline {pipeline!r}; valid: {', '.join(PIPELINES)} (--set pipeline=...)"
        )


def check_last_batch(train_size: int, batch_size: int, max_batches: int | None = None) -> None:
    """Refuse a batch size that leaves one image in the last training batch: BatchNorm cannot
    normalise a batch of one after the last stage's 1x1 pooling (every model here has it), so
    the job would fail at the end of its first epoch instead of here."""
    reached = max_batches is None or max_batches * batch_size >= train_size
    if reached and train_size % batch_size == 1:
        raise HarnessError(
            f"batch_size={batch_size} leaves a last training batch of one image "
            f"({train_size} = {train_size // batch_size} x {batch_size} + 1), which BatchNorm "
            f"cannot train on; pick another batch size (e.g. --set batch_size={batch_size + 1})"
        )


def derived_seed(seed: int, epoch: int, stream: str) -> int:
    """A 63-bit seed for one (job seed, epoch, purpose), independent of process history."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- device set-up


@contextmanager
def determinism(enabled: bool, device: str) -> Iterator[None]:
    """Deterministic kernels while the job runs; the process's previous flags afterwards.

    Off, it touches nothing."""
    if not enabled:
        yield
        return
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    on_cuda = device.startswith("cuda")
    if on_cuda:
        # cuBLAS needs this before its first use to be reproducible.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # On CUDA a few backward kernels (e.g. adaptive pooling) have no deterministic version:
    # warn there instead of failing the job; on the CPU insist.
    torch.use_deterministic_algorithms(True, warn_only=on_cuda)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def check_device(device: str) -> torch.device:
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise HarnessError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"device {device} requested but CUDA is not available; use --device cpu")
    if parsed.type not in ("cpu", "cuda"):
        raise HarnessError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return parsed


def autocast(device: torch.device, precision: str) -> Any:
    if precision not in PRECISIONS:
        raise HarnessError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def sync(device: torch.device) -> None:
    """Wait for the device, so that wall-clock timings cover the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
