"""The job queue in the results database: enqueue, atomic claim, fenced leases, retry.

Writing epochs and outcomes under a lease is in harness.queue.recording.

Concurrency model (docs/QUEUE.md):
- A claim is ONE ``UPDATE jobs ... WHERE id = (SELECT ... LIMIT 1) RETURNING ...`` inside a
  write transaction (SQLite: ``BEGIN IMMEDIATE``, so two workers cannot both read the same
  queued row; PostgreSQL: the sub-select carries ``FOR UPDATE SKIP LOCKED``).
- Every timestamp a lease depends on comes from the DATABASE clock, so hosts with skewed
  clocks agree on who holds what.
- A lease is fenced by (job id, worker id, attempt number): heartbeats, epoch rows, completion,
  failure and release only take effect while this worker still holds that very attempt.
- A claim first returns expired leases to the queue (attempt counted), or fails the job once
  ``max_attempts`` claims have all died.
- A cohort claim (claim_cohort, `harness worker --fuse-seeds S`) takes, in the same one
  transaction, up to S-1 more queued seeds of the oldest job's cell, each with its own lease.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, insert, literal, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.types import DateTime

from harness import __version__, faults
from harness.errors import HarnessError
from harness.experiment.config import JobSpec, TrainConfig
from harness.store.schema import Job, WorkerRow

DEFAULT_MAX_ATTEMPTS = 3
_ENQUEUE_CHUNK = 500


def db_now(engine: Engine | Connection, offset_seconds: float = 0.0) -> ColumnElement[datetime]:
    """The database's current UTC time (+ offset) as an SQL expression, never this host's."""
    if engine.dialect.name == "sqlite":
        # Same text format SQLAlchemy stores for DateTime on SQLite, so comparisons are sound.
        args: list[Any] = ["%Y-%m-%d %H:%M:%f", "now"]
        if offset_seconds:
            args.append(f"{offset_seconds:+.3f} seconds")
        return func.strftime(*args, type_=DateTime)
    # clock_timestamp(), not now(): now() is frozen at the transaction's start, so a claim that
    # waited on another worker's row lock would stamp (and judge) leases with a stale time.
    expr: ColumnElement[datetime] = func.timezone("UTC", func.clock_timestamp(), type_=DateTime)
    if offset_seconds:
        # A literal interval (no bound parameter), so the type is never left to the driver.
        expr = expr + text(f"interval '{float(offset_seconds):.6f} seconds'")
    return expr


def database_time(engine: Engine) -> datetime:
    """The database clock read once (for `status` and tests)."""
    with engine.connect() as conn:
        return conn.execute(select(db_now(conn))).scalar_one()


@dataclass(frozen=True)
class EnqueueResult:
    new: int
    existing: int


def enqueue(
    engine: Engine, specs: Iterable[JobSpec], grid: str, max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> EnqueueResult:
    """Insert the jobs whose key is not in the table yet; the rest are counted as existing."""
    by_key: dict[str, JobSpec] = {}
    for spec in specs:
        by_key.setdefault(spec.key(), spec)
    keys = list(by_key)
    new = 0
    with engine.begin() as conn:
        present: set[str] = set()
        for start in range(0, len(keys), _ENQUEUE_CHUNK):
            chunk = keys[start : start + _ENQUEUE_CHUNK]
            present.update(conn.execute(select(Job.key).where(Job.key.in_(chunk))).scalars())
        rows = [
            {
                "key": key,
                "grid": grid,
                "model": spec.model,
                "dataset": spec.dataset,
                "seed": spec.seed,
                "split_seed": spec.split_seed,
                "protocol": spec.protocol,
                "config": spec.config.to_dict(),
                "harness_version": __version__,
                "status": "queued",
                "attempts": 0,
                "max_attempts": max_attempts,
            }
            for key, spec in by_key.items()
            if key not in present
        ]
        if rows:
            conn.execute(insert(Job), rows)
        new = len(rows)
    return EnqueueResult(new=new, existing=len(keys) - new)


@dataclass(frozen=True)
class Lease:
    """What fences a claim: only this worker's `attempt` of job `job_id` may write."""

    job_id: int
    worker_id: str
    attempt: int


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    key: str
    grid: str
    model: str
    dataset: str
    seed: int
    split_seed: int
    protocol: str
    config: dict[str, Any]
    attempts: int
    max_attempts: int
    lease: Lease

    def spec(self) -> JobSpec:
        config = TrainConfig.from_dict(self.config)
        return JobSpec(self.model, self.dataset, self.seed, self.split_seed, self.protocol, config)


def write_connection(engine: Engine) -> Connection:
    """A connection whose transactions take the write lock at BEGIN on SQLite."""
    return engine.connect().execution_options(sqlite_immediate=True)


