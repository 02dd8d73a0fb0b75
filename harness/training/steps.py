"""The "loader" pipeline's training step (the authors' way); harness.training.fastpath has the fast one."""

from __future__ import annotations

import torch
from torch import nn

from harness.training.runtime import autocast


class LoaderStep:
    """The "loader" pipeline's training step: eager autocast/backward/Adam, as the authors ran
    it. Same interface as harness.training.fastpath.FastStep (step, set_learning_rate, epoch_metrics),
    so the one loop in run_job takes either; sums stay on the device (no host sync per step)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        precision: str,
    ) -> None:
        self.model, self.optimizer, self.device, self.precision = (
            model,
            optimizer,
            device,
            precision,
        )
        self.reset_metrics()

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        with autocast(self.device, self.precision):
            logits = self.model(images)
            loss = nn.functional.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.seen += len(labels)
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.loss_sum += loss.detach().double() * len(labels)

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def epoch_metrics(self) -> dict[str, float]:
        metrics = {
            "loss": float(self.loss_sum) / self.seen,
            "accuracy": int(self.correct) / self.seen,
            "samples": self.seen,
        }
        self.reset_metrics()
        return metrics

    def reset_metrics(self) -> None:
        self.seen = 0
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
