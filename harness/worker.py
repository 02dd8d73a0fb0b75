"""The worker loop: claim a job, run it with a heartbeating lease, record the outcome, repeat.

One loop per process. `--slots K` starts K child processes of this same loop on one device
(run_slot_processes), because the GPU is mostly idle with one small job (docs/ARCHITECTURE.md).

Stopping: SIGTERM/SIGINT set a flag that run_job polls between batches (should_stop); the job
is released back to the queue without counting an attempt and its checkpoint is kept, so the
next claim resumes after the last finished epoch. A second signal stops at once.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from harness import queue
from harness.db import Job
from harness.queue import ClaimedJob, Lease
from harness.recording import complete, record_epoch

log = logging.getLogger("harness.worker")


@dataclass
class WorkerOptions:
    device: str = "cpu"
    data_root: Path = Path("data")
    checkpoints: Path = Path("checkpoints")
    lease_seconds: float = 120.0
    poll_seconds: float = 5.0  # wait between claims when the queue is empty
    until_empty: bool = False
    max_jobs: int | None = None
    slots: int = 1  # jobs sharing this device, recorded with every result and epoch row
    slot_index: int = 0  # this process's row among the slots (progress bar position)
    progress: bool | None = None  # None: progress bars when stderr is a terminal
    max_consecutive_failures: int = 5  # a broken device must not fail the whole queue
    # Claim only while no other job runs on this host's device (Table 8 timings); see
    # docs/QUEUE.md for the race window this leaves.
    exclusive: bool = False


@dataclass
class WorkerSummary:
    done: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0  # leases taken away from this worker (it was too slow to heartbeat)
    stop_reason: str = ""
    gave_up: bool = False  # stopped after max_consecutive_failures
    outcomes: list[str] = field(default_factory=list)


class _Heartbeat(threading.Thread):
    """Renews a lease every third of its length; sets `lost` when fenced out."""

    def __init__(self, engine: Engine, lease: Lease, lease_seconds: float) -> None:
        super().__init__(name=f"heartbeat-{lease.job_id}", daemon=True)
        self.engine, self.lease, self.lease_seconds = engine, lease, lease_seconds
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        interval = max(0.1, self.lease_seconds / 3)
        while not self._done.wait(interval):
            try:
                held = queue.heartbeat(self.engine, self.lease, self.lease_seconds)
            except Exception as exc:  # a busy or briefly unreachable DB: try again next beat
                log.warning("heartbeat for job %d failed: %s", self.lease.job_id, exc)
                continue
            if not held:
                self.lost.set()
                return

    def stop(self) -> None:
        self._done.set()
        self.join()


def default_runner() -> tuple[Callable[..., Any], type[BaseException]]:
    """harness.train's run_job and its JobInterrupted (imported late: torch is heavy)."""
    from harness.train import JobInterrupted, run_job

    return run_job, JobInterrupted


