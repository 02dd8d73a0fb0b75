"""Keras-style callbacks on validation accuracy, called once after every epoch.

Exact semantics (docs/PROTOCOL.md): the best value starts at minus infinity, so the first epoch
always sets the reference; an epoch improves when its value is strictly greater than the best
so far (no min_delta); `wait` counts consecutive epochs without improvement.
Both keep their whole state in plain numbers so a checkpoint can save and restore them.
"""

from __future__ import annotations

import math
from typing import Any


class ReduceLROnPlateau:
    """Multiply the learning rate by `factor` after `patience` epochs in a row without
    improvement, never below `min_lr`; the wait counter restarts after each reduction."""

    def __init__(self, lr: float, factor: float = 0.2, patience: int = 3, min_lr: float = 1e-7):
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.lr = lr
        self.factor = factor
        self.patience = patience
        self.min_lr = min_lr
        self.best = -math.inf
        self.wait = 0

    def step(self, value: float) -> float:
        """Record one epoch's value; returns the learning rate for the next epoch."""
        if value > self.best:
            self.best = value
            self.wait = 0
            return self.lr
        self.wait += 1
        # As Keras: at min_lr already, nothing changes and the counter keeps counting.
        if self.wait >= self.patience and self.lr > self.min_lr:
            self.lr = max(self.lr * self.factor, self.min_lr)
            self.wait = 0
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr = float(state["lr"])
        self.best = float(state["best"])
        self.wait = int(state["wait"])


class EarlyStopping:
    """Stop after `patience` epochs in a row without improvement; remembers the best epoch.

    The caller keeps the best weights (a deep copy) whenever `step` returns ``improved``.
    """

    def __init__(self, patience: int = 7):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.best = -math.inf
        self.best_epoch = 0
        self.wait = 0
        self.stopped = False

    def step(self, epoch: int, value: float) -> bool:
        """Record epoch `epoch`'s (1-based) value; True when it is the new best."""
        if value > self.best:
            self.best = value
            self.best_epoch = epoch
            self.wait = 0
            return True
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped = True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped": self.stopped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])
        self.stopped = bool(state["stopped"])
