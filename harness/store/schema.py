"""The results database's tables (SQLAlchemy 2.x models); the engine is in harness.store.engine.

Units: every accuracy, precision/recall/F1, ECE and generalisation gap is stored as a fraction
in [0, 1] (the report converts to the paper's percent where Tables 3, 6 and 9 print percent).
Times are seconds; timestamps are UTC from the database clock where leases depend on them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
GRADIENT_MODES = ("output", "param")  # paper's grad_output hooks; per-parameter gradient norms


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    grid: Mapped[str] = mapped_column(String(200), nullable=False)
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    dataset: Mapped[str] = mapped_column(String(64), nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    split_seed: Mapped[int] = mapped_column(Integer, nullable=False)
    protocol: Mapped[str] = mapped_column(String(64), nullable=False)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)  # TrainConfig.to_dict()
    harness_version: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    epoch: Mapped[int | None] = mapped_column(Integer)  # last finished epoch, for `status`
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.current_timestamp())
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    error: Mapped[str | None] = mapped_column(Text)  # full traceback of the last failure
    # Revision 0004: claimed highest first, oldest first within a priority.
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # Revision 0005: [{key, protocol, run}] where the config differs from its protocol
    # (harness.experiment.departures); NULL for jobs queued before it and imported runs.
    departures: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)

    result: Mapped[Result | None] = relationship(back_populates="job", uselist=False)
    epochs: Mapped[list[EpochRow]] = relationship(back_populates="job", order_by="EpochRow.epoch")

    __table_args__ = (
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_cell", "protocol", "dataset", "model"),
    )


class JobEvent(Base):
    """One state change of a job (revision 0004): `harness show` prints them as its history.
    Written in the same transaction as the change itself."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime, nullable=False)  # database clock, UTC
    state: Mapped[str] = mapped_column(String(16), nullable=False)  # JOB_STATES
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)  # why: "released", "lease expired", ...

    __table_args__ = (Index("ix_job_events_job", "job_id", "id"),)


class QueueFlag(Base):
    """Switches every worker reads inside its claim (revision 0004): `paused` = "1" stops all
    claims. The row always exists, so a claim can lock it against a concurrent pause."""

    __tablename__ = "queue_flags"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), nullable=False)
    changed_at: Mapped[datetime | None] = mapped_column(DateTime)


event.listen(
    QueueFlag.__table__,
    "after_create",  # create_all of a new database; migration 0004 inserts the same rows
    DDL("INSERT INTO queue_flags (name, value) VALUES ('paused', '0')"),
)


class AuditRow(Base):
    """One sequential audit (revision 0006, `harness audit`): everything it needs to resume
    from the database alone, and the progress its controller last wrote (for `status`)."""

    __tablename__ = "audits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    # The grid (cells, seeds up to the horizon, protocol, overrides) and claims, as resolved.
    grid: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    claims: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # NULL: the paper's
    claims_source: Mapped[str] = mapped_column(String(500), nullable=False)
    # horizon, spending, alpha, budget_hours (NULL: none), ahead
    design: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="running")
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.current_timestamp())
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class Result(Base):
    """One row per finished job: test metrics of the evaluated model, and provenance."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True, nullable=False)
    # NULL only for imported runs (harness import) that lack the value; migration 0003.
    top1: Mapped[float | None] = mapped_column(Float)
    top3: Mapped[float | None] = mapped_column(Float)
    top5: Mapped[float | None] = mapped_column(Float)
    precision_macro: Mapped[float | None] = mapped_column(Float)
    recall_macro: Mapped[float | None] = mapped_column(Float)
    f1_macro: Mapped[float | None] = mapped_column(Float)
    precision_weighted: Mapped[float | None] = mapped_column(Float)
    recall_weighted: Mapped[float | None] = mapped_column(Float)
    f1_weighted: Mapped[float | None] = mapped_column(Float)
    ece: Mapped[float | None] = mapped_column(Float)
    nll: Mapped[float | None] = mapped_column(Float)
    gen_gap_best: Mapped[float | None] = mapped_column(Float)  # train acc - val acc, best epoch
    gen_gap_last: Mapped[float | None] = mapped_column(Float)  # same, last epoch run
    best_epoch: Mapped[int | None] = mapped_column(Integer)  # 1-based
    epochs_run: Mapped[int | None] = mapped_column(Integer)
    evaluated_epoch: Mapped[int | None] = mapped_column(Integer)  # weights tested
    epoch_seconds: Mapped[float | None] = mapped_column(Float)  # mean train + validation pass
    train_seconds: Mapped[float | None] = mapped_column(Float)  # mean training pass
    eval_seconds: Mapped[float | None] = mapped_column(Float)  # mean validation pass
    params: Mapped[int | None] = mapped_column(Integer)
    slots: Mapped[int] = mapped_column(Integer, nullable=False, default=1)  # jobs sharing device
    device: Mapped[str | None] = mapped_column(String(200))
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.current_timestamp())

    job: Mapped[Job] = relationship(back_populates="result")


class EpochRow(Base):
    __tablename__ = "epochs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), nullable=False)
    epoch: Mapped[int] = mapped_column(Integer, nullable=False)  # 1-based
    train_loss: Mapped[float] = mapped_column(Float, nullable=False)
    train_acc: Mapped[float] = mapped_column(Float, nullable=False)
    val_loss: Mapped[float] = mapped_column(Float, nullable=False)
    val_acc: Mapped[float] = mapped_column(Float, nullable=False)
    lr: Mapped[float] = mapped_column(Float, nullable=False)
    train_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    eval_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    slots: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    job: Mapped[Job] = relationship(back_populates="epochs")
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_epoch_job_epoch"),)


class GradientLayer(Base):
    """Gradient norms of one layer under one measurement mode (GHS is derived from these)."""

    __tablename__ = "gradient_layers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), nullable=False)
    mode: Mapped[str] = mapped_column(String(16), nullable=False)  # GRADIENT_MODES
    layer_index: Mapped[int] = mapped_column(Integer, nullable=False)  # depth order
    layer: Mapped[str] = mapped_column(String(300), nullable=False)  # module / parameter name
    kind: Mapped[str] = mapped_column(String(64), nullable=False)  # Conv2d, Linear, ...
    batches: Mapped[int] = mapped_column(Integer, nullable=False)  # 0 = silent (never fired)
    mean: Mapped[float | None] = mapped_column(Float)
    std: Mapped[float | None] = mapped_column(Float)
    min: Mapped[float | None] = mapped_column(Float)
    max: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("job_id", "mode", "layer_index", name="uq_gradient_layer"),)


class WorkerRow(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid:start
    host: Mapped[str] = mapped_column(String(200), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    device: Mapped[str] = mapped_column(String(200), nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.current_timestamp())
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    jobs_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    jobs_failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    stopped: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Schema revision 0002: a worker whose device failed N jobs in a row stops claiming and
    # says so (`harness status`); stop_reason is the last line it logged when it stopped.
    quarantined: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default="0"
    )
    stop_reason: Mapped[str | None] = mapped_column(Text)
