"""The training protocol of one job, top to bottom (docs/PROTOCOL.md has the exact rules).

Adam (L2 weight decay) + cross-entropy, at most `max_epochs` epochs, ReduceLROnPlateau and
EarlyStopping on validation accuracy after every epoch, the best weights restored before the
test evaluation (unless the reference-code quirk `last_epoch_weights`), then test metrics,
attention statistics for GradAttn models, gradient health and provenance.

Randomness: `seed` seeds the model initialisation; each epoch re-seeds dropout/augmentation
and the data order from (seed, epoch), so a run resumed from the checkpoint after epoch k
replays epochs k+1... exactly as an uninterrupted run does (bitwise on the CPU).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import provenance
from harness.callbacks import EarlyStopping, ReduceLROnPlateau
from harness.checkpoint import load_checkpoint, save_checkpoint
from harness.config import JobSpec
from harness.errors import HarnessError
from harness.fastpath import FastStep, make_adam
from harness.gradients import measure_gradients
from harness.metrics import classification_metrics
from harness.outcome import EpochRecord, JobInterrupted, JobOutcome, job_outcome
from harness.runtime import (
    DeviceBatches,
    autocast,
    check_device,
    check_pipeline,
    derived_seed,
    determinism,
    device_splits,
    load_data,
    make_loader,
    seed_everything,
    sync,
)


class LoaderStep:
    """The "loader" pipeline's training step: eager autocast/backward/Adam, as the authors ran
    it. Same interface as harness.fastpath.FastStep (step, set_learning_rate, epoch_metrics),
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


# --------------------------------------------------------------------------- evaluation


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


# --------------------------------------------------------------------------- the job


