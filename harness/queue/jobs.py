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
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, insert, literal, select, update
from sqlalchemy.engine import Engine

from harness import __version__, faults
from harness.errors import HarnessError, error_line
from harness.experiment.config import JobSpec, TrainConfig
from harness.experiment.departures import as_json, departures
from harness.queue.events import record_events
from harness.store.clock import db_now
from harness.store.schema import Job, QueueFlag, WorkerRow

DEFAULT_MAX_ATTEMPTS = 3
_ENQUEUE_CHUNK = 500


@dataclass(frozen=True)
class EnqueueResult:
    new: int
    existing: int
    reprioritised: int = 0  # existing jobs still queued that took the new priority


def enqueue(
    engine: Engine,
    specs: Iterable[JobSpec],
    grid: str,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    priority: int | None = None,
) -> EnqueueResult:
    """Insert the jobs whose key is not in the table yet (at `priority`, default 0); the rest
    are counted as existing. With a priority given, existing jobs still queued take it."""
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
                "departures": as_json(
                    departures(spec.protocol, spec.dataset, spec.model, spec.config)
                ),
                "harness_version": __version__,
                "status": "queued",
                "attempts": 0,
                "max_attempts": max_attempts,
                "priority": priority or 0,
            }
            for key, spec in by_key.items()
            if key not in present
        ]
        if rows:
            ids = conn.execute(insert(Job).returning(Job.id), rows).scalars().all()
            record_events(conn, ids, "queued", f"enqueued (grid {grid}, priority {priority or 0})")
        new = len(rows)
        moved = 0
        if priority is not None and present:
            existing = sorted(present)
            for start in range(0, len(existing), _ENQUEUE_CHUNK):
                ids = conn.execute(
                    update(Job)
                    .where(
                        Job.key.in_(existing[start : start + _ENQUEUE_CHUNK]),
                        Job.status == "queued",
                        Job.priority != priority,
                    )
                    .values(priority=priority)
                    .returning(Job.id)
                ).scalars().all()
                record_events(conn, ids, "queued", f"priority set to {priority}")
                moved += len(ids)
    return EnqueueResult(new=new, existing=len(keys) - new, reprioritised=moved)


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
    failed_ids = conn.execute(
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
        .returning(Job.id)
    ).scalars().all()
    record_events(conn, failed_ids, "failed", "lease expired; max_attempts used up")
    requeued = requeue_expired(
        conn, "; job requeued", "lease expired: the worker stopped heartbeating"
    )
    return requeued, len(failed_ids)


def requeue_expired(conn: Connection, error_tail: str, note: str) -> int:
    """Running jobs whose lease ran out back to `queued` (attempts kept), with an error naming
    the silent worker; returns how many."""
    ids = conn.execute(
        update(Job)
        .where(Job.status == "running", Job.lease_expires_at < db_now(conn))
        .values(
            status="queued",
            lease_expires_at=None,
            error=literal("lease expired: worker ")
            + func.coalesce(Job.worker_id, "?")
            + " stopped heartbeating"
            + literal(error_tail),
            worker_id=None,
        )
        .returning(Job.id)
    ).scalars().all()
    record_events(conn, ids, "queued", note)
    return len(ids)


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
    record_events(conn, [row.id for row in rows], "running", f"claimed for {device}")
    return sorted(rows, key=lambda row: row.id)  # RETURNING of a multi-row UPDATE has no order


def _claimed(row: Any, worker_id: str) -> ClaimedJob:
    return ClaimedJob(
        **row._asdict(), lease=Lease(job_id=row.id, worker_id=worker_id, attempt=row.attempts)
    )


def _take_oldest(conn: Connection, worker_id: str, device: str, lease_seconds: float) -> Any:
    """The next queued job (highest priority, then oldest), leased to this worker, or None
    (run inside a claim transaction)."""
    oldest = (
        select(Job.id)
        .where(Job.status == "queued")
        .order_by(Job.priority.desc(), Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = _take(conn, Job.id == oldest, worker_id, device, lease_seconds)
    return rows[0] if rows else None


def claim(engine: Engine, worker_id: str, device: str, lease_seconds: float) -> ClaimedJob | None:
    """Atomically take the next queued job (after requeueing expired leases), or None."""
    claimed = claim_cohort(engine, worker_id, device, lease_seconds, 1)
    return claimed[0] if claimed else None


def claim_cohort(
    engine: Engine, worker_id: str, device: str, lease_seconds: float, size: int
) -> list[ClaimedJob]:
    """Atomically take the next queued job and up to `size` - 1 more seeds of its cell;
    none while the queue is paused (`harness pause`).

    The others must equal it in everything but the seed (model, dataset, split seed, protocol,
    harness version, configuration), so that harness.training.loop.run_jobs can train them as one fused
    model; only a `device`-pipeline job has partners (the fused step reads device-resident
    batches). Each job gets its own lease, exactly as `claim` writes it. [] when none is queued.
    """
    if size < 1:
        raise HarnessError(f"a cohort has at least one job (got size {size})")
    with write_connection(engine) as conn, conn.begin():
        if queue_paused(conn):
            return []
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
        if held:
            record_events(conn, [lease.job_id], "failed", error_line(error) or None)
        count_outcome(conn, lease.worker_id, done=False)
    return held


def release(engine: Engine, lease: Lease) -> bool:
    """Give the job back to the queue (a clean stop): the attempt does not count."""
    with write_connection(engine) as conn, conn.begin():
        held = fenced_update(
            conn,
            lease,
            status="queued",
            worker_id=None,
            lease_expires_at=None,
            attempts=Job.attempts - 1,
        )
        if held:
            record_events(conn, [lease.job_id], "queued", f"released by {lease.worker_id}")
        return held


def queue_paused(conn: Connection, *, lock: bool = True) -> bool:
    """Whether `harness pause` holds the queue. A claim reads it with a shared lock on the
    flag's row, so a pause waits for the claims in flight and no claim starts after it returns;
    `lock=False` for a look that decides nothing (status, a worker saying why it stops)."""
    flag = select(QueueFlag.value).where(QueueFlag.name == "paused")
    if lock and conn.dialect.name != "sqlite":  # SQLite's write lock already serialises them
        flag = flag.with_for_update(read=True)
    return conn.execute(flag).scalar() == "1"


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
