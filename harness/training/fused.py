"""Several seeds of one cell trained as one horizontally fused model (issue 6).

A ResNet-18 step at batch 128 on 28x28 images leaves an H100 mostly idle even when graphed;
packing independent processes helps, but each still launches its own small kernels. The seeds
of one paper-grid cell share everything but their random streams, so `FusedStep` trains S of
them as one model: their parameters and buffers are stacked along a new leading dimension
(torch.func.stack_module_state) and the architecture runs once per step under
torch.func.vmap, which turns every convolution into one grouped convolution and every linear
layer into one batched matmul.

Exactness: each member keeps its own everything --
- data: the step takes (S, B, ...) inputs, member s's batch from its own sampler/augmentation;
- BatchNorm: statistics and running buffers are per member (vmap normalises each member's slice
  of the batch alone; no statistic mixes members);
- loss: the sum of the members' mean losses, so each member's gradient is its own;
- optimizer: Adam (L2 weight decay, Table 1) written over the stacked tensors, with a
  learning rate and a step count per member (ReduceLROnPlateau acts per member), following
  torch.optim.Adam's arithmetic;
- metrics: loss sums and correct counts per member, on the device, read once per epoch.
What is shared: dropout draws from one generator (vmap's randomness="different": independent
masks per member, but not the masks a separate run seeded per member would draw), and floating
point order (a grouped convolution sums in another order than S separate ones).

Members leave at epoch boundaries (early stopping): `keep(indices)` compacts the stack. A member
is read out as an ordinary state_dict and torch.optim.Adam state_dict (`member_state`), and
loaded from them (`load_member`), so fused and single-job checkpoints are interchangeable.
On CUDA the step is captured in CUDA graphs like harness.training.fastpath.FastStep (same capture code).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from harness.training.fastpath import PRECISIONS, StepSnapshot, run_step

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which Table 1's Adam uses
EPS = 1e-8


class FusedStep:
    """S copies of one architecture trained in lockstep, each on its own batches.

    `step(inputs (S, B, C, H, W), labels (S, B))`; `epoch_metrics()` -> one dict per member;
    `set_learning_rates([lr per member])`; `member_state(i)` / `load_member(i, ...)`;
    `member_module(i)` (a real nn.Module holding member i's weights, for evaluation);
    `keep(indices)` (drop the other members).
    """

    def __init__(
        self,
        members: list[nn.Module],
        *,
        lr: float,
        weight_decay: float,
        device: torch.device | str,
        precision: str = "bf16",
        cuda_graph: bool | None = None,
    ) -> None:
        if not members:
            raise ValueError("a fused step needs at least one member")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        on_cuda = self.device.type == "cuda"
        self.cuda_graph = on_cuda if cuda_graph is None else cuda_graph
        if self.cuda_graph and not on_cuda:
            raise ValueError("cuda_graph=True needs a CUDA device; use cuda_graph=False on the CPU")
        self.precision = precision
        self.weight_decay = weight_decay
        members = [m.to(self.device) for m in members]
        # A real module to read members out into, and a weightless one for functional_call.
        self.reference = copy.deepcopy(members[0])
        self.template = copy.deepcopy(members[0]).to("meta").train()
        self.param_names = [name for name, _ in members[0].named_parameters()]
        params, buffers = stack_module_state(members)
        self.params: dict[str, torch.Tensor] = params
        self.buffers: dict[str, torch.Tensor] = buffers
        size = len(members)
        self.exp_avg = {k: torch.zeros_like(p) for k, p in params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(p) for k, p in params.items()}
        self.steps = torch.zeros(size, dtype=torch.float64, device=self.device)
        self.lr = torch.full((size,), lr, dtype=torch.float64, device=self.device)
        self._new_metrics(size)
        self.graphs: dict[tuple[int, ...], Any] = {}
        self.graph_pool: Any = None
        self._forward = vmap(self._member_forward, randomness="different")

    @property
    def size(self) -> int:
        return int(self.steps.shape[0])

    # ------------------------------------------------------------------------------ API

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        """One step of every member: inputs (S, B, C, H, W) float, labels (S, B) int64."""
        if inputs.shape[0] != self.size or labels.shape[:1] != inputs.shape[:1]:
            raise ValueError(
                f"fused step of {self.size} members got inputs {tuple(inputs.shape)} and labels "
                f"{tuple(labels.shape)}; stack one batch per member along dimension 0"
            )
        run_step(self, inputs, labels)

    def set_learning_rates(self, rates: list[float]) -> None:
        """In place (a captured graph reads this tensor), one rate per member."""
        self.lr.copy_(torch.tensor(rates, dtype=torch.float64))

    def epoch_metrics(self, reset: bool = True) -> list[dict[str, float]]:
        """Per member: mean loss (weighted by samples), accuracy and samples (one host sync)."""
        loss_sum, correct = self.loss_sum.tolist(), self.correct.tolist()
        count = int(self.count.item())
        metrics = [
            {"loss": loss / max(count, 1), "accuracy": right / max(count, 1), "samples": count}
            for loss, right in zip(loss_sum, correct, strict=True)
        ]
        if reset:
            self.reset_metrics()
        return metrics

    def reset_metrics(self) -> None:
        self.loss_sum.zero_()  # in place: the captured graphs hold these addresses
        self.correct.zero_()
        self.count.zero_()

    @torch.no_grad()
    def member_state(self, index: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(model state_dict, torch.optim.Adam state_dict) of member `index`, as copies."""
        model = self.member_module(index)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        optimizer = torch.optim.Adam(
            model.parameters(), lr=float(self.lr[index]), weight_decay=self.weight_decay
        )
        if float(self.steps[index]) > 0:
            for name, param in zip(self.param_names, model.parameters(), strict=True):
                optimizer.state[param] = {
                    "step": self.steps[index].detach().clone().cpu(),
                    "exp_avg": self.exp_avg[name][index].detach().clone(),
                    "exp_avg_sq": self.exp_avg_sq[name][index].detach().clone(),
                }
        return state, optimizer.state_dict()

    @torch.no_grad()
    def load_member(
        self, index: int, model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any]
    ) -> None:
        """Member `index` takes a job's checkpointed weights and Adam state (either kind)."""
        self.reference.load_state_dict(model_state)  # checks names and shapes
        named = dict(self.reference.named_parameters()) | dict(self.reference.named_buffers())
        for name, tensor in (self.params | self.buffers).items():
            tensor[index].copy_(named[name])
        group = optimizer_state["param_groups"][0]
        self.lr[index] = float(group["lr"])
        by_index = optimizer_state["state"]
        for position, name in zip(group["params"], self.param_names, strict=True):
            state = by_index.get(position)
            if state is None:  # never stepped: Adam's fresh state
                self.exp_avg[name][index].zero_()
                self.exp_avg_sq[name][index].zero_()
                continue
            self.exp_avg[name][index].copy_(state["exp_avg"])
            self.exp_avg_sq[name][index].copy_(state["exp_avg_sq"])
            self.steps[index] = float(state["step"])
        if not by_index:
            self.steps[index] = 0.0

    @torch.no_grad()
    def member_module(self, index: int) -> nn.Module:
        """The shared reference module holding member `index`'s weights (valid until the next
        call; copy its state_dict to keep it)."""
        named = dict(self.reference.named_parameters()) | dict(self.reference.named_buffers())
        for name, tensor in (self.params | self.buffers).items():
            named[name].copy_(tensor[index])
        return self.reference

    @torch.no_grad()
    def keep(self, indices: list[int]) -> None:
        """Drop every member not in `indices` (in that order); captured graphs are rebuilt."""
        if not indices:
            raise ValueError("keep() needs at least one member; stop using the step instead")
        where = torch.tensor(indices, dtype=torch.long, device=self.device)
        self.params = {
            k: p.detach().index_select(0, where).requires_grad_(True)
            for k, p in self.params.items()
        }
        self.buffers = {k: b.index_select(0, where) for k, b in self.buffers.items()}
        self.exp_avg = {k: t.index_select(0, where) for k, t in self.exp_avg.items()}
        self.exp_avg_sq = {k: t.index_select(0, where) for k, t in self.exp_avg_sq.items()}
        self.steps = self.steps.index_select(0, where)
        self.lr = self.lr.index_select(0, where)
        self._new_metrics(len(indices))
        self.graphs, self.graph_pool = {}, None

    # ------------------------------------------------------------------------ internals

    def _new_metrics(self, size: int) -> None:
        self.loss_sum = torch.zeros(size, dtype=torch.float64, device=self.device)
        self.correct = torch.zeros(size, dtype=torch.int64, device=self.device)
        self.count = torch.zeros((), dtype=torch.int64, device=self.device)

    def _member_forward(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def layout(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs

    def prepare_grads_in_place(self) -> None:
        # Zeroed in place, never set to None: captured graphs keep the gradients' addresses.
        for param in self.params.values():
            if param.grad is not None:
                param.grad.zero_()

    def body(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        members, batch = labels.shape
        enabled = self.precision == "bf16"
        # No weight-cast cache under graphs: cached casts made during capture would outlive it.
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=False
        ):
            logits = self._forward(self.params, self.buffers, inputs)
        if logits.dtype in (torch.bfloat16, torch.float16):
            logits = logits.float()  # loss and metrics in fp32 (float64 models stay float64)
        losses = F.cross_entropy(
            logits.reshape(members * batch, -1), labels.reshape(-1), reduction="none"
        ).view(members, batch)
        member_loss = losses.mean(dim=1)
        # The sum's gradient with respect to member s's weights is member s's own gradient.
        member_loss.sum().backward()
        self._adam()
        with torch.no_grad():
            self.loss_sum.add_(member_loss.detach().double() * batch)
            self.correct.add_((logits.argmax(dim=2) == labels).sum(dim=1))
            self.count.add_(batch)

    @torch.no_grad()
    def _adam(self) -> None:
        """torch.optim.Adam (L2 weight decay, no amsgrad) with per-member lr and step count."""
        beta1, beta2 = BETAS
        # Step counts and rates in float64, as torch.optim.Adam's Python-float arithmetic.
        self.steps.add_(1.0)
        bias1 = 1.0 - torch.pow(beta1, self.steps)
        bias2_sqrt = (1.0 - torch.pow(beta2, self.steps)).sqrt()
        step_size = self.lr / bias1
        for name, param in self.params.items():
            grad = param.grad
            if grad is None:
                continue
            if self.weight_decay:
                grad = grad.add(param, alpha=self.weight_decay)
            shape = (-1,) + (1,) * (param.ndim - 1)
            size = step_size.to(param.dtype).view(shape)
            bias2 = bias2_sqrt.to(param.dtype).view(shape)
            exp_avg, exp_avg_sq = self.exp_avg[name], self.exp_avg_sq[name]
            exp_avg.lerp_(grad, 1.0 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            denom = (exp_avg_sq.sqrt() / bias2).add_(EPS)
            param.sub_(exp_avg / denom * size)

    def snapshot(self) -> StepSnapshot:
        tensors = [
            *self.params.values(),
            *self.buffers.values(),
            *self.exp_avg.values(),
            *self.exp_avg_sq.values(),
            self.steps,
            self.loss_sum,
            self.correct,
            self.count,
        ]
        return StepSnapshot(tensors)


__all__ = ["FusedStep"]
