"""What one run of the training loop hands back: epoch records and the job's outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float  # running accuracy over the epoch, as Keras reports it (fraction)
    val_loss: float
    val_acc: float
    lr: float  # learning rate used during this epoch
    train_seconds: float
    eval_seconds: float


@dataclass
class JobOutcome:
    metrics: dict[str, float | None]  # harness.training.metrics.METRIC_KEYS
    best_epoch: int
    epochs_run: int
    evaluated_epoch: int
    gen_gap_best: float  # train_acc - val_acc at the best epoch (fractions)
    gen_gap_last: float  # the same at the last epoch run
    epoch_seconds: float  # means over epochs: training + validation pass
    train_seconds: float
    eval_seconds: float
    params: int
    epochs: list[EpochRecord]  # the full history, also after a resume
    gradient_layers: list[dict]
    provenance: dict
    extra: dict
    device: str


class JobInterrupted(Exception):
    """should_stop() returned True: the epoch in flight is abandoned; the last checkpoint stays."""


def job_outcome(
    history: list[EpochRecord],
    *,
    best_epoch: int,
    evaluated_epoch: int,
    params: int,
    device: str,
    metrics: dict[str, float | None] | None = None,
    gradient_layers: list[dict] | None = None,
    provenance: dict | None = None,
    extra: dict[str, Any] | None = None,
) -> JobOutcome:
    """The outcome of a run with `history`; gaps and mean times are derived from it here only."""
    best, last = history[best_epoch - 1], history[-1]
    return JobOutcome(
        metrics=metrics or {},
        best_epoch=best_epoch,
        epochs_run=len(history),
        evaluated_epoch=evaluated_epoch,
        gen_gap_best=best.train_acc - best.val_acc,
        gen_gap_last=last.train_acc - last.val_acc,
        epoch_seconds=float(np.mean([r.train_seconds + r.eval_seconds for r in history])),
        train_seconds=float(np.mean([r.train_seconds for r in history])),
        eval_seconds=float(np.mean([r.eval_seconds for r in history])),
        params=params,
        epochs=history,
        gradient_layers=gradient_layers or [],
        provenance=provenance or {},
        extra=extra or {},
        device=device,
    )