def expire_leases(conn: Connection) -> tuple[int, int]:
    """Requeue jobs whose lease ran out; fail those that used up max_attempts. (requeued, failed)."""
    now = db_now(conn)
    expired = (Job.status == "running") & (Job.lease_expires_at < now)
    failed = conn.execute(
        update(Job)
        .where(expired & (Job.attempts >= Job.max_attempts))
        .values(
            status="failed",
            finished_at=now,
            lease_expires_at=None,
            error=literal("lease expired: worker ")
            + func.coalesce(Job.worker_id, "?")
            + " stopped heartbeating; gave up after max_attempts claims all died; fix the cause"
            " (see the workers' logs) and run `harness retry --failed`",
        )
    ).rowcount
    requeued = conn.execute(
        update(Job)
        .where(expired)
        .values(
            status="queued",
            lease_expires_at=None,
            error=literal("lease expired: worker ")
            + func.coalesce(Job.worker_id, "?")
            + " stopped heartbeating; job requeued",
            worker_id=None,
        )
    ).rowcount
    return requeued, failed


# What a claim returns of each row it takes (ClaimedJob's fields, less the lease).
_CLAIMED_COLUMNS = (
    Job.id,
    Job.key,
    Job.grid,
    Job.model,
    Job.dataset,
    Job.seed,
    Job.split_seed,
    Job.protocol,
    Job.config,
    Job.attempts,
    Job.max_attempts,
)


def _take(
    conn: Connection, which: ColumnElement[bool], worker_id: str, device: str, lease_seconds: float
) -> list[Any]:
    """Lease the queued rows matching `which` to this worker (attempt counted), oldest first."""
    now = db_now(conn)
    rows = conn.execute(
        update(Job)
        .where(which, Job.status == "queued")
        .values(
            status="running",
            worker_id=worker_id,
            device=device,
            attempts=Job.attempts + 1,
            lease_expires_at=db_now(conn, lease_seconds),
            heartbeat_at=now,
            started_at=now,
            finished_at=None,
        )
        .returning(*_CLAIMED_COLUMNS)
    ).all()
    return sorted(rows, key=lambda row: row.id)  # RETURNING of a multi-row UPDATE has no order


def _claimed(row: Any, worker_id: str) -> ClaimedJob:
    return ClaimedJob(
        **row._asdict(), lease=Lease(job_id=row.id, worker_id=worker_id, attempt=row.attempts)
    )


