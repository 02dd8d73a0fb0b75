"""The one evaluation pass: logits, loss, accuracy and GradAttn attention statistics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.training.outcome import JobInterrupted
from harness.training.runtime import autocast


@dataclass
class Evaluation:
    logits: torch.Tensor  # (N, classes) float32 on the CPU
    labels: torch.Tensor  # (N,) int64 on the CPU
    loss: float  # mean cross-entropy
    acc: float
    attention_by_token: list[list[float]] | None  # per encoder layer, mean weight received


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    *,
    precision: str = "fp32",
    details: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> Evaluation:
    """Eval-mode pass over `loader`; with `details` (GradAttn models) also the mean attention
    weight each token position receives, averaged over samples, heads and query positions."""
    model.eval()
    all_logits, all_labels = [], []
    attention_sums: list[torch.Tensor] | None = None
    for images, labels in loader:
        if should_stop is not None and should_stop():
            raise JobInterrupted("stop requested during evaluation")
        images = images.to(device, non_blocking=True)
        with autocast(device, precision):
            if details:
                logits, info = model(images, return_details=True)
                # (B, heads, query, key) -> sum over samples of the mean over heads and queries
                batch_sums = [a.double().mean(dim=(1, 2)).sum(dim=0) for a in info["attention"]]
                attention_sums = (
                    batch_sums
                    if attention_sums is None
                    else [
                        total + part for total, part in zip(attention_sums, batch_sums, strict=True)
                    ]
                )
            else:
                logits = model(images)
        all_logits.append(logits.float().cpu())
        all_labels.append(labels.cpu().long())
    logits_cpu, labels_cpu = torch.cat(all_logits), torch.cat(all_labels)
    count = len(labels_cpu)
    attention = None
    if attention_sums is not None:
        attention = [(total / count).cpu().tolist() for total in attention_sums]
    return Evaluation(
        logits=logits_cpu,
        labels=labels_cpu,
        loss=float(nn.functional.cross_entropy(logits_cpu.double(), labels_cpu)),
        acc=float((logits_cpu.argmax(1) == labels_cpu).double().mean()),
        attention_by_token=attention,
    )
