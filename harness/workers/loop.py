"""The worker loop: claim a job, run it with a heartbeating lease, record the outcome, repeat.

One loop per process. `--slots K` starts K child processes of this same loop on one device
(run_slot_processes), because the GPU is mostly idle with one small job (docs/ARCHITECTURE.md).
`--fuse-seeds S` claims up to S seeds of one cell at once and trains them as one fused model
(harness/workers/cohort.py), each seed still a job with its own lease, epoch rows and result.

Stopping: SIGTERM/SIGINT set a flag that run_job polls between batches (should_stop); the job
is released back to the queue without counting an attempt and its checkpoint is kept, so the
next claim resumes after the last finished epoch. A second signal stops at once.

Faults (docs/QUEUE.md): every database call rides out an outage with backoff for up to
`db_patience` seconds, then the worker stops with one line (DatabaseUnreachable); a worker whose
jobs fail `max_consecutive_failures` times in a row quarantines itself (workers.quarantined).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from harness.queue import jobs as queue
from harness.queue.jobs import ClaimedJob, Lease
from harness.queue.recording import complete
from harness.store.outages import DB_ERRORS, Backoff, DatabaseUnreachable, first_line
from harness.store.schema import Job
from harness.training.checkpoint import stray_temporaries
from harness.workers.cohort import load_cohort_runner, run_cohort
from harness.workers.parts import Heartbeat, last_line, load_runner
from harness.workers.processes import run_slot_processes, run_worker_processes

__all__ = ["Worker", "WorkerOptions", "WorkerSummary", "run_slot_processes", "run_worker_processes"]

log = logging.getLogger("harness.workers.loop")


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
    # Seconds of database outage to ride out (retrying with backoff) before stopping.
    db_patience: float = 300.0
    # "MODULE:FUNC" with run_job's signature, MODULE also defining JobInterrupted; None is
    # harness.training.loop. A test hook: the fault suite swaps in a stand-in that trains nothing.
    # A cohort (cohort_size > 1) runs through MODULE.run_jobs.
    runner: str | None = None
    # Up to this many seeds of one cell claimed together and trained as one fused model
    # (queue.claim_cohort, harness.training.loop.run_jobs); 1: one job at a time.
    cohort_size: int = 1


@dataclass
class WorkerSummary:
    done: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0  # leases taken away from this worker (it was too slow to heartbeat)
    cancelled: int = 0  # running jobs stopped by `harness cancel`
    stop_reason: str = ""
    gave_up: bool = False  # quarantined after max_consecutive_failures
    outcomes: list[str] = field(default_factory=list)


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
        self.runner = load_runner(options.runner)
        # Loaded now, so a runner without run_jobs is one line before anything is claimed.
        self.cohort_runner = load_cohort_runner(options.runner) if options.cohort_size > 1 else None
        self.last_failure = ""  # the exception line of the last failed job
        self.failures_in_a_row = 0  # quarantine counts these (--max-consecutive-failures)
        # One outage clock for the whole loop: claims, epoch rows, outcomes.
        self.backoff = Backoff(
            engine.url.render_as_string(hide_password=False), options.db_patience
        )

    # -- stopping ---------------------------------------------------------------------------

    def stop_requested(self) -> bool:
        return self._stop.is_set()

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
        """Claim, run, record, until stopped, out of work or quarantined."""
        summary = WorkerSummary()
        self._register()
        try:
            while not self._stop.is_set():
                jobs = self._claim_work(summary)
                if jobs is None:
                    break  # summary.stop_reason says why
                if not jobs:
                    continue  # it waited: the device was busy, the DB hiccuped or had no work
                try:
                    results = run_cohort(self, jobs)  # a cohort of one is a cohort
                except DatabaseUnreachable as gone:
                    summary.stop_reason = str(gone)
                    raise
                if self._count(summary, results):
                    break  # quarantined
        finally:
            summary.stop_reason = summary.stop_reason or self._stop_reason
            self._mark_stopped(summary)
        log.info(
            "worker %s stopped (%s): %d done, %d failed, %d released, %d cancelled, "
            "%d leases lost",
            self.worker_id, summary.stop_reason, summary.done, summary.failed,
            summary.released, summary.cancelled, summary.lost,
        )  # fmt: skip
        return summary

    def _register(self) -> None:
        opts = self.options
        self.backoff.call(
            "register",
            lambda: queue.register_worker(
                self.engine, self.worker_id, self.host, os.getpid(), opts.device
            ),
        )
        log.info("worker %s on %s (slot %d/%d)", self.worker_id, opts.device,
                 opts.slot_index + 1, opts.slots)  # fmt: skip

    def _claim_work(self, summary: WorkerSummary) -> list[ClaimedJob] | None:
        """The next jobs to run; [] after waiting (busy device, DB trouble, empty queue), None
        when the worker should stop (with summary.stop_reason set)."""
        opts = self.options
        room = opts.cohort_size
        if opts.max_jobs is not None:
            room = min(room, opts.max_jobs - len(summary.outcomes))
        if room <= 0:
            summary.stop_reason = f"--max-jobs {opts.max_jobs} reached"
            return None
        try:
            jobs, busy = self.claim_next(room)
        except DB_ERRORS as exc:  # locked or unreachable: back off, up to the patience
            try:
                self._stop.wait(self.backoff.failed("claim", exc))
            except DatabaseUnreachable as gone:
                summary.stop_reason = f"{gone}; worker stopped, holding no job"
                raise DatabaseUnreachable(summary.stop_reason) from None
            return []
        self.backoff.succeeded()
        if busy:
            # Random back-off: two exclusive workers that collide do not collide again.
            self._stop.wait(opts.poll_seconds * random.uniform(0.5, 1.5))
            return []
        if not jobs and opts.until_empty:
            from harness.queue.control import is_paused

            paused = self.backoff.call("pause check", lambda: is_paused(self.engine))
            summary.stop_reason = (
                "queue paused (`harness resume` lets workers claim)" if paused else "queue empty"
            )
            return None
        if not jobs:
            self._stop.wait(opts.poll_seconds)
        return jobs

    def _count(self, summary: WorkerSummary, results: list[str]) -> bool:
        """Count each job's result; True when the worker must quarantine itself."""
        for outcome in results:  # counted per job, also in a cohort
            summary.outcomes.append(outcome)
            setattr(summary, outcome, getattr(summary, outcome) + 1)
            self.failures_in_a_row = self.failures_in_a_row + 1 if outcome == "failed" else 0
        opts = self.options
        if not self.failures_in_a_row >= opts.max_consecutive_failures > 0:
            return False
        summary.stop_reason = (
            f"worker {self.worker_id} quarantined: {self.failures_in_a_row} jobs failed in a "
            f"row on {opts.device} (last: {self.last_failure}); it claims no more; check the "
            "device, then `harness retry --failed` and start a new worker"
        )
        summary.gave_up = True
        log.error("%s", summary.stop_reason)
        return True

    def _mark_stopped(self, summary: WorkerSummary) -> None:
        """The workers row: stopped, why, and whether quarantined. Best effort: when the
        database is gone this must not hide the reason the loop ended."""
        try:
            queue.stop_worker(
                self.engine,
                self.worker_id,
                summary.stop_reason or "interrupted",
                quarantined=summary.gave_up,
            )
        except DB_ERRORS as exc:
            log.warning("could not mark worker %s stopped: %s", self.worker_id, first_line(exc))

    def claim_next(self, size: int = 1) -> tuple[list[ClaimedJob], bool]:
        """(the claimed jobs: one, a cohort of up to `size`, or none; whether an --exclusive
        worker found its device busy)."""
        opts = self.options
        if opts.exclusive and self.device_busy():
            return [], True
        jobs = queue.claim_cohort(
            self.engine, self.worker_id, opts.device, opts.lease_seconds, size
        )
        if jobs and opts.exclusive and self.device_busy(besides=[job.id for job in jobs]):
            # Another job started on the device between the check and the claim: give ours
            # back (the attempt does not count) rather than time two jobs at once.
            for job in jobs:
                queue.release(self.engine, job.lease)
                log.info("job %d released: device %s became busy", job.id, opts.device)
            return [], True
        return jobs, False

    def device_busy(self, besides: list[int] | None = None) -> bool:
        """Whether a job not in `besides` runs, under a live lease, on this host's device.

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
        if besides:
            busy = busy.where(Job.id.not_in(besides))
        with self.engine.connect() as conn:
            return bool(conn.execute(busy).scalar_one())

    def finish(
        self, job: ClaimedJob, checkpoint: Path, label: str, outcome: Any, sharing: int = 1
    ) -> str:
        """Store a finished job's outcome under its lease (its heartbeat already stopped), then
        delete its checkpoint; returns done, failed (the outcome could not be stored) or lost."""
        opts, lease, retrying = self.options, job.lease, self.backoff.call
        if opts.exclusive:
            outcome.extra["exclusive"] = True  # timed alone on its device (slots is 1)
        try:
            completed = retrying(
                "completion",
                lambda: complete(self.engine, lease, outcome, opts.slots * sharing),
            )
        except DatabaseUnreachable:
            raise
        except Exception:
            # The outcome could not be stored (its transaction rolled back): say why in the job
            # rather than let the lease run out with no explanation.
            error = traceback.format_exc()
            self.last_failure = last_line()
            retrying("failure", lambda: queue.fail(self.engine, lease, error))
            log.error("%s: storing the outcome failed: %s", label, self.last_failure)
            return "failed"
        # A commit whose acknowledgement was lost to an outage is retried, finds the job no
        # longer running, and reports False: look whether it was our own attempt that finished.
        if not completed and not retrying("check", lambda: self._ended_as(lease, "done")):
            if retrying("check", lambda: self._ended_as(lease, "cancelled")):
                log.info("%s cancelled (harness cancel) before its result was stored", label)
                return "cancelled"
            log.warning("%s: lease lost before completion; another worker owns it", label)
            return "lost"
        for path in (checkpoint, *stray_temporaries(checkpoint)):
            path.unlink(missing_ok=True)  # also what writers killed mid-write left behind
        log.info("%s done: top1 %.4f", label, outcome.metrics.get("top1") or float("nan"))
        return "done"

    def _ended_as(self, lease: Lease, status: str) -> bool:
        """Whether this very attempt ended the job in `status`: "done" (our own completion,
        whose acknowledgement was lost) or "cancelled" (`harness cancel` keeps the worker)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(Job.status, Job.worker_id, Job.attempts).where(Job.id == lease.job_id)
            ).one()
        return tuple(row) == (status, lease.worker_id, lease.attempt)

    def interrupted(self, lease: Lease, beat: Heartbeat, label: str) -> str:
        """A run stopped by should_stop: give the job back, unless its lease was lost."""
        beat.stop()
        if beat.lost.is_set():
            if self.backoff.call("check", lambda: self._ended_as(lease, "cancelled")):
                log.info("%s cancelled (harness cancel): stopped, nothing more recorded", label)
                return "cancelled"
            log.warning("%s: lease lost (heartbeats too late); job left to its new owner", label)
            return "lost"
        self.backoff.call("release", lambda: queue.release(self.engine, lease))
        log.info("%s released back to the queue; its checkpoint is kept", label)
        return "released"
