"""A job's history: one `job_events` row per state change, written inside the transaction
that makes the change (so the history never disagrees with the job row)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, String, insert, literal, null, select

from harness.store.clock import db_now
from harness.store.schema import Job, JobEvent

_CHUNK = 500  # ids per statement: far below every database's bound-parameter limit


def record_events(
    conn: Connection, job_ids: Iterable[int], state: str, note: str | None = None
) -> None:
    """One event per job, stamped with the database clock and the job's attempt and worker as
    they stand after the change (so call this after the UPDATE, in the same transaction)."""
    ids = sorted(set(job_ids))
    columns = ["job_id", "at", "state", "attempt", "worker_id", "note"]
    for start in range(0, len(ids), _CHUNK):
        rows = select(
            Job.id,
            db_now(conn),
            literal(state, String),
            Job.attempts,
            Job.worker_id,
            null() if note is None else literal(note, String),
        ).where(Job.id.in_(ids[start : start + _CHUNK]))
        conn.execute(insert(JobEvent).from_select(columns, rows))
