"""`harness status`: jobs by state, running jobs with their epoch progress, an ETA, and
failures with their exception; `--json` for scripts, `--watch` to follow (a live table on a
terminal, plain lines when piped)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from harness.commands._common import add_db_option, db_url
from harness.errors import HarnessError
from harness.store.schema import JOB_STATES, EpochRow, Job, WorkerRow
from harness.workers.cohort import format_seconds


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status", help="queued / running / done / failed jobs, running epochs, ETA, failures"
    )
    add_db_option(parser)
    parser.add_argument(
        "--watch",
        action="store_true",
        help="refresh until Ctrl-C: a live table on a terminal, plain lines when piped",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document (docs/JSON.md)")
    parser.add_argument(
        "--interval",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between refreshes with --watch (default 5)",
    )
    parser.add_argument(
        "--failures",
        type=int,
        default=20,
        metavar="N",
        help="show at most N failed jobs (default 20)",
    )
    parser.set_defaults(func=run)


@dataclass
class RunningJob:
    id: int
    label: str
    epoch: int
    max_epochs: int
    worker: str
    stale: bool  # lease expired: its worker has died or stalled
    # From the job's epoch rows (None before its first epoch is recorded).
    train_loss: float | None = None
    val_acc: float | None = None
    mean_epoch_seconds: float | None = None

    @property
    def eta_seconds(self) -> float | None:
        """The epochs left at this job's mean epoch time (early stopping may end it sooner)."""
        if self.mean_epoch_seconds is None:
            return None
        return max(0, self.max_epochs - self.epoch) * self.mean_epoch_seconds


@dataclass
class FailedJob:
    id: int
    label: str
    attempts: int
    exception: str  # the last line of the traceback


@dataclass
class QuarantinedWorker:
    host: str
    pid: int
    device: str
    reason: str


@dataclass
@dataclass
class AuditProgress:
    """A sequential audit's last recorded round (`harness audit` writes it every round)."""

    name: str
    state: str  # running / finished
    horizon: int
    parts: int
    states: dict[str, int]  # part state (decided, open, horizon, out of budget, ...) -> count
    max_n: int  # the most pairs any part has
    spent_hours: float
    budget_hours: float | None
    claims: dict[str, str]  # claim id -> its sequential verdict
    updated_at: str | None

    def line(self) -> str:
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items())) or "no parts yet"
        budget = f"{self.spent_hours:.3f} device-h spent"
        if self.budget_hours is not None:
            budget += f" of {self.budget_hours:g} ({self.budget_hours - self.spent_hours:.3f} left)"
        verdicts: dict[str, int] = {}
        for verdict in self.claims.values():
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
        claims = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
        return (f"audit {self.name} ({self.state}): {self.parts} parts: {states}; up to "
                f"{self.max_n} of {self.horizon} seeds; {budget}; claims: {claims or 'none'}; "
                f"updated {self.updated_at or 'never'}")  # fmt: skip


@dataclass
class QueueStatus:
    counts: dict[str, int]
    running: list[RunningJob] = field(default_factory=list)
    failed: list[FailedJob] = field(default_factory=list)
    mean_epoch_seconds: float | None = None
    epochs_measured: int = 0
    remaining_epochs: int = 0  # an upper bound: early stopping ends most jobs sooner
    resuming: int = 0  # queued jobs with checkpointed epochs (released, stale or retried)
    resumed_epochs: int = 0  # the epochs those jobs will not run again
    quarantined: list[QuarantinedWorker] = field(default_factory=list)
    paused: bool = False
    audits: list[AuditProgress] = field(default_factory=list)

    @property
    def eta_seconds(self) -> float | None:
        if self.mean_epoch_seconds is None or not self.remaining_epochs:
            return None
        return self.remaining_epochs * self.mean_epoch_seconds / self.parallel

    @property
    def parallel(self) -> int:
        """Jobs progressing at once: running under a live lease (at least one)."""
        return max(1, len([job for job in self.running if not job.stale]))


