"""The fast training step: bf16 autocast, channels_last, CUDA graphs, no host sync per step.

A small job (ResNet-18 at batch 128 on 28x28 images) leaves an H100 mostly idle: the step is
bound by kernel launches, not arithmetic. `FastStep` removes the launch cost by capturing the
whole step (forward, loss, backward, optimizer update, metric accumulation) in a CUDA graph and
replaying it; the model runs in bf16 autocast with channels_last activations while logits,
loss and metrics stay in fp32; loss and accuracy accumulate on the device and are read once
per epoch. A graph has fixed shapes, so the partial last batch of an epoch gets its own graph
(captured once, sharing the memory pool): every sample counts once and BatchNorm sees exactly
the real batch, as in eager mode.

On the CPU (or with cuda_graph=False) the same step runs eagerly, which is how it is tested.
The optimizer must be built with `capturable=True` for graphs (Adam/AdamW accept it); warm-up
steps needed before a capture are undone (parameters, buffers and optimizer state restored),
so graph capture does not change what the model learns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.experiment.config import PRECISIONS

WARMUP_STEPS = 3  # eager steps on a side stream before capture, as torch.cuda.graphs asks


def default_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


class FastStep:
    """One optimisation step per call on preprocessed float batches, with device-side metrics.

    `step(inputs, labels)` trains on one batch; `epoch_metrics()` returns the sample-weighted
    mean loss, the accuracy and the sample count since the last reset (one host sync).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device | str,
        precision: str = "bf16",
        channels_last: bool = True,
        cuda_graph: bool | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = default_loss,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        self.model = model
        self.optimizer = optimizer
        self.precision = precision
        self.channels_last = channels_last
        on_cuda = self.device.type == "cuda"
        self.cuda_graph = on_cuda if cuda_graph is None else cuda_graph
        if self.cuda_graph and not on_cuda:
            raise ValueError("cuda_graph=True needs a CUDA device; use cuda_graph=False on the CPU")
        if self.cuda_graph and not _is_capturable(optimizer):
            raise ValueError("a CUDA-graphed step needs the optimizer built with capturable=True")
        self.loss_fn = loss_fn
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.count = torch.zeros((), dtype=torch.int64, device=self.device)
        self.graphs: dict[tuple[int, ...], _GraphedStep] = {}
        self.graph_pool: Any = None

    # ------------------------------------------------------------------------------ API

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Train on one batch of float inputs (N, C, H, W) and int64 labels, on the device."""
        if not self.model.training:
            self.model.train()
        run_step(self, inputs, labels)

    def set_learning_rate(self, lr: float) -> None:
        """Change the learning rate; in place when it is a tensor, which graphs read on replay.

        A scheduler that assigns group["lr"] = float would be ignored by a captured graph (the
        old value is baked in); call this with the scheduler's new value instead.
        """
        for group in self.optimizer.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def epoch_metrics(self, reset: bool = True) -> dict[str, float]:
        """Mean loss (weighted by samples), accuracy and samples since the last reset."""
        count = int(self.count.item())
        metrics = {
            "loss": float(self.loss_sum.item()) / max(count, 1),
            "accuracy": int(self.correct.item()) / max(count, 1),
            "samples": count,
        }
        if reset:
            self.reset_metrics()
        return metrics

    def reset_metrics(self) -> None:
        # In place: the captured graphs hold these tensors' addresses.
        self.loss_sum.zero_()
        self.correct.zero_()
        self.count.zero_()

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """fp32 logits in eval mode under the same precision/layout (not graphed)."""
        self.model.eval()
        with self._autocast():
            logits = self.model(self.layout(inputs))
        return logits.float()

    # ------------------------------------------------------------------------ internals

    def layout(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.channels_last and inputs.ndim == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def _autocast(self) -> Any:
        enabled = self.precision == "bf16"
        # No weight-cast cache under graphs: cached casts made during capture would outlive it.
        return torch.autocast(
            device_type=self.device.type,
            dtype=torch.bfloat16,
            enabled=enabled,
            cache_enabled=not self.cuda_graph,
        )

    def prepare_grads_in_place(self) -> None:
        # Gradients are zeroed in place, never set to None: graphs keep their addresses.
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.grad.zero_()

    def body(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            logits = self.model(inputs)
        logits = logits.float()  # loss and metrics in fp32
        loss = self.loss_fn(logits, labels)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.loss_sum.add_(loss.detach() * labels.shape[0])
            self.correct.add_((logits.argmax(dim=1) == labels).sum())
            self.count.add_(labels.shape[0])
        return loss

    def snapshot(self) -> StepSnapshot:
        return StepSnapshot(
            [
                *self.model.parameters(),
                *self.model.buffers(),
                self.loss_sum,
                self.correct,
                self.count,
            ],
            self.optimizer,
        )


def run_step(stepper: Any, inputs: torch.Tensor, labels: torch.Tensor) -> None:
    """One training step of `stepper` (FastStep or harness.training.fused.FusedStep): eagerly, or by
    replaying the CUDA graph captured for this input shape (captured on first sight).

    The stepper provides cuda_graph, graphs (shape -> _GraphedStep), graph_pool, device, layout,
    prepare_grads_in_place, body and snapshot (what a warm-up step changes)."""
    if not stepper.cuda_graph:
        stepper.prepare_grads_in_place()
        stepper.body(stepper.layout(inputs), labels)
        return
    graphed = stepper.graphs.get(tuple(inputs.shape))
    if graphed is None:
        graphed = _capture(stepper, inputs, labels)
        stepper.graphs[tuple(inputs.shape)] = graphed
    graphed.inputs.copy_(inputs)
    graphed.labels.copy_(labels)
    graphed.graph.replay()


def _capture(stepper: Any, inputs: torch.Tensor, labels: torch.Tensor) -> _GraphedStep:
    static_inputs = stepper.layout(inputs.clone())
    static_labels = labels.clone()
    saved = stepper.snapshot()
    side = torch.cuda.Stream(stepper.device)
    side.wait_stream(torch.cuda.current_stream(stepper.device))
    with torch.cuda.stream(side):
        # Warm-up builds gradient tensors and optimizer state outside any graph pool, so
        # every graph sees the same persistent addresses.
        for _ in range(WARMUP_STEPS):
            stepper.prepare_grads_in_place()
            stepper.body(static_inputs, static_labels)
    torch.cuda.current_stream(stepper.device).wait_stream(side)
    saved.restore()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=stepper.graph_pool):
        stepper.prepare_grads_in_place()
        stepper.body(static_inputs, static_labels)
    if stepper.graph_pool is None:
        stepper.graph_pool = graph.pool()
    return _GraphedStep(graph, static_inputs, static_labels)


def make_adam(
    model: nn.Module, lr: float, weight_decay: float, device: torch.device | str
) -> torch.optim.Adam:
    """Adam (L2 form, as Table 1) ready for FastStep: on CUDA capturable, with a tensor lr so
    that set_learning_rate reaches captured graphs; on the CPU the ordinary optimizer."""
    if torch.device(device).type == "cuda":
        lr_tensor = torch.tensor(lr, dtype=torch.float32, device=device)
        return torch.optim.Adam(
            model.parameters(), lr=lr_tensor, weight_decay=weight_decay, capturable=True
        )
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


class _GraphedStep:
    def __init__(self, graph: Any, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        self.graph = graph
        self.inputs = inputs
        self.labels = labels


def _is_capturable(optimizer: torch.optim.Optimizer) -> bool:
    return all(group.get("capturable", False) for group in optimizer.param_groups)


class StepSnapshot:
    """Copies of everything a warm-up step changes, restored in place before capture.

    `optimizer` (a torch optimizer, or None when its state is among `tensors`): state the
    warm-up created did not exist before and is zeroed, Adam's fresh state."""

    def __init__(
        self, tensors: list[torch.Tensor], optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        self.tensors = [(t, t.detach().clone()) for t in tensors]
        self.optimizer = optimizer
        self.state = {
            id(param): {k: v.clone() for k, v in state.items() if torch.is_tensor(v)}
            for param, state in (optimizer.state.items() if optimizer is not None else ())
        }

    @torch.no_grad()
    def restore(self) -> None:
        for tensor, copy in self.tensors:
            tensor.copy_(copy)
        if self.optimizer is None:
            return
        # In place, so the tensors the graph captures are the ones the optimizer keeps.
        # State the warm-up created did not exist before: zeros are Adam's fresh state
        # (its step counter included), so the first real step is a first step.
        for param, state in self.optimizer.state.items():
            before = self.state.get(id(param), {})
            for key, value in state.items():
                if not torch.is_tensor(value):
                    continue
                if key in before:
                    value.copy_(before[key])
                else:
                    value.zero_()
