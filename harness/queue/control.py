"""What an operator does to the queue: retry, cancel, pause and resume.

Every change is one transaction that also writes the jobs' events. A cancelled running job is
no longer `running`, so its worker's next fenced write (the epoch row at the epoch's end, or a
heartbeat) finds the lease gone and stops the run; the worker then records nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, update
from sqlalchemy.engine import Engine

from harness.queue.events import record_events
from harness.queue.jobs import queue_paused, requeue_expired, write_connection
from harness.store.clock import db_now
from harness.store.schema import Job, QueueFlag

CANCELLABLE = ("queued", "running", "failed")


@dataclass(frozen=True)
class JobFilter:
    """Which jobs an operator means: ids, or model/dataset/grid (all given must match)."""

    ids: Sequence[int] = ()
    models: Sequence[str] = ()
    datasets: Sequence[str] = ()
    grids: Sequence[str] = ()

    @property
    def empty(self) -> bool:
        return not (self.ids or self.models or self.datasets or self.grids)

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses = []
        for column, values in (
            (Job.id, self.ids),
            (Job.model, self.models),
            (Job.dataset, self.datasets),
            (Job.grid, self.grids),
        ):
            if values:
                clauses.append(column.in_(list(values)))
        return clauses


def cancel(engine: Engine, which: JobFilter) -> dict[str, int]:
    """Cancel the matching queued, running and failed jobs; {previous state: how many}."""
    now = db_now(engine)
    counts: dict[str, int] = {}
    with write_connection(engine) as conn, conn.begin():
        for state in CANCELLABLE:
            ids = conn.execute(
                update(Job)
                .where(*which.clauses(), Job.status == state)
                .values(status="cancelled", finished_at=now, lease_expires_at=None)
                .returning(Job.id)
            ).scalars().all()
            note = "cancelled while running: its worker stops at the next epoch boundary"
            record_events(conn, ids, "cancelled", note if state == "running" else f"was {state}")
            counts[state] = len(ids)
    return counts


def retry_failed(engine: Engine) -> int:
    """Failed jobs back to the queue with a fresh attempt budget; returns how many."""
    return _requeue(engine, "failed", "retry --failed")


def retry_cancelled(engine: Engine) -> int:
    """Cancelled jobs back to the queue with a fresh attempt budget; returns how many."""
    return _requeue(engine, "cancelled", "retry --cancelled")


def _requeue(engine: Engine, state: str, note: str) -> int:
    with write_connection(engine) as conn, conn.begin():
        ids = conn.execute(
            update(Job)
            .where(Job.status == state)
            .values(status="queued", attempts=0, worker_id=None, lease_expires_at=None)
            .returning(Job.id)
        ).scalars().all()
        record_events(conn, ids, "queued", note)
    return len(ids)


def retry_stale(engine: Engine) -> int:
    """Running jobs whose lease has expired back to the queue now (attempts kept)."""
    with write_connection(engine) as conn, conn.begin():
        return requeue_expired(
            conn,
            "; requeued by `harness retry --stale`",
            "retry --stale: the lease had expired",
        )


def set_paused(engine: Engine, paused: bool) -> bool:
    """Pause (no claim starts once this returns; running jobs go on) or resume the queue.
    Returns whether it was paused before."""
    with write_connection(engine) as conn, conn.begin():
        before = queue_paused(conn)
        conn.execute(
            update(QueueFlag)
            .where(QueueFlag.name == "paused")
            .values(value="1" if paused else "0", changed_at=db_now(conn))
        )
    return before


def is_paused(engine: Engine) -> bool:
    with engine.connect() as conn:
        return queue_paused(conn, lock=False)