class Worker:
    """Pulls jobs from the queue in `engine` and runs them on `options.device`."""

    def __init__(self, engine: Engine, options: WorkerOptions) -> None:
        self.engine = engine
        self.options = options
        self.host = socket.gethostname()
        self.worker_id = f"{self.host}:{os.getpid()}:{time.time():.0f}"[:200]
        self._stop = threading.Event()
        self._stop_reason = ""
        progress = options.progress
        self.progress = sys.stderr.isatty() if progress is None else progress

    # -- stopping ---------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self._stop_reason = reason
            log.info("stopping (%s): the job in flight is released at the next batch", reason)
        self._stop.set()

    @contextmanager
    def signals_handled(self) -> Iterator[None]:
        """SIGTERM/SIGINT stop cleanly, the same signal again stops now; restored on exit."""

        def handle(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            if self._stop.is_set():
                raise KeyboardInterrupt(name)
            self.request_stop(name)

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> WorkerSummary:
        opts = self.options
        summary = WorkerSummary()
        queue.register_worker(self.engine, self.worker_id, self.host, os.getpid(), opts.device)
        log.info(
            "worker %s on %s (slot %d/%d)",
            self.worker_id,
            opts.device,
            opts.slot_index + 1,
            opts.slots,
        )
        failures_in_a_row = 0
        try:
            while not self._stop.is_set():
                if opts.max_jobs is not None and len(summary.outcomes) >= opts.max_jobs:
                    summary.stop_reason = f"--max-jobs {opts.max_jobs} reached"
                    break
                try:
                    job, busy = self.claim_next()
                except OperationalError as exc:  # locked or briefly unreachable: try again
                    log.warning("claim failed (%s); retrying", str(exc.orig or exc)[:200])
                    self._stop.wait(opts.poll_seconds)
                    continue
                if busy:
                    # Random back-off: two exclusive workers that collide do not collide again.
                    self._stop.wait(opts.poll_seconds * random.uniform(0.5, 1.5))
                    continue
                if job is None:
                    if opts.until_empty:
                        summary.stop_reason = "queue empty"
                        break
                    self._stop.wait(opts.poll_seconds)
                    continue
                outcome = self.run_one(job)
                summary.outcomes.append(outcome)
                setattr(summary, outcome, getattr(summary, outcome) + 1)
                failures_in_a_row = failures_in_a_row + 1 if outcome == "failed" else 0
                if failures_in_a_row >= opts.max_consecutive_failures > 0:
                    summary.stop_reason = (
                        f"{failures_in_a_row} jobs failed in a row; check the device and data "
                        "(`harness status` shows the errors), then `harness retry --failed`"
                    )
                    summary.gave_up = True
                    log.error("stopping: %s", summary.stop_reason)
                    break
        finally:
            queue.stop_worker(self.engine, self.worker_id)
        summary.stop_reason = summary.stop_reason or self._stop_reason
        log.info(
            "worker %s stopped (%s): %d done, %d failed, %d released, %d leases lost",
            self.worker_id,
            summary.stop_reason,
            summary.done,
            summary.failed,
            summary.released,
            summary.lost,
        )
        return summary

    def claim_next(self) -> tuple[ClaimedJob | None, bool]:
        """(the claimed job or None, whether an --exclusive worker found its device busy)."""
        opts = self.options
        if opts.exclusive and self.device_busy():
            return None, True
        job = queue.claim(self.engine, self.worker_id, opts.device, opts.lease_seconds)
        if job is not None and opts.exclusive and self.device_busy(besides=job.id):
            # Another job started on the device between the check and the claim: give ours
            # back (the attempt does not count) rather than time two jobs at once.
            queue.release(self.engine, job.lease)
            log.info("job %d released: device %s became busy", job.id, opts.device)
            return None, True
        return job, False

    def device_busy(self, besides: int | None = None) -> bool:
        """Whether a job other than `besides` runs, under a live lease, on this host's device.

        Worker ids start with "host:", and the claim writes the device into the job row."""
        busy = (
            select(func.count())
            .select_from(Job)
            .where(
                Job.status == "running",
                Job.device == self.options.device,
                Job.worker_id.like(f"{self.host}:%"),
                Job.lease_expires_at >= queue.db_now(self.engine),
            )
        )
        if besides is not None:
            busy = busy.where(Job.id != besides)
        with self.engine.connect() as conn:
            return bool(conn.execute(busy).scalar_one())

    def run_one(self, job: ClaimedJob) -> str:
        """Run one claimed job; returns done, failed, released or lost."""
        run_job, job_interrupted = default_runner()
        opts = self.options
        lease = job.lease
        label = f"job {job.id} {job.model}/{job.dataset}/seed {job.seed}"
        log.info("claimed job %d attempt %d (%s)", job.id, job.attempts, label)
        spec = job.spec()
        opts.checkpoints.mkdir(parents=True, exist_ok=True)
        checkpoint = opts.checkpoints / f"{job.key}.pt"
        beat = _Heartbeat(self.engine, lease, opts.lease_seconds)
        bar = _progress_bar(label, spec.config.max_epochs, opts.slot_index, self.progress)

        def on_epoch(record: Any) -> None:
            if not record_epoch(self.engine, lease, record, opts.lease_seconds, opts.slots):
                beat.lost.set()
            if bar is not None:
                bar.n = record.epoch
                bar.set_postfix(val_acc=f"{record.val_acc:.3f}", refresh=True)

        def should_stop() -> bool:
            return self._stop.is_set() or beat.lost.is_set()

        beat.start()
        try:
            outcome = run_job(
                spec,
                device=opts.device,
                data_root=opts.data_root,
                checkpoint_path=checkpoint,
                on_epoch=on_epoch,
                should_stop=should_stop,
                slots=opts.slots,
                progress=False,
            )
        except job_interrupted:
            return self._interrupted(lease, beat, label)
        except KeyboardInterrupt:
            beat.stop()
            queue.release(self.engine, lease)
            log.info("%s released (forced stop)", label)
            raise
        except Exception:
            beat.stop()
            queue.fail(self.engine, lease, traceback.format_exc())
            log.error("%s failed: %s", label, _last_line())
            return "failed"
        finally:
            if bar is not None:
                bar.close()
        beat.stop()
        if opts.exclusive:
            outcome.extra["exclusive"] = True  # timed alone on its device (slots is 1)
        try:
            completed = complete(self.engine, lease, outcome, opts.slots)
        except Exception:
            # The outcome could not be stored (its transaction rolled back): say why in the job
            # rather than let the lease run out with no explanation.
            queue.fail(self.engine, lease, traceback.format_exc())
            log.error("%s: storing the outcome failed: %s", label, _last_line())
            return "failed"
        if not completed:
            log.warning("%s: lease lost before completion; another worker owns it", label)
            return "lost"
        checkpoint.unlink(missing_ok=True)
        log.info("%s done: top1 %.4f", label, outcome.metrics.get("top1") or float("nan"))
        return "done"

    def _interrupted(self, lease: Lease, beat: _Heartbeat, label: str) -> str:
        beat.stop()
        if beat.lost.is_set():
            log.warning("%s: lease lost (heartbeats too late); job left to its new owner", label)
            return "lost"
        queue.release(self.engine, lease)
        log.info("%s released back to the queue; its checkpoint is kept", label)
        return "released"


def _last_line() -> str:
    """The exception line of the traceback being handled."""
    lines = traceback.format_exc().strip().splitlines()
    return lines[-1] if lines else "?"


def _progress_bar(label: str, total: int, position: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=label,
        unit="epoch",
        position=position,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def run_slot_processes(child_argv: list[str], slots: int, db_url: str) -> int:
    """Run `slots` copies of the worker loop as child processes; forward SIGTERM/SIGINT."""
    return run_worker_processes(
        [[*child_argv, "--slot-index", str(i)] for i in range(slots)], db_url
    )


def run_worker_processes(child_argvs: list[list[str]], db_url: str) -> int:
    """One child `harness` process per argv (e.g. one per GPU and slot); forward SIGTERM/SIGINT
    to them and return the exit code furthest from 0."""
    # The URL travels in the environment, not the command line, where `ps` would show a
    # database password to every user of the host.
    env = {**os.environ, "HARNESS_DB": db_url}
    # Each child in its own session: a Ctrl-C on the terminal reaches only this parent, which
    # forwards it once (twice would mean "stop now" to the children).
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "harness.cli", *argv], start_new_session=True, env=env
        )
        for argv in child_argvs
    ]

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [child.wait() for child in children]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max(codes, key=abs) if codes else 0
