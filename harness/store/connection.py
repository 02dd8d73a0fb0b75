"""Connections to the results database: URLs, engine settings, reachability, the schema lock.

harness.store.engine adds the schema check on top (`make_engine`); harness.store.migrations
takes the schema lock from here, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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


def connect(url: str, *, must_exist: bool = False) -> Engine:
    """An engine for `url` with the queue's SQLite/PostgreSQL settings; connects lazily.

    A malformed URL or a missing driver is one HarnessError line (password masked); so is an
    in-memory SQLite URL, a file that is not an SQLite database, and, with `must_exist`, an
    SQLite file that does not exist (a command that only reads must not create one).
    """
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        if url.startswith("sqlite"):
            check_sqlite_file(url, must_exist=must_exist)
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
    except ValueError as exc:  # SQLAlchemy parses the port with int()
        raise HarnessError(
            f"invalid database URL ({masked(exc, url)}): the port must be a number, e.g. "
            "postgresql+psycopg://USER:PASS@HOST:5432/DB"
        ) from None
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


def check_sqlite_file(url: str, *, must_exist: bool = False) -> None:
    """Refuse an SQLite URL the queue cannot keep jobs in, before anything is created."""
    import sqlite3

    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise HarnessError(
            f"{url} is an in-memory database: every queued job would vanish when the command "
            "exits; give a file, e.g. --db sqlite:///results.db"
        )
    path = Path(database)
    if not path.exists():
        if must_exist:
            raise HarnessError(
                f"no database at {path}: check the path (--db / HARNESS_DB), or queue jobs "
                "first with harness enqueue"
            )
        return
    if path.is_dir():
        raise HarnessError(f"--db {path} is a directory; give a database file inside it")
    # Probe through SQLite, never open()/close(): closing any descriptor of the file drops
    # every POSIX lock this process holds on it, so an open connection elsewhere in the process
    # would stop counting as a reader; the last other process to close then deletes the -shm
    # and this process's connections read a stale WAL index for good. SQLite's own VFS defers
    # such closes while another connection holds locks.
    probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        probe.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        if "not a database" not in str(exc):
            raise HarnessError(f"cannot open the database {path}: {exc}") from None
        raise HarnessError(
            f"{path} is not an SQLite database (it does not start with 'SQLite format 3'); "
            "give the path of a results database, or a new file name"
        ) from None
    finally:
        probe.close()


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
