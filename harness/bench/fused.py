"""`harness bench --fused`: the seeds of one cell trained as one fused model (issue 6).

Packing runs k independent processes, each launching its own small kernels; `FusedStep`
(harness/training/fused.py) instead stacks S models of one architecture and runs them as one vmapped
model, so a step launches each kernel once for all S members. This module times that step the
way the fast path is timed in harness.bench.pipeline (same synthetic device-resident uint8 data, same
BatchAugment, same precision and CUDA-graph setting, the same warm-up rule) and compares it
with one unfused job and with the best packing total measured in the same run.

What is timed per step, as a cohort in the training loop would pay it: each member draws its
own batch (its own data order) and augments it with its own generator, the S batches are
stacked, and one fused step trains all S members. Members are built with seeds 0..S-1.
FusedStep keeps NCHW (no channels_last: its inputs are a 5-D stack).
"""

from __future__ import annotations

import gc
import time
from typing import Any

import torch

from harness.bench.pipeline import (
    BenchSettings,
    build_model,
    device_data,
    endless_batches,
    synchronize,
    warmup_steps,
)
from harness.datasets.gpu.shapes import SHAPES
from harness.training.fused import FusedStep

GIB = 1024**3


def time_fused(settings: BenchSettings, members: int) -> dict[str, Any]:
    """Fused steps/s (and member-steps/s) of `members` copies of settings.model."""
    device = torch.device(settings.device)
    shape, batch = SHAPES[settings.shape], settings.batch()
    on_cuda = device.type == "cuda"
    if on_cuda:
        # The previous measurement's graphs and tensors are gone once collected; the peak
        # below is then this S's own (plus whatever the caller still holds: `baseline`).
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    split, augment = device_data(settings)
    fused = FusedStep(
        [build_model(settings.model, shape, device, seed=seed) for seed in range(members)],
        lr=1e-3,
        weight_decay=1e-4,
        device=device,
        precision=settings.precision,
        cuda_graph=settings.cuda_graph,
    )
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in range(members)]
    streams = [endless_batches(split, batch, generator) for generator in generators]

    def timed_steps(count: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(count):
            inputs, labels = [], []
            for stream, generator in zip(streams, generators, strict=True):
                images, targets = next(stream)
                inputs.append(augment(images, generator))
                labels.append(targets)
            fused.step(torch.stack(inputs), torch.stack(labels))
        synchronize(device)
        return time.perf_counter() - start

    timed_steps(warmup_steps(settings))  # under graphs the first step captures
    seconds = timed_steps(settings.steps)
    fused.epoch_metrics()  # the one host sync per epoch the real loop pays
    fused_rate = settings.steps / seconds
    result: dict[str, Any] = {
        "members": members,
        "steps": settings.steps,
        "seconds": seconds,
        "fused_steps_per_s": fused_rate,
        "ms_per_fused_step": 1000.0 / fused_rate,
        "member_steps_per_s": members * fused_rate,
        "images_per_s": members * fused_rate * batch,
        "peak_memory_gib": None,
        "baseline_memory_gib": None,
    }
    if on_cuda:
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        result["baseline_memory_gib"] = baseline / GIB
    return result


def measure_fused(
    settings: BenchSettings,
    sizes: list[int],
    one_job_steps_per_s: float,
    best_packing_steps_per_s: float | None,
) -> dict[str, Any]:
    """The "fused" section of the bench JSON: one run per S in `sizes`, with ratios against
    one unfused job (the "ours" figure) and the best packing total (None: packing skipped)."""
    runs = []
    for members in sizes:
        run = time_fused(settings, members)
        run["vs_one_job"] = run["member_steps_per_s"] / one_job_steps_per_s
        run["vs_best_packing"] = (
            run["member_steps_per_s"] / best_packing_steps_per_s
            if best_packing_steps_per_s
            else None
        )
        runs.append(run)
    best = max(runs, key=lambda run: run["member_steps_per_s"], default=None)
    return {
        "model": settings.model,
        "dataset_shape": settings.shape,
        "batch_size": settings.batch(),
        "precision": settings.precision,
        "cuda_graph": settings.cuda_graph,
        "channels_last": False,
        "sizes": sizes,
        "one_job_steps_per_s": one_job_steps_per_s,
        "best_packing_steps_per_s": best_packing_steps_per_s,
        "runs": runs,
        "best_members": best["members"] if best else None,
        "best_member_steps_per_s": best["member_steps_per_s"] if best else None,
    }


def add_fused_projection(
    settings: BenchSettings, projection: dict[str, Any], members: int
) -> dict[str, Any]:
    """`harness bench --grid-fused`: every projected cell's training steps at the member-step
    time of a fused cohort of `members` seeds of that cell's (model, shape), measured here;
    evaluation stays the cell's unfused eval step (members are evaluated one by one)."""
    total_s = 0.0
    for row in projection["cells"]:
        timing = time_fused(settings.with_cell(row["model"], row["dataset"]), members)
        member_ms = 1000.0 / timing["member_steps_per_s"]
        row["fused_members"] = members
        row["fused_member_ms_per_step"] = member_ms
        row["fused_epoch_s"] = (
            row["train_batches"] * member_ms + row["val_batches"] * row["eval_ms_per_step"]
        ) / 1000
        total_s += row["fused_epoch_s"]
    seeds, epochs = projection["seeds"], projection["epochs"]
    projection["fused_members"] = members
    projection["fused_hours"] = total_s * epochs * seeds / 3600
    projection["method"] = "fused"
    projection["assumptions"].append(
        f"fused_hours: the {seeds} seeds of a cell train in cohorts of {members} fused members "
        f"(the largest --fused size, at most the seeds per cell), each member-step at the "
        f"measured fused rate"
        + ("" if seeds % members == 0 else "; the smaller last cohort is counted at that rate")
    )
    return projection


def fused_cohort_size(sizes: list[int], seeds: int) -> int:
    """The cohort the projection measures: the largest --fused size, but never more members
    than a cell has seeds (a cohort holds the seeds of one cell only)."""
    return min(max(sizes), seeds)
