"""Connections to the results database: URLs, engine settings, reachability, the schema lock.

harness.store.engine adds the schema check on top (`make_engine`); harness.store.migrations
takes the schema lock from here, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from harness.errors import HarnessError


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


def connect(url: str) -> Engine:
    """An engine for `url` with the queue's SQLite/PostgreSQL settings; connects lazily.

    A malformed URL or a missing driver is one HarnessError line (password masked).
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
            f"invalid database URL {mask_url(url)} ({masked(exc, url)}); use sqlite:///PATH or "
            "postgresql+psycopg://USER:PASS@HOST/DB"
        ) from None
    except ImportError as exc:
        raise HarnessError(
            f"no database driver for {mask_url(url)} ({exc.name or exc}); for PostgreSQL "
            "pip install 'psycopg[binary]' (the project's `postgres` extra)"
        ) from None
    return engine


def masked(text: object, url: str) -> str:
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
            f"cannot reach database {mask_url(url)}: {masked(first, url)}; check --db / HARNESS_DB"
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
