"""Results database: SQLAlchemy 2.x models and engine set-up (SQLite or PostgreSQL).

Units: every accuracy, precision/recall/F1, ECE and generalisation gap is stored as a fraction
in [0, 1] (the report converts to the paper's percent where Tables 3, 6 and 9 print percent).
Times are seconds; timestamps are UTC from the database clock where leases depend on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
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
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from harness.errors import HarnessError

JOB_STATES = ("queued", "running", "done", "failed")
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

    result: Mapped[Result | None] = relationship(back_populates="job", uselist=False)
    epochs: Mapped[list[EpochRow]] = relationship(back_populates="job", order_by="EpochRow.epoch")

    __table_args__ = (
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_cell", "protocol", "dataset", "model"),
    )


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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    """Emit BEGIN ourselves (pysqlite's own transaction handling is off).

    A connection with execution option ``sqlite_immediate=True`` takes the write lock at
    BEGIN (BEGIN IMMEDIATE), so a claim cannot race another writer between read and update.
    """
    immediate = conn.get_execution_options().get("sqlite_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def mask_url(url: str) -> str:
    """The URL with any password replaced, for logs and messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def make_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for `url`; a clear HarnessError if unreachable.

    With `create` (every command but `harness db`): an empty database gets the schema at the
    newest revision; one at an older revision is refused with a message naming `harness db
    upgrade` (harness.migrations.ensure_schema). `create=False` connects lazily and checks
    nothing.
    """
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        if url.startswith("sqlite"):
            # isolation_level=None lets the queue issue BEGIN IMMEDIATE itself.
            engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": None})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        elif url.startswith("postgres"):
            # Session time zone UTC: CURRENT_TIMESTAMP defaults (created_at, started_at) then
            # store UTC in the zone-less columns, like db_now() and like SQLite.
            engine = create_engine(
                url,
                pool_pre_ping=True,
                connect_args={"options": "-c timezone=UTC", "connect_timeout": 10},
            )
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise HarnessError(
            f"invalid database URL {mask_url(url)} ({_masked(exc, url)}); use sqlite:///PATH or "
            "postgresql+psycopg://USER:PASS@HOST/DB"
        ) from None
    except ImportError as exc:
        raise HarnessError(
            f"no database driver for {mask_url(url)} ({exc.name or exc}); for PostgreSQL "
            "pip install 'psycopg[binary]' (the project's `postgres` extra)"
        ) from None
    if create:
        # Lazy: harness.migrations imports this module (Base), and alembic itself is only
        # imported when the schema must be created or is not at head.
        from harness.migrations import ensure_schema

        with reachable(url):
            ensure_schema(engine, url)
    return engine


def _masked(text: object, url: str) -> str:
    """`text` with the URL's password blanked (driver messages may quote the URL)."""
    from sqlalchemy.engine import make_url

    out = str(text)
    try:
        password = make_url(url).password
    except Exception:
        return out
    return out.replace(str(password), "***") if password else out


@contextmanager
def reachable(url: str) -> Iterator[None]:
    """Turn a connection failure inside the block into one HarnessError line (password masked)."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        first = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
        raise HarnessError(
            f"cannot reach database {mask_url(url)}: {_masked(first, url)}; check --db / HARNESS_DB"
        ) from None


# Any fixed 64-bit number: the advisory lock that serialises schema changes on PostgreSQL.
_SCHEMA_LOCK = 0x6772616461747472


@contextmanager
def schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that no other process's schema change can interleave with.

    Workers starting together on a fresh database would otherwise all see no tables and all
    create them (one fails). PostgreSQL: DDL is transactional, so a transaction-scoped
    advisory lock makes check-and-create atomic. SQLite: BEGIN IMMEDIATE takes the write lock
    at once (busy_timeout makes the others wait for it), and its DDL is transactional too.
    """
    with engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
        yield conn


def make_session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