def _take_oldest(conn: Connection, worker_id: str, device: str, lease_seconds: float) -> Any:
    """The oldest queued job, leased to this worker, or None (run inside a claim transaction)."""
    oldest = (
        select(Job.id)
        .where(Job.status == "queued")
        .order_by(Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = _take(conn, Job.id == oldest, worker_id, device, lease_seconds)
    return rows[0] if rows else None


def claim(engine: Engine, worker_id: str, device: str, lease_seconds: float) -> ClaimedJob | None:
    """Atomically take the oldest queued job (after requeueing expired leases), or None."""
    claimed = claim_cohort(engine, worker_id, device, lease_seconds, 1)
    return claimed[0] if claimed else None


def claim_cohort(
    engine: Engine, worker_id: str, device: str, lease_seconds: float, size: int
) -> list[ClaimedJob]:
    """Atomically take the oldest queued job and up to `size` - 1 more seeds of its cell.

    The others must equal it in everything but the seed (model, dataset, split seed, protocol,
    harness version, configuration), so that harness.training.loop.run_jobs can train them as one fused
    model; only a `device`-pipeline job has partners (the fused step reads device-resident
    batches). Each job gets its own lease, exactly as `claim` writes it. [] when none is queued.
    """
    if size < 1:
        raise HarnessError(f"a cohort has at least one job (got size {size})")
    with write_connection(engine) as conn, conn.begin():
        expire_leases(conn)
        first = _take_oldest(conn, worker_id, device, lease_seconds)
        if first is None:
            return []
        rows = [first]
        if size > 1 and first.config.get("pipeline") == "device":
            rows += _take_partners(conn, first, worker_id, device, lease_seconds, size - 1)
        faults.point("claim")  # the fault suite: killed after the UPDATEs, before the commit
    return [_claimed(row, worker_id) for row in rows]


def _take_partners(
    conn: Connection, first: Any, worker_id: str, device: str, lease_seconds: float, limit: int
) -> list[Any]:
    """Up to `limit` queued seeds of `first`'s cell, oldest first, leased to this worker."""
    harness_version = select(Job.harness_version).where(Job.id == first.id).scalar_subquery()
    candidates = conn.execute(
        select(Job.id, Job.config)
        .where(
            Job.status == "queued",
            Job.model == first.model,
            Job.dataset == first.dataset,
            Job.split_seed == first.split_seed,
            Job.protocol == first.protocol,
            Job.harness_version == harness_version,
        )
        .order_by(Job.id)
        # Rows another claim holds are skipped, not waited for; those locked here but left out
        # below (another configuration) are free again at this short transaction's commit.
        .with_for_update(skip_locked=True)
    ).all()
    # The configs are compared here, in Python: PostgreSQL's JSON type has no equality operator.
    ids = [row.id for row in candidates if row.config == first.config][:limit]
    return _take(conn, Job.id.in_(ids), worker_id, device, lease_seconds) if ids else []


def lease_held(lease: Lease) -> ColumnElement[bool]:
    """The fence: this job is still running under this worker's very attempt."""
    return (
        (Job.id == lease.job_id)
        & (Job.worker_id == lease.worker_id)
        & (Job.attempts == lease.attempt)
        & (Job.status == "running")
    )


def fenced_update(conn: Connection, lease: Lease, **values: Any) -> bool:
    """Update the job's row only if this lease still holds it; True when it did."""
    return conn.execute(update(Job).where(lease_held(lease)).values(**values)).rowcount == 1


def heartbeat(engine: Engine, lease: Lease, lease_seconds: float) -> bool:
    """Extend the lease; False when this worker no longer holds the job (fenced out)."""
    with engine.begin() as conn:
        now = db_now(conn)
        held = fenced_update(
            conn, lease, lease_expires_at=db_now(conn, lease_seconds), heartbeat_at=now
        )
        conn.execute(
            update(WorkerRow).where(WorkerRow.id == lease.worker_id).values(heartbeat_at=now)
        )
    return held


def count_outcome(conn: Connection, worker_id: str, *, done: bool) -> None:
    """Count a finished (done=True) or failed job on the worker's row."""
    if done:
        values: dict[str, Any] = {
            "jobs_done": WorkerRow.jobs_done + 1,
            "consecutive_failures": 0,
        }
    else:
        values = {
            "jobs_failed": WorkerRow.jobs_failed + 1,
            "consecutive_failures": WorkerRow.consecutive_failures + 1,
        }
    conn.execute(update(WorkerRow).where(WorkerRow.id == worker_id).values(**values))


def fail(engine: Engine, lease: Lease, error: str) -> bool:
    """Mark the job failed with `error` (a full traceback), if the lease still holds."""
    with write_connection(engine) as conn, conn.begin():
        now = db_now(conn)
        held = fenced_update(
            conn, lease, status="failed", error=error, finished_at=now, lease_expires_at=None
        )
        count_outcome(conn, lease.worker_id, done=False)
    return held


def release(engine: Engine, lease: Lease) -> bool:
    """Give the job back to the queue (a clean stop): the attempt does not count."""
    with write_connection(engine) as conn, conn.begin():
        return fenced_update(
            conn,
            lease,
            status="queued",
            worker_id=None,
            lease_expires_at=None,
            attempts=Job.attempts - 1,
        )


def retry_failed(engine: Engine) -> int:
    """Failed jobs back to the queue with a fresh attempt budget; returns how many."""
    with write_connection(engine) as conn, conn.begin():
        return conn.execute(
            update(Job)
            .where(Job.status == "failed")
            .values(status="queued", attempts=0, worker_id=None, lease_expires_at=None)
        ).rowcount


def retry_stale(engine: Engine) -> int:
    """Running jobs whose lease has expired back to the queue now (attempts kept)."""
    now = db_now(engine)
    with write_connection(engine) as conn, conn.begin():
        return conn.execute(
            update(Job)
            .where(Job.status == "running", Job.lease_expires_at < now)
            .values(
                status="queued",
                worker_id=None,
                lease_expires_at=None,
                error=literal("lease expired: worker ")
                + func.coalesce(Job.worker_id, "?")
                + " stopped heartbeating; requeued by `harness retry --stale`",
            )
        ).rowcount


def register_worker(engine: Engine, worker_id: str, host: str, pid: int, device: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(WorkerRow).values(
                id=worker_id, host=host, pid=pid, device=device, heartbeat_at=db_now(conn)
            )
        )


def stop_worker(
    engine: Engine, worker_id: str, reason: str | None = None, *, quarantined: bool = False
) -> None:
    """Mark the worker stopped, with why; `quarantined` when its device kept failing jobs."""
    with engine.begin() as conn:
        conn.execute(
            update(WorkerRow)
            .where(WorkerRow.id == worker_id)
            .values(
                stopped=True,
                heartbeat_at=db_now(conn),
                stop_reason=reason,
                quarantined=quarantined,
            )
        )
