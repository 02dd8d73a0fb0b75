"""A stand-in for harness.train.run_job that trains nothing: the fault suite's tiny jobs.

`harness worker --runner fault_runner:run_job` (with tests/ on PYTHONPATH) runs it in place of
the real training, so 16 real worker processes can push 1,000 jobs through the real claim,
heartbeat, fencing, epoch-row, completion, failure and release paths in seconds. It keeps
run_job's contract (signature, should_stop polled between "batches", an atomic checkpoint after
every epoch and a resume from it, on_epoch after the checkpoint, a full outcome) and imports no
torch: its records are harness.outcome's, as run_job's are.

Environment (all optional):
- FAULT_RUNNER_LOG: file to append one line per run start and end (O_APPEND, whole lines), from
  which the suite finds jobs run by two live workers at once.
- FAULT_RUNNER_STEP_SECONDS: sleep per "batch" (default 0.01).
- FAULT_RUNNER_MODE: "ok" (default) or "cuda-error" (every job raises a CUDA-like RuntimeError).
- FAULT_RUNNER_BIG: "SEED:BYTES" -- the job with that seed pads its checkpoint to BYTES.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from harness import faults
from harness.checkpoint import write_atomically
from harness.config import JobSpec
from harness.errors import HarnessError
from harness.metrics import METRIC_KEYS
from harness.outcome import EpochRecord, JobInterrupted, JobOutcome

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
    history: list[EpochRecord] = []
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        state = json.loads(Path(checkpoint_path).read_text())
        if state["job_key"] != key:
            raise HarnessError(f"checkpoint {checkpoint_path} belongs to another job")
        history = [EpochRecord(**row) for row in state["history"]]
    resumed = len(history)
    _log("start", key, resumed)
    how = "raised"
    try:
        if os.environ.get("FAULT_RUNNER_MODE") == "cuda-error":
            raise RuntimeError(
                "CUDA error: an illegal memory access was encountered (stand-in for a failing "
                f"device {device})"
            )
        step_seconds = float(os.environ.get("FAULT_RUNNER_STEP_SECONDS", "0.01"))
        for epoch in range(len(history) + 1, spec.config.max_epochs + 1):
            started = time.perf_counter()
            for step in range(STEPS_PER_EPOCH):
                if stop():
                    how = "interrupted"
                    raise JobInterrupted(f"stop requested during epoch {epoch}")
                time.sleep(step_seconds)  # the "batch"
                if step == STEPS_PER_EPOCH // 2:
                    faults.point("epoch")
            history.append(_record(spec.seed, epoch, time.perf_counter() - started))
            if checkpoint_path is not None:
                state = {
                    "job_key": key,
                    "history": [dataclasses.asdict(r) for r in history],
                    "padding": "x" * _padding(spec.seed),
                }
                data = json.dumps(state).encode()
                write_atomically(
                    Path(checkpoint_path), lambda handle, data=data: handle.write(data)
                )
            if on_epoch is not None:
                on_epoch(history[-1])
        how = "returned"
    finally:
        _log("end", key, how)
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
        provenance={"runner": "tests/fault_runner.py", "pid": os.getpid()},
        extra={"resumed_after_epoch": resumed, "slots": slots},
        device=device,
    )