def run_job(
    spec: JobSpec,
    *,
    device: str = "cpu",
    data_root: Path,
    checkpoint_path: Path | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    slots: int = 1,
    progress: bool = False,
    evaluate_test: bool = True,
) -> JobOutcome:
    """Train, evaluate and measure one job (the worker's contract: see module docstring).

    ``evaluate_test=False`` (hyper-parameter tuning) stops after training: the test split is
    never touched, and the outcome has empty ``metrics`` and ``gradient_layers``."""
    import models

    config = spec.config
    for name in ("max_epochs", "batch_size", "max_train_batches", "grad_batches"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise HarnessError(f"{name}={value} must be at least 1; fix the job's overrides")
    dev = check_device(device)
    autocast(dev, config.precision)  # validate the precision before any work
    check_pipeline(config.pipeline)
    if dev.type == "cpu" and slots > 1:
        # Several jobs share the CPU: split its cores instead of oversubscribing them.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // slots))
    data = load_data(spec, data_root)
    meta = data.meta
    stop_requested = should_stop or (lambda: False)

    with determinism(config.deterministic, device):
        seed_everything(spec.seed)
        model = models.build_model(spec.model, meta.channels, meta.num_classes, **config.model)
        model = model.to(dev)
        # The pipeline's two variation points: where batches come from, and the step.
        on_device = config.pipeline == "device"
        if on_device:
            optimizer = make_adam(model, config.lr, config.weight_decay, dev)
            # CUDA graph and channels_last on CUDA only; on the CPU the same step runs eagerly.
            stepper: Any = FastStep(
                model, optimizer, dev, config.precision, channels_last=dev.type == "cuda"
            )
            splits = dict(zip(("train", "val", "test"), device_splits(data, dev), strict=True))
        else:
            optimizer = torch.optim.Adam(
                model.parameters(), lr=config.lr, weight_decay=config.weight_decay
            )
            stepper = LoaderStep(model, optimizer, dev, config.precision)

        def batches_of(name: str, *, epoch: int = 0, order: torch.Generator | None = None) -> Any:
            train = name == "train"
            if on_device:
                return DeviceBatches(
                    splits[name],
                    meta,
                    config,
                    train=train,
                    order=order,
                    augment_seed=derived_seed(spec.seed, epoch, "augment"),
                )
            return make_loader(
                getattr(data, name), meta, config, train=train, device=device, generator=order
            )

        plateau = ReduceLROnPlateau(config.lr, config.lr_factor, config.lr_patience, config.min_lr)
        stopper = EarlyStopping(config.es_patience)
        best_state: dict[str, torch.Tensor] = {}
        history: list[EpochRecord] = []
        resumed_after = 0

        if checkpoint_path is not None and Path(checkpoint_path).exists():
            state = load_checkpoint(Path(checkpoint_path), spec.key(), dev)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            plateau.load_state_dict(state["plateau"])
            stopper.load_state_dict(state["stopper"])
            best_state = state["best_state"]
            history = [EpochRecord(**row) for row in state["history"]]
            resumed_after = len(history)

        val_loader = batches_of("val")
        epoch = len(history)
        while epoch < config.max_epochs and not stopper.stopped:
            epoch += 1
            # ---- one epoch of training, seeded from (seed, epoch) so a resume replays it
            seed_everything(derived_seed(spec.seed, epoch, "torch"))
            order = torch.Generator().manual_seed(derived_seed(spec.seed, epoch, "order"))
            loader = batches_of("train", epoch=epoch, order=order)
            lr = float(optimizer.param_groups[0]["lr"])  # a tensor for a CUDA-graphed step
            model.train()
            sync(dev)
            started = time.perf_counter()
            batches = _progress(loader, config.max_train_batches, progress, f"epoch {epoch}")
            for images, labels in batches:
                if stop_requested():
                    raise JobInterrupted(f"stop requested during epoch {epoch}")
                images = images.to(dev, non_blocking=True)
                labels = labels.to(dev, non_blocking=True)
                stepper.step(images, labels)
            sync(dev)
            train_seconds = time.perf_counter() - started
            trained = stepper.epoch_metrics()  # the epoch's one host synchronisation

            # ---- validation, callbacks, checkpoint, report
            started = time.perf_counter()
            val = evaluate(
                model, val_loader, dev, precision=config.precision, should_stop=should_stop
            )
            sync(dev)
            record = EpochRecord(
                epoch=epoch,
                train_loss=trained["loss"],
                train_acc=trained["accuracy"],
                val_loss=val.loss,
                val_acc=val.acc,
                lr=lr,
                train_seconds=train_seconds,
                eval_seconds=time.perf_counter() - started,
            )
            history.append(record)
            # Through the step: a captured CUDA graph reads the lr tensor, not group["lr"].
            stepper.set_learning_rate(plateau.step(val.acc))
            if stopper.step(epoch, val.acc):
                # A true copy: state_dict() tensors alias the live parameters.
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if checkpoint_path is not None:
                save_checkpoint(
                    Path(checkpoint_path),
                    {
                        "job_key": spec.key(),
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "plateau": plateau.state_dict(),
                        "stopper": stopper.state_dict(),
                        "best_state": best_state,
                        "history": [dataclasses.asdict(row) for row in history],
                    },
                )
            if on_epoch is not None:
                on_epoch(record)

        extra: dict[str, Any] = {"resumed_after_epoch": resumed_after, "slots": slots}
        if not evaluate_test:
            return job_outcome(
                history,
                best_epoch=stopper.best_epoch,
                evaluated_epoch=stopper.best_epoch,
                params=models.count_parameters(model),
                device=device,
                extra={**extra, "test_evaluated": False},
            )
        # ---- test evaluation of the restored weights
        if config.quirk("last_epoch_weights"):
            evaluated_epoch = len(history)  # the reference code's aliasing copy restores nothing
        else:
            model.load_state_dict(best_state)
            evaluated_epoch = stopper.best_epoch
        test_loader = batches_of("test")
        test = evaluate(
            model,
            test_loader,
            dev,
            precision=config.precision,
            details=models.is_gradattn(spec.model),
            should_stop=should_stop,
        )
        metrics = classification_metrics(test.logits, test.labels, meta.num_classes)

        # ---- gradient health on test batches, train mode, on a copy of the model
        seed_everything(derived_seed(spec.seed, 0, "gradients"))
        gradient_layers = measure_gradients(
            model, iter(test_loader), max_batches=config.grad_batches, device=dev
        )
        record_provenance = provenance.collect(device, meta.digest, config)

    if test.attention_by_token is not None:
        extra["attention_by_token"] = test.attention_by_token
    return job_outcome(
        history,
        best_epoch=stopper.best_epoch,
        evaluated_epoch=evaluated_epoch,
        params=models.count_parameters(model),
        device=device,
        metrics=metrics,
        gradient_layers=gradient_layers,
        provenance={
            **record_provenance,
            "split_sizes": list(data.split_sizes()),
            # Table 2's training augmentation of this run (empty: nothing random to vary).
            "train_augment": [op["op"] for op in meta.train_augment],
        },
        extra=extra,
    )


def _progress(loader: Any, limit: int | None, show: bool, label: str) -> Any:
    """The loader's batches, at most `limit` of them, with a progress bar when asked."""
    import itertools

    total = len(loader) if limit is None else min(limit, len(loader))
    batches = itertools.islice(loader, total)
    if not show:
        return batches
    from tqdm import tqdm

    return tqdm(batches, total=total, desc=label, leave=False)


def restore_model(spec: JobSpec, meta: Any, state: dict[str, torch.Tensor]) -> nn.Module:
    """A model of the job's architecture with `state` loaded (for re-evaluation and tests)."""
    import models

    model = models.build_model(spec.model, meta.channels, meta.num_classes, **spec.config.model)
    model.load_state_dict(state)
    return model


__all__ = [
    "EpochRecord",
    "Evaluation",
    "JobInterrupted",
    "JobOutcome",
    "evaluate",
    "restore_model",
    "run_job",
]
