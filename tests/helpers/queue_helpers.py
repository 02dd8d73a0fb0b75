"""Helpers shared by the queue tests on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from harness.experiment.config import JobSpec, resolve_config
from harness.queue import jobs as queue
from harness.store.schema import Job


def tiny_specs(count: int, max_epochs: int = 1) -> list[JobSpec]:
    """`count` distinct resnet18/digits jobs (seeds 0..count-1)."""
    config = resolve_config("paper", "digits", "resnet18", {"max_epochs": max_epochs})
    return [JobSpec("resnet18", "digits", seed, 42, "paper", config) for seed in range(count)]


def job_row(engine, job_id: int) -> Job:
    with Session(engine) as session:
        return session.get_one(Job, job_id)


def expire_lease(engine, job_id: int) -> None:
    """Move a lease into the past by the database clock (what a dead worker's lease becomes)."""
    with engine.begin() as conn:
        conn.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=queue.db_now(conn, -1))
        )
