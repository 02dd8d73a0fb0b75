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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.experiment.config import JobSpec, TrainConfig, check_cohort
from harness.training import provenance
from harness.training.callbacks import EarlyStopping, ReduceLROnPlateau
from harness.training.checkpoint import save_checkpoint
from harness.training.cohort import build_trainer, load_state, run_by_resume_epoch
from harness.training.evaluation import Evaluation, evaluate
from harness.training.gradients import measure_gradients
from harness.training.metrics import classification_metrics
from harness.training.outcome import EpochRecord, JobInterrupted, JobOutcome, job_outcome
from harness.training.runtime import (
    DeviceBatches,
    autocast,
    check_device,
    check_last_batch,
    check_pipeline,
    derived_seed,
    determinism,
    device_splits,
    load_data,
    make_loader,
    seed_everything,
    sync,
)

# --------------------------------------------------------------------------- the loop


@dataclass
class _Member:
    """One job of a cohort: its spec and everything the loop keeps per job."""

    index: int  # position in run_jobs' specs
    spec: JobSpec
    checkpoint: Path | None
    plateau: ReduceLROnPlateau
    stopper: EarlyStopping
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[EpochRecord] = field(default_factory=list)
    resumed_after: int = 0


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
    return run_jobs(
        [spec],
        device=device,
        data_root=data_root,
        checkpoint_paths=[checkpoint_path],
        on_epoch=None if on_epoch is None else (lambda _index, record: on_epoch(record)),
        should_stop=should_stop,
        slots=slots,
        progress=progress,
        evaluate_test=evaluate_test,
    )[0]


