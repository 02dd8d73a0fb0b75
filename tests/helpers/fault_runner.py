"""A stand-in for harness.training.loop.run_job that trains nothing: the fault suite's tiny jobs.

`harness worker --runner fault_runner:run_job` (with tests/helpers on PYTHONPATH) runs it in place of
the real training, so 16 real worker processes can push 1,000 jobs through the real claim,
heartbeat, fencing, epoch-row, completion, failure and release paths in seconds. It keeps
run_job's contract (signature, should_stop polled between "batches", an atomic checkpoint after
every epoch and a resume from it, on_epoch after the checkpoint, a full outcome) and imports no
torch: its records are harness.training.outcome's, as run_job's are.

Environment (all optional):
- FAULT_RUNNER_LOG: file to append one line per run start and end (O_APPEND, whole lines), from
  which the suite finds jobs run by two live workers at once.
- FAULT_RUNNER_STEP_SECONDS: sleep per "batch" (default 0.01).
- FAULT_RUNNER_MODE: "ok" (default) or "cuda-error" (every job raises a CUDA-like RuntimeError).
- FAULT_RUNNER_BIG: "SEED:BYTES" -- the job with that seed pads its checkpoint to BYTES.
- FAULT_RUNNER_EARLY_STOP: "1" -- a job stops after max(1, max_epochs - seed % 3) epochs, as
  early stopping would (run_job and run_jobs alike), so cohort members finish apart.

`run_jobs` is the stand-in for harness.training.loop.run_jobs (a fused seed cohort, `harness worker
--fuse-seeds S`): the members share each "batch" and advance one epoch per round, each with its
own checkpoint, resume and on_epoch; on_done as soon as one finishes. Two more variables:
- FAULT_RUNNER_FAIL_EPOCH: N -- run_jobs raises a RuntimeError as a member is to start epoch N.
- FAULT_RUNNER_SIGTERM_AFTER_DONE: "1" -- run_jobs sends SIGTERM to its own process right
  after its first on_done (a stop mid-cohort, through the worker's real signal handler).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from harness import faults
from harness.errors import HarnessError
from harness.experiment.config import JobSpec, check_cohort
from harness.training.checkpoint import write_atomically
from harness.training.metrics import METRIC_KEYS
from harness.training.outcome import EpochRecord, JobInterrupted, JobOutcome

STEPS_PER_EPOCH = 4


def _log(*fields: object) -> None:
    path = os.environ.get("FAULT_RUNNER_LOG")
    if not path:
        return
    line = " ".join(str(f) for f in (f"{time.time():.6f}", os.getpid(), *fields)) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _record(seed: int, epoch: int, seconds: float) -> EpochRecord:
    """Deterministic numbers per (seed, epoch): a resumed run reports what a clean one would."""
    acc = 0.5 + 0.4 * epoch / (epoch + 1) - (seed % 7) * 0.01
    return EpochRecord(
        epoch=epoch,
        train_loss=1.0 / epoch,
        train_acc=acc + 0.05,
        val_loss=1.1 / epoch,
        val_acc=acc,
        lr=1e-3,
        train_seconds=seconds,
        eval_seconds=seconds / 10,
    )


def _padding(seed: int) -> int:
    big = os.environ.get("FAULT_RUNNER_BIG", "")
    if big:
        big_seed, _, size = big.partition(":")
        if int(big_seed) == seed:
            return int(size)
    return 0


def _last_epoch(spec: JobSpec) -> int:
    """Where the job stops: max_epochs, or earlier by seed with FAULT_RUNNER_EARLY_STOP=1."""
    if os.environ.get("FAULT_RUNNER_EARLY_STOP") == "1":
        return max(1, spec.config.max_epochs - spec.seed % 3)
    return spec.config.max_epochs


def _resume(key: str, checkpoint_path: Path | None) -> list[EpochRecord]:
    if checkpoint_path is None or not Path(checkpoint_path).exists():
        return []
    state = json.loads(Path(checkpoint_path).read_text())
    if state["job_key"] != key:
        raise HarnessError(f"checkpoint {checkpoint_path} belongs to another job")
    return [EpochRecord(**row) for row in state["history"]]


def _batches(epoch: int, stop: Callable[[], bool], step_seconds: float) -> None:
    """One epoch's "batches", polling `stop` before each (JobInterrupted)."""
    for step in range(STEPS_PER_EPOCH):
        if stop():
            raise JobInterrupted(f"stop requested during epoch {epoch}")
        time.sleep(step_seconds)  # the "batch"
        if step == STEPS_PER_EPOCH // 2:
            faults.point("epoch")


def _save(checkpoint_path: Path | None, key: str, seed: int, history: list[EpochRecord]) -> None:
    if checkpoint_path is None:
        return
    state = {
        "job_key": key,
        "history": [dataclasses.asdict(r) for r in history],
        "padding": "x" * _padding(seed),
    }
    data = json.dumps(state).encode()
    write_atomically(Path(checkpoint_path), lambda handle, data=data: handle.write(data))


def _step_seconds() -> float:
    return float(os.environ.get("FAULT_RUNNER_STEP_SECONDS", "0.01"))


