"""What the training loop (harness/training/loop.py) needs to train a cohort: the seeds of one cell,
fused into one model (harness.training.fused) when there are several, one job otherwise.

The trainers give the loop one interface for both: step a list of per-member batches, read
per-member metrics, models, learning rates and checkpoint state, drop finished members.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.experiment.config import JobSpec
from harness.training.checkpoint import load_checkpoint
from harness.training.fastpath import FastStep, make_adam
from harness.training.fused import FusedStep
from harness.training.runtime import seed_everything
from harness.training.steps import LoaderStep


class SingleTrainer:
    """One job's model, optimizer and step (LoaderStep or FastStep) behind the interface the
    training loop in harness/training/loop.py uses for a cohort of any size."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, stepper: Any) -> None:
        self.module, self.optimizer, self.stepper = model, optimizer, stepper

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> None:
        (images, labels) = batches[0]
        self.stepper.step(
            images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        )

    def epoch_metrics(self) -> list[dict[str, float]]:
        return [self.stepper.epoch_metrics()]

    def train_mode(self) -> None:
        self.module.train()  # evaluation left it in eval mode

    def model(self, index: int) -> nn.Module:
        return self.module

    def learning_rate(self, index: int) -> float:
        return float(self.optimizer.param_groups[0]["lr"])  # a tensor for a CUDA-graphed step

    def set_learning_rate(self, index: int, lr: float) -> None:
        # Through the step: a captured CUDA graph reads the lr tensor, not group["lr"].
        self.stepper.set_learning_rate(lr)

    def state(self, index: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return self.module.state_dict(), self.optimizer.state_dict()

    def load(self, index: int, model_state: dict, optimizer_state: dict) -> None:
        tensor_lr = torch.is_tensor(self.optimizer.param_groups[0]["lr"])
        self.module.load_state_dict(model_state)
        self.optimizer.load_state_dict(optimizer_state)
        if tensor_lr:  # a checkpoint written by a fused cohort holds a float rate
            for group in self.optimizer.param_groups:
                lr = group["lr"]
                device = self.optimizer.param_groups[0]["params"][0].device
                group["lr"] = torch.as_tensor(float(lr), dtype=torch.float32, device=device)

    def keep(self, indices: list[int]) -> None:
        pass  # one member: nothing to compact


class FusedTrainer:
    """The seeds of one cell as one harness.training.fused.FusedStep, behind SingleTrainer's interface
    (member indices are positions among the members still training)."""

    def __init__(self, fused: Any) -> None:
        self.fused = fused

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> None:
        images = torch.stack([images for images, _ in batches]).to(device, non_blocking=True)
        labels = torch.stack([labels for _, labels in batches]).to(device, non_blocking=True)
        self.fused.step(images, labels)

    def epoch_metrics(self) -> list[dict[str, float]]:
        return self.fused.epoch_metrics()

    def train_mode(self) -> None:
        pass  # the fused step's template is always in train mode; evaluation uses a copy

    def model(self, index: int) -> nn.Module:
        return self.fused.member_module(index)

    def learning_rate(self, index: int) -> float:
        return float(self.fused.lr[index])

    def set_learning_rate(self, index: int, lr: float) -> None:
        self.fused.lr[index] = lr  # in place: captured graphs read this tensor

    def state(self, index: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return self.fused.member_state(index)

    def load(self, index: int, model_state: dict, optimizer_state: dict) -> None:
        self.fused.load_member(index, model_state, optimizer_state)

    def keep(self, indices: list[int]) -> None:
        self.fused.keep(indices)


def load_state(path: Path | None, spec: JobSpec, dev: torch.device) -> dict | None:
    if path is None or not Path(path).exists():
        return None
    return load_checkpoint(Path(path), spec.key(), dev)


def build_trainer(specs: list[JobSpec], meta: Any, config: Any, dev: torch.device) -> Any:
    """Each member's model initialised from its own seed, and the step that trains them."""
    from harness import models

    built = []
    for spec in specs:
        seed_everything(spec.seed)
        built.append(
            models.build_model(spec.model, meta.channels, meta.num_classes, **config.model).to(dev)
        )
    if len(built) > 1:
        fused = FusedStep(
            built,
            lr=config.lr,
            weight_decay=config.weight_decay,
            device=dev,
            precision=config.precision,
        )
        return FusedTrainer(fused)
    model = built[0]
    # The pipeline's two variation points: where batches come from, and the step.
    if config.pipeline == "device":
        optimizer = make_adam(model, config.lr, config.weight_decay, dev)
        # CUDA graph and channels_last on CUDA only; on the CPU the same step runs eagerly.
        stepper: Any = FastStep(
            model, optimizer, dev, config.precision, channels_last=dev.type == "cuda"
        )
        return SingleTrainer(model, optimizer, stepper)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return SingleTrainer(model, optimizer, LoaderStep(model, optimizer, dev, config.precision))


def run_by_resume_epoch(
    run_jobs: Callable[..., list[Any]],
    specs: list[JobSpec],
    paths: list[Path | None],
    states: list[dict | None],
    resumed: list[int],
    arguments: dict[str, Any],
) -> list[Any]:
    """One cohort per resume epoch, run one after the other (indices mapped back)."""
    outcomes: dict[int, Any] = {}
    on_epoch, on_done = arguments.pop("on_epoch"), arguments.pop("on_done")
    for epochs in resumed:
        group = [i for i, s in enumerate(states) if (len(s["history"]) if s else 0) == epochs]
        results = run_jobs(
            [specs[i] for i in group],
            checkpoint_paths=[paths[i] for i in group],
            on_epoch=None if on_epoch is None else (lambda j, r, g=group: on_epoch(g[j], r)),
            on_done=None if on_done is None else (lambda j, o, g=group: on_done(g[j], o)),
            **arguments,
        )
        outcomes.update(zip(group, results, strict=True))
    return [outcomes[i] for i in range(len(specs))]