@dataclass
class _Run:
    """What every member of a running cohort shares: the data, where it runs, how it stops."""

    data: Any
    config: TrainConfig  # the cohort's (check_cohort: the same for every member)
    dev: torch.device
    device: str
    slots: int
    should_stop: Callable[[], bool] | None
    evaluate_test: bool
    splits: dict[str, Any] | None  # device-resident splits (pipeline "device"), else None
    val_batches: Any = None  # built once, reused every epoch

    @property
    def meta(self) -> Any:
        return self.data.meta

    def stop_requested(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    def batches(self, name: str, *, seed: int = 0, epoch: int = 0, order: Any = None) -> Any:
        """The batches of one split: device-resident, or a DataLoader."""
        train = name == "train"
        if self.splits is not None:
            augment_seed = derived_seed(seed, epoch, "augment")
            return DeviceBatches(self.splits[name], self.meta, self.config, train=train,
                                 order=order, augment_seed=augment_seed)  # fmt: skip
        return make_loader(getattr(self.data, name), self.meta, self.config, train=train,
                           device=self.device, generator=order)  # fmt: skip


def run_jobs(
    specs: list[JobSpec],
    *,
    device: str = "cpu",
    data_root: Path,
    checkpoint_paths: list[Path | None] | None = None,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
    on_done: Callable[[int, JobOutcome], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    slots: int = 1,
    progress: bool = False,
    evaluate_test: bool = True,
) -> list[JobOutcome]:
    """Train a cohort: the seeds of one cell, fused into one model when there are several
    (harness.training.fused), each with its own data order, augmentation, schedule, early stopping,
    checkpoint and outcome. One job is a cohort of one (run_job).

    on_epoch(index, record) follows each member's checkpoint; on_done(index, outcome) comes as
    soon as a member finishes, while the rest train on. JobInterrupted leaves the unfinished
    members' checkpoints after their last finished epoch."""

    paths = list(checkpoint_paths) if checkpoint_paths is not None else [None] * len(specs)
    config = check_cohort(specs, paths)
    dev = check_device(device)
    autocast(dev, config.precision)  # validate the precision before any work
    check_pipeline(config.pipeline)
    if dev.type == "cpu" and slots > 1:
        # Several jobs share the CPU: split its cores instead of oversubscribing them.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // slots))
    states = [load_state(p, spec, dev) for p, spec in zip(paths, specs, strict=True)]
    resumed = sorted({len(s["history"]) if s else 0 for s in states})
    if len(resumed) > 1:
        # Members checkpointed at different epochs cannot step in lockstep: one cohort each.
        arguments = dict(device=device, data_root=data_root, on_epoch=on_epoch, on_done=on_done,
                         should_stop=should_stop, slots=slots, progress=progress,
                         evaluate_test=evaluate_test)  # fmt: skip
        return run_by_resume_epoch(run_jobs, specs, paths, states, resumed, arguments)
    data = load_data(specs[0], data_root)
    check_last_batch(len(data.train), config.batch_size, config.max_train_batches)
    outcomes: dict[int, JobOutcome] = {}

    with determinism(config.deterministic, device):
        trainer = build_trainer(specs, data.meta, config, dev)
        members = _members(trainer, specs, paths, states, config)
        splits = None
        if config.pipeline == "device":
            splits = dict(zip(("train", "val", "test"), device_splits(data, dev), strict=True))
        run = _Run(data, config, dev, device, slots, should_stop, evaluate_test, splits)
        run.val_batches = run.batches("val")
        active = members
        epoch = resumed[0]
        while True:
            # Members that are through (also straight after a resume) finish and leave.
            through = [m.stopper.stopped or epoch >= config.max_epochs for m in active]
            for position, member in enumerate(active):
                if through[position]:
                    outcome = _finish(member, trainer.model(position), run)
                    outcomes[member.index] = outcome
                    if on_done is not None:
                        on_done(member.index, outcome)
            if all(through):
                break
            if any(through):
                trainer.keep([p for p, gone in enumerate(through) if not gone])
                active = [m for m, gone in zip(active, through, strict=True) if not gone]
            epoch += 1
            trained = _train_epoch(trainer, active, epoch, run, progress)
            for position, member in enumerate(active):
                record = _end_epoch(trainer, position, member, run, trained)
                if on_epoch is not None:
                    on_epoch(member.index, record)
    return [outcomes[i] for i in range(len(specs))]


def _members(trainer: Any, specs: list[JobSpec], paths: list[Path | None],
             states: list[dict[str, Any] | None], config: Any) -> list[_Member]:  # fmt: skip
    """One _Member per job, each restored from its checkpoint when it has one."""
    members = []
    for position, (spec, path, state) in enumerate(zip(specs, paths, states, strict=True)):
        member = _Member(
            position,
            spec,
            path,
            ReduceLROnPlateau(config.lr, config.lr_factor, config.lr_patience, config.min_lr),
            EarlyStopping(config.es_patience),
        )
        if state is not None:
            trainer.load(position, state["model"], state["optimizer"])
            member.plateau.load_state_dict(state["plateau"])
            member.stopper.load_state_dict(state["stopper"])
            member.best_state = state["best_state"]
            member.history = [EpochRecord(**row) for row in state["history"]]
            member.resumed_after = len(member.history)
        members.append(member)
    return members


@dataclass
class _TrainedEpoch:
    """One epoch of training, for every active member (by position)."""

    epoch: int
    rates: list[float]  # the learning rate each member trained with
    metrics: list[dict[str, float]]  # each member's train loss and accuracy
    seconds: float  # the cohort's: members share it


def _train_epoch(
    trainer: Any, active: list[_Member], epoch: int, run: _Run, progress: bool
) -> _TrainedEpoch:
    """One epoch of training for every active member, seeded from (seed, epoch) so a resume
    replays it."""
    config, dev = run.config, run.dev
    seed_everything(derived_seed(active[0].spec.seed, epoch, "torch"))
    loaders = []
    for member in active:
        seed = member.spec.seed
        order = torch.Generator().manual_seed(derived_seed(seed, epoch, "order"))
        loaders.append(run.batches("train", seed=seed, epoch=epoch, order=order))
    rates = [trainer.learning_rate(p) for p in range(len(active))]
    trainer.train_mode()
    sync(dev)
    started = time.perf_counter()
    streams = [_progress(loaders[0], config.max_train_batches, progress, f"epoch {epoch}")]
    streams += [_progress(loader, config.max_train_batches, False, "") for loader in loaders[1:]]
    for batches in zip(*streams, strict=True):
        if run.stop_requested():
            raise JobInterrupted(f"stop requested during epoch {epoch}")
        trainer.step(list(batches), dev)
    sync(dev)
    seconds = time.perf_counter() - started
    # epoch_metrics() is the epoch's one host synchronisation.
    return _TrainedEpoch(epoch, rates, trainer.epoch_metrics(), seconds)


def _end_epoch(
    trainer: Any, position: int, member: _Member, run: _Run, trained: _TrainedEpoch
) -> EpochRecord:
    """One member after an epoch: validation, the callbacks, its checkpoint; its record."""
    model, config, epoch = trainer.model(position), run.config, trained.epoch
    started = time.perf_counter()
    val = evaluate(model, run.val_batches, run.dev, precision=config.precision,
                   should_stop=run.should_stop)  # fmt: skip
    sync(run.dev)
    record = EpochRecord(
        epoch=epoch,
        train_loss=trained.metrics[position]["loss"],
        train_acc=trained.metrics[position]["accuracy"],
        val_loss=val.loss,
        val_acc=val.acc,
        lr=trained.rates[position],
        train_seconds=trained.seconds,
        eval_seconds=time.perf_counter() - started,
    )
    member.history.append(record)
    trainer.set_learning_rate(position, member.plateau.step(val.acc))
    if member.stopper.step(epoch, val.acc):
        # A true copy: state_dict() tensors alias the live parameters.
        member.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if member.checkpoint is not None:
        model_state, optimizer_state = trainer.state(position)
        save_checkpoint(
            Path(member.checkpoint),
            {
                "job_key": member.spec.key(),
                "epoch": epoch,
                "model": model_state,
                "optimizer": optimizer_state,
                "plateau": member.plateau.state_dict(),
                "stopper": member.stopper.state_dict(),
                "best_state": member.best_state,
                "history": [dataclasses.asdict(row) for row in member.history],
            },
        )
    return record


def _finish(member: _Member, model: nn.Module, run: _Run) -> JobOutcome:
    """A member's outcome: the test evaluation of its restored weights, gradient health and
    provenance (or, for tuning, the training history alone)."""
    from harness import models

    spec, config, stopper, history = member.spec, member.spec.config, member.stopper, member.history
    meta, dev, device = run.meta, run.dev, run.device
    extra: dict[str, Any] = {"resumed_after_epoch": member.resumed_after, "slots": run.slots}
    if not run.evaluate_test:
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
        model.load_state_dict(member.best_state)
        evaluated_epoch = stopper.best_epoch
    test_loader = run.batches("test")
    test = evaluate(
        model,
        test_loader,
        dev,
        precision=config.precision,
        details=models.is_gradattn(spec.model),
        should_stop=run.should_stop,
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
            "split_sizes": list(run.data.split_sizes()),
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
    from harness import models

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
    "run_jobs",
]
