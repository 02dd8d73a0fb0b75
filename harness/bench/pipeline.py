"""`harness bench`: the authors' input pipeline against the fast path, packing, grid projection.

Everything runs in one process on one device with synthetic data of a dataset's shape (image
size, channels, classes, Table 2 augmentation, normalisation): what is timed is the pipeline,
not the pixels. Three measurements:

1. One training job, two pipelines on the same model and data shape. "authors": a torch
   DataLoader over PIL images with torchvision's PIL transforms in 2 workers, fp32, eager, a
   `loss.item()` per step (as the notebooks do). "ours": uint8 images resident on the device,
   `BatchAugment`, `FastStep` (bf16 autocast on CUDA, channels_last, CUDA graph on CUDA).
2. Packing: 1, 4, 8, 12 concurrent jobs (processes) on the device running "ours"; the total
   steps/s says how much of the device one job leaves idle (harness/bench/packing.py).
3. A projection of the paper grid's wall time: the step time of every cell's (model, data
   shape), times steps per epoch from the real split sizes, times epochs and seeds.
Fused seed cohorts (`--fused`) are timed in harness/bench/fused.py; MPS is in bench_mps.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from harness.datasets.gpu import BatchAugment, DeviceSplit
from harness.datasets.gpu.shapes import SHAPES
from harness.datasets.shape import DataShape
from harness.errors import HarnessError
from harness.training.fastpath import FastStep, make_adam


@dataclass(frozen=True)
class BenchSettings:
    """What one timing run measures; shared by both pipelines, packing and the grid."""

    device: str
    model: str
    shape: str
    steps: int
    warmup: int
    batch_size: int | None = None  # None: the dataset's (Table 1: 128, PAD-UFES-20 64)
    precision: str = "fp32"
    channels_last: bool = True
    cuda_graph: bool = False
    data_size: int = 4096  # synthetic images held; a batch's cost does not depend on N
    workers: int = 2  # the authors' DataLoader workers
    threads: int | None = None  # CPU intra-op threads per job (None: cores / concurrent jobs)

    def batch(self) -> int:
        return self.batch_size or SHAPES[self.shape].batch_size

    def with_cell(self, model: str, shape: str) -> BenchSettings:
        return BenchSettings(**{**asdict(self), "model": model, "shape": shape})


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(
    name: str, shape: DataShape, device: torch.device, seed: int = 0
) -> torch.nn.Module:
    from harness.models import MODEL_NAMES
    from harness.models import build_model as build

    if name not in MODEL_NAMES:
        raise HarnessError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")
    torch.manual_seed(seed)
    return build(name, shape.channels, shape.num_classes).to(device)


def synthetic_images(
    shape: DataShape, count: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images (N, C, H, W) at the stored size, and labels."""
    gen = torch.Generator().manual_seed(seed)
    height, width = shape.stored_size
    images = torch.randint(
        0, 256, (count, shape.channels, height, width), generator=gen, dtype=torch.uint8
    )
    labels = torch.randint(0, shape.num_classes, (count,), generator=gen)
    return images, labels


def _rate(steps: int, seconds: float, batch: int) -> dict[str, float]:
    return {
        "steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "ms_per_step": 1000.0 * seconds / steps,
        "images_per_s": steps * batch / seconds,
    }


# ------------------------------------------------------------------------------ ours


def endless_batches(split: DeviceSplit, batch: int, generator: torch.Generator):
    while True:
        # drop_last: every timed step has the full batch, so one graph serves all of them.
        yield from split.epoch(batch, generator, drop_last=True)


def device_data(settings: BenchSettings) -> tuple[DeviceSplit, BatchAugment]:
    """Synthetic uint8 images of the shape resident on the device, and its Table 2 augmentation
    (shared by the fast path, packing and harness.bench.fused)."""
    shape, batch = SHAPES[settings.shape], settings.batch()
    images, labels = synthetic_images(shape, max(batch, min(settings.data_size, shape.train_size)))
    split = DeviceSplit(images, labels, torch.device(settings.device))
    augment = BatchAugment(
        list(shape.augment), shape.mean, shape.std, shape.resize, shape.stored_size
    )
    return split, augment


def fast_path(settings: BenchSettings, seed: int) -> tuple[FastStep, Any, Callable[[int], None]]:
    """The fast path's pieces for one job: FastStep, its batch stream, and `train_steps(n)`."""
    device = torch.device(settings.device)
    shape, batch = SHAPES[settings.shape], settings.batch()
    split, augment = device_data(settings)
    model = build_model(settings.model, shape, device)
    fast = FastStep(
        model,
        make_adam(model, 1e-3, 1e-4, device),
        device,
        settings.precision,
        settings.channels_last,
        settings.cuda_graph,
    )
    generator = torch.Generator(device=device).manual_seed(seed)
    batches = endless_batches(split, batch, generator)

    def train_steps(count: int) -> None:
        for _ in range(count):
            inputs, targets = next(batches)
            fast.step(augment(inputs, generator), targets)

    return fast, batches, train_steps


def warmup_steps(settings: BenchSettings) -> int:
    """Untimed steps first; at least one under CUDA graphs, whose first step captures."""
    return max(settings.warmup, 1 if settings.cuda_graph else 0)


