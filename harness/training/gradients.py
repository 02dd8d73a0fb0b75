"""Gradient health after training: per-layer gradient norms and the Gradient Health Score.

Two measurements, both on the first ``batches`` batches of a loader (the test loader, in the
paper), with the model in train mode, one forward + cross-entropy backward per batch and no
optimiser step. They run on a deep copy of the model, so neither the BatchNorm running
statistics nor the gradients of the evaluated model change.

- ``output`` (the paper's): a full backward hook on every ``nn.Conv2d``, ``nn.Linear`` and
  ``nn.TransformerEncoderLayer`` records the L2 norm of ``grad_output[0]`` each time it fires.
  A hooked module whose hook never fires is *silent* (``batches == 0``): e.g. the ``out_proj``
  Linear of ``nn.MultiheadAttention``, which is called functionally, not as a module.
- ``param``: for every module that owns parameters directly (leaf layers, plus modules such as
  ``nn.MultiheadAttention`` with its ``in_proj_weight`` or a model's positional embedding), the
  L2 norm of the gradients of those parameters, per batch. A module none of whose parameters
  received a gradient is silent.

Per layer: mean/std (population)/min/max of its per-batch norms, in registration (depth) order.
``health_score`` (harness.training.health, torch-free) turns layer means into GHS for any
threshold range.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from harness.training.health import exploding_count, health_score, vanishing_count

__all__ = ["MODES", "exploding_count", "health_score", "measure_gradients", "vanishing_count"]

HOOKED_TYPES = (nn.Conv2d, nn.Linear, nn.TransformerEncoderLayer)
MODES = ("output", "param")


def _summary(norms: list[float]) -> dict[str, float | int | None]:
    if not norms:
        return {"batches": 0, "mean": None, "std": None, "min": None, "max": None}
    values = torch.tensor(norms, dtype=torch.float64)
    return {
        "batches": len(norms),
        "mean": float(values.mean()),
        "std": float(values.std(unbiased=False)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def _layer_name(name: str) -> str:
    return name or "(model)"


def measure_gradients(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    max_batches: int,
    device: str | torch.device = "cpu",
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """Both measurements on a copy of `model`; rows with keys mode, layer_index, layer, kind,
    batches, mean, std, min, max (the last four None for a silent layer)."""
    if max_batches < 1:
        raise ValueError(f"max_batches must be >= 1, got {max_batches}")
    probe = copy.deepcopy(model).to(device)
    probe.train()
    run_forward = forward or (lambda module, x: module(x))

    hooked = [(name, m) for name, m in probe.named_modules() if isinstance(m, HOOKED_TYPES)]
    output_norms: dict[str, list[float]] = {name: [] for name, _ in hooked}

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _grad_input: Any, grad_output: tuple) -> None:
            if grad_output and grad_output[0] is not None:
                output_norms[name].append(float(grad_output[0].detach().double().norm()))

        return hook

    handles = [m.register_full_backward_hook(make_hook(name)) for name, m in hooked]
    owners = [
        (name, m) for name, m in probe.named_modules() if any(True for _ in m.parameters(False))
    ]
    param_norms: dict[str, list[float]] = {name: [] for name, _ in owners}
    try:
        for images, labels in itertools.islice(batches, max_batches):
            probe.zero_grad(set_to_none=True)
            logits = run_forward(probe, images.to(device))
            loss = nn.functional.cross_entropy(logits, labels.to(device))
            with warnings.catch_warnings():
                # The first layer's input (the images) needs no gradient; its hook still fires
                # with grad_output, which is all we read. PyTorch warns about exactly that.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss.backward()
            for name, module in owners:
                grads = [p.grad for p in module.parameters(False) if p.grad is not None]
                if grads:
                    squared = sum(float(g.detach().double().pow(2).sum()) for g in grads)
                    param_norms[name].append(math.sqrt(squared))
    finally:
        for handle in handles:
            handle.remove()

    rows: list[dict[str, Any]] = []
    for index, (name, module) in enumerate(hooked):
        rows.append(
            {
                "mode": "output",
                "layer_index": index,
                "layer": _layer_name(name),
                "kind": type(module).__name__,
                **_summary(output_norms[name]),
            }
        )
    for index, (name, module) in enumerate(owners):
        rows.append(
            {
                "mode": "param",
                "layer_index": index,
                "layer": _layer_name(name),
                "kind": type(module).__name__,
                **_summary(param_norms[name]),
            }
        )
    return rows