def last_error_line(error: str | None) -> str:
    """The exception of a traceback (its last non-empty line)."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no error recorded)"


def _label(job: Job) -> str:
    return f"{job.model}/{job.dataset}/seed {job.seed} [{job.protocol}]"


def collect_status(engine: Engine, max_failures: int = 20) -> QueueStatus:
    from harness.queue.jobs import queue_paused
    from harness.store.clock import database_time

    now = database_time(engine)
    with Session(engine) as conn:
        counts = dict.fromkeys(JOB_STATES, 0)
        for state, count in conn.execute(select(Job.status, func.count()).group_by(Job.status)):
            counts[state] = count
        mean, measured = conn.execute(
            select(func.avg(EpochRow.train_seconds + EpochRow.eval_seconds), func.count())
        ).one()
        status = QueueStatus(counts, mean_epoch_seconds=mean, epochs_measured=measured)
        status.paused = queue_paused(conn.connection(), lock=False)
        pending = conn.execute(
            select(Job).where(Job.status.in_(("queued", "running"))).order_by(Job.id)
        ).scalars()
        for job in pending:
            max_epochs = int(job.config.get("max_epochs") or 0)
            # Epochs recorded so far: each row follows its checkpoint, and a released, stale or
            # retried job keeps both, so the next worker resumes after them (with the same
            # --checkpoints folder; on another machine without it, the job starts again).
            done = min(job.epoch or 0, max_epochs)
            status.remaining_epochs += max_epochs - done
            if job.status == "queued" and done:
                status.resuming += 1
                status.resumed_epochs += done
            if job.status == "running":
                stale = job.lease_expires_at is not None and job.lease_expires_at < now
                status.running.append(
                    RunningJob(job.id, _label(job), done, max_epochs, job.worker_id or "?", stale)
                )
        _add_epoch_progress(conn, status.running)
        failed = conn.execute(
            select(Job).where(Job.status == "failed").order_by(Job.id).limit(max_failures)
        ).scalars()
        status.failed = [
            FailedJob(job.id, _label(job), job.attempts, last_error_line(job.error))
            for job in failed
        ]
        quarantined = conn.execute(
            select(WorkerRow).where(WorkerRow.quarantined).order_by(WorkerRow.started_at)
        ).scalars()
        status.quarantined = [
            QuarantinedWorker(w.host, w.pid, w.device, w.stop_reason or "(no reason recorded)")
            for w in quarantined
        ]
    from harness.audit.spec import audit_rows

    status.audits = [_audit_progress(row) for row in audit_rows(engine)]
    return status


def _audit_progress(row: dict[str, Any]) -> AuditProgress:
    progress = row["progress"]
    updated = row["updated_at"]
    return AuditProgress(
        name=row["name"], state=row["state"], horizon=int(row["design"]["horizon"]),
        parts=int(progress.get("parts", 0)), states=dict(progress.get("states", {})),
        max_n=int(progress.get("max_n", 0)), spent_hours=float(progress.get("spent_hours", 0.0)),
        budget_hours=row["design"].get("budget_hours"), claims=dict(progress.get("claims", {})),
        updated_at=updated.strftime("%Y-%m-%d %H:%M:%S UTC") if updated else None,
    )  # fmt: skip


def _add_epoch_progress(conn: Session, running: list[RunningJob]) -> None:
    """Each running job's last epoch (train loss, val top-1) and mean epoch time."""
    if not running:
        return
    by_id = {job.id: job for job in running}
    rows = conn.execute(
        select(EpochRow.job_id, EpochRow.epoch, EpochRow.train_loss, EpochRow.val_acc,
               EpochRow.train_seconds + EpochRow.eval_seconds)
        .where(EpochRow.job_id.in_(by_id))
        .order_by(EpochRow.job_id, EpochRow.epoch)
    )  # fmt: skip
    seconds: dict[int, list[float]] = {}
    for job_id, _epoch, loss, val_acc, spent in rows:
        job = by_id[job_id]
        job.train_loss, job.val_acc = loss, val_acc
        seconds.setdefault(job_id, []).append(spent)
    for job_id, spent in seconds.items():
        by_id[job_id].mean_epoch_seconds = sum(spent) / len(spent)


def status_document(status: QueueStatus) -> dict[str, Any]:
    """`status --json` (docs/JSON.md): the same facts as the text, with numbers unrounded."""
    doc = dataclasses.asdict(status)
    doc["total"] = sum(status.counts.values())
    doc["eta_seconds"] = status.eta_seconds
    doc["parallel"] = status.parallel
    for job, row in zip(status.running, doc["running"], strict=True):
        row["eta_seconds"] = job.eta_seconds
    return doc