def time_ours(settings: BenchSettings, with_eval: bool = False) -> dict[str, Any]:
    """Steps/s of the fast path: device-resident uint8 + BatchAugment + FastStep."""
    device = torch.device(settings.device)
    shape, batch = SHAPES[settings.shape], settings.batch()
    fast, batches, train_steps = fast_path(settings, seed=0)

    def timed_steps(count: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        train_steps(count)
        synchronize(device)
        return time.perf_counter() - start

    # At least one untimed step under graphs: the first step captures (with its own warm-up).
    timed_steps(warmup_steps(settings))
    result = _rate(settings.steps, timed_steps(settings.steps), batch)
    fast.epoch_metrics()  # the one host sync per epoch the real loop pays
    if with_eval:
        plain = BatchAugment([], shape.mean, shape.std, shape.resize, shape.stored_size)
        inputs, _ = next(batches)
        for _ in range(settings.warmup):
            fast.predict(plain.apply(inputs, {}))
        synchronize(device)
        start = time.perf_counter()
        for _ in range(settings.steps):
            fast.predict(plain.apply(inputs, {}))
        synchronize(device)
        result["eval_ms_per_step"] = 1000.0 * (time.perf_counter() - start) / settings.steps
    return result


# --------------------------------------------------------------------------- authors'


class _PilDataset(torch.utils.data.Dataset):
    """What the notebooks iterate: a PIL image per item, transformed in the worker."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Any) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = self.images[index]
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        return self.transform(pil), int(self.labels[index])


def authors_transform(shape: DataShape) -> Any:
    """Table 2 with torchvision's classic PIL transforms, as the notebooks compose them."""
    from torchvision import transforms as T

    steps: list[Any] = [T.Resize(list(shape.resize))] if shape.resize else []
    for op in shape.augment:
        name = op["op"]
        if name == "hflip":
            steps.append(T.RandomHorizontalFlip(op.get("p", 0.5)))
        elif name == "rotate":
            steps.append(T.RandomRotation(op["degrees"]))
        elif name == "affine":
            steps.append(
                T.RandomAffine(degrees=op.get("degrees", 0), translate=tuple(op["translate"]))
            )
        elif name == "pad_crop":
            steps.append(T.RandomCrop(op["size"], padding=op["padding"]))
        elif name == "color_jitter":
            steps.append(
                T.ColorJitter(
                    *(op.get(k, 0) for k in ("brightness", "contrast", "saturation", "hue"))
                )
            )
        elif name == "resized_crop":
            steps.append(T.RandomResizedCrop(op["size"], scale=tuple(op["scale"])))
    return T.Compose([*steps, T.ToTensor(), T.Normalize(shape.mean, shape.std)])


def time_authors(settings: BenchSettings) -> dict[str, Any]:
    """Steps/s of the notebooks' pipeline: DataLoader + PIL transforms, fp32, eager."""
    device = torch.device(settings.device)
    shape, batch = SHAPES[settings.shape], settings.batch()
    images, labels = synthetic_images(shape, max(batch, min(settings.data_size, shape.train_size)))
    dataset = _PilDataset(
        images.permute(0, 2, 3, 1).numpy(), labels.numpy(), authors_transform(shape)
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=settings.workers,
        drop_last=True,
        persistent_workers=settings.workers > 0,
    )
    model = build_model(settings.model, shape, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def batches():
        while True:
            yield from loader

    stream = batches()

    def train_steps(count: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        running = 0.0
        for _ in range(count):
            inputs, targets = next(stream)
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            running += loss.item()  # the notebooks' running loss: a host sync every step
        synchronize(device)
        return time.perf_counter() - start

    train_steps(settings.warmup)
    return _rate(settings.steps, train_steps(settings.steps), batch)


# ------------------------------------------------------------------------- projection


def project_grid(
    settings: BenchSettings,
    cells: list[tuple[str, str]],
    epochs: int,
    seeds: int,
    packing_speedup: float | None,
    paper_epoch_seconds: dict[tuple[str, str], float],
) -> dict[str, Any]:
    """Wall time of the grid from each cell's measured train and eval step times."""
    rows, skipped = [], []
    for model, dataset in cells:
        if dataset not in SHAPES:
            skipped.append({"model": model, "dataset": dataset, "reason": "no data shape"})
            continue
        cell = settings.with_cell(model, dataset)
        shape, batch = SHAPES[dataset], cell.batch()
        timing = time_ours(cell, with_eval=True)
        train_batches = math.ceil(shape.train_size / batch)
        val_batches = math.ceil(shape.val_size / batch)
        # The partial last batch is counted as a full step: an upper bound by < 1 step.
        epoch_s = (
            train_batches * timing["ms_per_step"] + val_batches * timing["eval_ms_per_step"]
        ) / 1000
        rows.append(
            {
                "model": model,
                "dataset": dataset,
                "batch_size": batch,
                "train_batches": train_batches,
                "val_batches": val_batches,
                "train_ms_per_step": timing["ms_per_step"],
                "eval_ms_per_step": timing["eval_ms_per_step"],
                "epoch_s": epoch_s,
                "paper_epoch_s": paper_epoch_seconds.get((model, dataset)),
            }
        )
    serial_s = sum(row["epoch_s"] for row in rows) * epochs * seeds
    return {
        "epochs": epochs,
        "seeds": seeds,
        "cells": rows,
        "skipped": skipped,
        "complete": not skipped and len(rows) == len(cells),
        "serial_hours": serial_s / 3600,
        "packing_speedup": packing_speedup,
        "packed_hours": serial_s / 3600 / packing_speedup if packing_speedup else None,
        "assumptions": [
            f"every job runs {epochs} epochs (Table 1's cap; early stopping ends most runs sooner)",
            f"{seeds} seeds per cell; one validation pass per epoch; test and GHS passes not counted",
            "packed_hours divides by the packing speedup measured on the headline model and shape",
            "synthetic data of each dataset's shape; split sizes of the paper protocol",
        ],
    }