def _raise_if_failing_device(device: str) -> None:
    if os.environ.get("FAULT_RUNNER_MODE") == "cuda-error":
        raise RuntimeError(
            "CUDA error: an illegal memory access was encountered (stand-in for a failing "
            f"device {device})"
        )


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
) -> JobOutcome:
    key = spec.key()
    stop = should_stop or (lambda: False)
    history = _resume(key, checkpoint_path)
    resumed = len(history)
    _log("start", key, resumed)
    how = "raised"
    try:
        _raise_if_failing_device(device)
        step_seconds = _step_seconds()
        for epoch in range(len(history) + 1, _last_epoch(spec) + 1):
            started = time.perf_counter()
            try:
                _batches(epoch, stop, step_seconds)
            except JobInterrupted:
                how = "interrupted"
                raise
            history.append(_record(spec.seed, epoch, time.perf_counter() - started))
            _save(checkpoint_path, key, spec.seed, history)
            if on_epoch is not None:
                on_epoch(history[-1])
        how = "returned"
    finally:
        _log("end", key, how)
    return _outcome(history, resumed, device, slots)


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
    paths = list(checkpoint_paths) if checkpoint_paths is not None else [None] * len(specs)
    check_cohort(specs, paths)  # the real run_jobs's refusals
    keys = [spec.key() for spec in specs]
    stop = should_stop or (lambda: False)
    histories = [_resume(key, path) for key, path in zip(keys, paths, strict=True)]
    resumed = [len(history) for history in histories]
    outcomes: list[JobOutcome | None] = [None] * len(specs)
    how = ["raised"] * len(specs)
    for key, count in zip(keys, resumed, strict=True):
        _log("start", key, count)

    def finish(index: int) -> None:
        outcomes[index] = _outcome(histories[index], resumed[index], device, slots)
        how[index] = "returned"
        _log("end", keys[index], "returned")
        if on_done is not None:
            on_done(index, outcomes[index])
        if os.environ.get("FAULT_RUNNER_SIGTERM_AFTER_DONE") == "1":
            os.environ.pop("FAULT_RUNNER_SIGTERM_AFTER_DONE")  # once per process
            os.kill(os.getpid(), signal.SIGTERM)

    def running() -> list[int]:
        return [i for i in range(len(specs)) if outcomes[i] is None]

    try:
        _raise_if_failing_device(device)
        fail_epoch = int(os.environ.get("FAULT_RUNNER_FAIL_EPOCH", "0"))
        step_seconds = _step_seconds()
        # Members resumed from a checkpoint of their last epoch (a kill before completion).
        for index in running():
            if resumed[index] >= _last_epoch(specs[index]):
                finish(index)
        while members := running():
            epochs = {i: len(histories[i]) + 1 for i in members}
            if fail_epoch and fail_epoch in epochs.values():
                raise RuntimeError(f"stand-in failure at epoch {fail_epoch} of a fused cohort")
            started = time.perf_counter()
            try:
                _batches(min(epochs.values()), stop, step_seconds)  # one fused pass for all
            except JobInterrupted:
                for index in members:
                    how[index] = "interrupted"
                raise
            seconds = time.perf_counter() - started
            for index in members:
                spec, history = specs[index], histories[index]
                history.append(_record(spec.seed, epochs[index], seconds))
                _save(paths[index], keys[index], spec.seed, history)
                if on_epoch is not None:
                    on_epoch(index, history[-1])
                if len(history) >= _last_epoch(spec):
                    finish(index)
    finally:
        for index in running():
            _log("end", keys[index], how[index])
    return [outcome for outcome in outcomes if outcome is not None]


def _outcome(history: list[EpochRecord], resumed: int, device: str, slots: int) -> JobOutcome:
    best = max(history, key=lambda r: r.val_acc)
    last = history[-1]
    top1 = best.val_acc
    metrics: dict[str, float | None] = {name: top1 for name in METRIC_KEYS}
    metrics.update(top5=None, ece=0.05, nll=0.9)
    layers = [
        {
            "mode": mode,
            "layer_index": index,
            "layer": name,
            "kind": kind,
            "batches": 1,
            "mean": 0.1 * (index + 1),
            "std": 0.01,
            "min": 0.05,
            "max": 0.2 * (index + 1),
        }
        for mode in ("output", "param")
        for index, (name, kind) in enumerate([("conv1", "Conv2d"), ("fc", "Linear")])
    ]
    seconds = [r.train_seconds + r.eval_seconds for r in history]
    return JobOutcome(
        metrics=metrics,
        best_epoch=best.epoch,
        epochs_run=len(history),
        evaluated_epoch=best.epoch,
        gen_gap_best=best.train_acc - best.val_acc,
        gen_gap_last=last.train_acc - last.val_acc,
        epoch_seconds=sum(seconds) / len(seconds),
        train_seconds=sum(r.train_seconds for r in history) / len(history),
        eval_seconds=sum(r.eval_seconds for r in history) / len(history),
        params=1000,
        epochs=history,
        gradient_layers=layers,
        provenance={"runner": "tests/helpers/fault_runner.py", "pid": os.getpid()},
        extra={"resumed_after_epoch": resumed, "slots": slots},
        device=device,
    )