def format_status(status: QueueStatus, running: bool = True) -> str:
    """The status as text; running=False leaves out the running jobs (the live table shows
    them)."""
    total = sum(status.counts.values())
    shown = [s for s in JOB_STATES if s != "cancelled" or status.counts[s]]
    lines = [
        "jobs: " + ", ".join(f"{status.counts[s]} {s}" for s in shown) + f" ({total} total)"
    ]
    if status.paused:
        lines.append("PAUSED: workers claim nothing until `harness resume`; running jobs go on")
    if status.quarantined:
        # Right under the counts: a device that fails every job is the first thing to fix.
        lines.append(
            f"QUARANTINED workers ({len(status.quarantined)}): they stopped claiming after "
            "failing jobs in a row; fix the device, `harness retry --failed`, start new workers"
        )
        for worker in status.quarantined:
            lines.append(
                f"  host {worker.host} pid {worker.pid} device {worker.device}: {worker.reason}"
            )
    lines += [audit.line() for audit in status.audits]
    if status.running and running:
        lines.append("running:")
        for job in status.running:
            note = "  STALE: lease expired (harness retry --stale)" if job.stale else ""
            lines.append(
                f"  #{job.id} {job.label} epoch {job.epoch}/{job.max_epochs}{_progress(job)} "
                f"on {job.worker}{note}"
            )
    eta = status.eta_seconds
    if eta is not None:
        lines.append(
            f"ETA: at most {format_seconds(eta)} ({status.remaining_epochs} epochs left x "
            f"{status.mean_epoch_seconds:.1f} s mean epoch over {status.epochs_measured} epochs, "
            f"{status.parallel} at a time; early stopping usually ends jobs sooner)"
        )
        if status.resuming:
            lines.append(
                f"  {status.resuming} queued job(s) resume from their checkpoints: "
                f"{status.resumed_epochs} epochs already done are not counted"
            )
    elif status.remaining_epochs:
        lines.append("ETA: unknown until the first epoch finishes")
    if status.counts["failed"]:
        shown = len(status.failed)
        lines.append(
            f"failed ({shown} of {status.counts['failed']} shown; "
            "`harness retry --failed` requeues them):"
        )
        for failure in status.failed:
            lines.append(
                f"  #{failure.id} {failure.label} after {failure.attempts} attempt(s): "
                f"{failure.exception}"
            )
    return "\n".join(lines)


def _progress(job: RunningJob) -> str:
    """' (val top-1 0.8123, train loss 0.4100, 2.1 s/epoch, ETA <= 12.6 s)', or ''."""
    if job.val_acc is None or job.mean_epoch_seconds is None:
        return ""
    eta = job.eta_seconds or 0.0
    return (
        f" (val top-1 {job.val_acc:.4f}, train loss {job.train_loss:.4f}, "
        f"{job.mean_epoch_seconds:.1f} s/epoch, ETA <= {format_seconds(eta)})"
    )


def run(args: argparse.Namespace) -> int:
    from harness.store.engine import make_engine

    if args.interval <= 0:
        raise HarnessError(f"--interval must be positive (got {args.interval:g})")
    if args.json and args.watch:
        raise HarnessError("--json prints one document; drop --watch (or poll status --json)")
    engine = make_engine(db_url(args), must_exist=True)
    if args.json:
        doc = status_document(collect_status(engine, args.failures))
        print(json.dumps(doc, indent=1, sort_keys=True, default=str))
        return 0
    if not args.watch:
        print(format_status(collect_status(engine, args.failures)))
        return 0
    try:
        if sys.stdout.isatty():
            from harness.commands.status_live import watch_live

            def read() -> tuple[QueueStatus, str]:
                status = collect_status(engine, args.failures)
                return status, format_status(status, running=False)

            watch_live(read, args.interval)
        else:
            _watch_plain(lambda: collect_status(engine, args.failures), args.interval)
    except KeyboardInterrupt:
        return 0
    return 0


def _watch_plain(read: Any, interval: float) -> None:
    """Piped: one block of plain lines per refresh, no terminal codes, flushed each time."""
    while True:
        stamp = datetime.now().strftime("%H:%M:%S")
        print(f"--- {stamp}\n{format_status(read())}", flush=True)
        time.sleep(interval)
