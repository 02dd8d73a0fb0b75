"""Schema migrations of the results database: Alembic, run from code (no alembic.ini).

Revisions are in versions/ (0001: the schema before migrations existed; 0002: the worker
quarantine columns; 0003: nullable imported results; 0004: queue control: priorities, job
events, the pause flag; 0005: jobs.departures; 0006: the audits table). The version table is `harness_alembic_version`, not Alembic's default
`alembic_version`: Optuna (`harness tune`) keeps its studies in the same database and its own
`alembic_version` there. Every look at the database is restricted to our tables
(`include_name`), so Optuna's tables are never touched or counted as drift.

`ensure_schema` (called by every `make_engine`) creates an empty database at HEAD and refuses
one at an older revision; only `harness db upgrade` (`upgrade`) changes an existing schema,
because workers of the older harness may still be writing to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from harness.errors import HarnessError
from harness.store.connection import mask_url, schema_lock
from harness.store.schema import Base

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection, Engine

VERSION_TABLE = "harness_alembic_version"
# The newest revision in versions/, written out so the check every command makes does not
# import Alembic (~0.3 s); tests/integration/test_migrations.py fails when it disagrees with versions/.
HEAD = "0006"
SCRIPT_LOCATION = Path(__file__).resolve().parent
# Columns by which a database without a version table shows which revision wrote it.
_LEGACY_0002_COLUMNS = {"quarantined", "stop_reason"}
# Tables that migrations added (0004); a database without a version table never has them.
_TABLES_SINCE_MIGRATIONS = {"job_events", "queue_flags", "audits"}


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Alembic filter: our tables only (never Optuna's or anyone else's in the same database)."""
    return type_ != "table" or name in Base.metadata.tables


@dataclass(frozen=True)
class SchemaState:
    """Which revision the database is at. revision None: none of our tables (empty)."""

    revision: str | None
    legacy: bool = False  # our tables but no version table: written before migrations existed

    def describe(self) -> str:
        if self.revision is None:
            return "none (no harness tables)"
        if self.legacy:
            return f"{self.revision} (no version table: written before schema migrations)"
        return self.revision


def alembic_config(conn: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("path_separator", "os")  # the only path is ours; no ini to parse
    config.attributes["connection"] = conn  # env.py runs on it, inside the caller's lock
    return config


def script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(SCRIPT_LOCATION))


def known_revisions() -> list[str]:
    """Every revision in versions/, oldest first."""
    return [script.revision for script in reversed(list(script_directory().walk_revisions()))]


def read_state(conn: Connection) -> SchemaState:
    """The database's revision, from the version table or, without one, from its tables."""
    tables = set(inspect(conn).get_table_names())
    if VERSION_TABLE in tables:
        versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        if versions:
            return SchemaState(",".join(sorted(versions)))
    ours = tables & set(Base.metadata.tables)
    if not ours:
        return SchemaState(None)
    # Without a version table, a database written before migrations has the tables of then.
    missing = sorted(set(Base.metadata.tables) - _TABLES_SINCE_MIGRATIONS - ours)
    if missing:
        raise HarnessError(
            f"the database has some of the harness tables but not {', '.join(missing)}: it is "
            "not one the harness wrote; use another --db or restore it from a backup"
        )
    columns = {column["name"] for column in inspect(conn).get_columns("workers")}
    # 637a869 added the worker columns to db.py one commit before migrations existed.
    return SchemaState("0002" if columns >= _LEGACY_0002_COLUMNS else "0001", legacy=True)


def _fast_revision(engine: Engine) -> str | None:
    """The version table's revision in one query; None when the table is missing."""
    with engine.connect() as conn:
        try:
            return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise  # the connection broke: the caller says "cannot reach"
            return None  # no such table (or empty): ensure_schema looks closer under the lock


def _stamp(conn: Connection, revision: str) -> None:
    from alembic import command

    command.stamp(alembic_config(conn), revision)


def ensure_schema(engine: Engine, url: str) -> None:
    """Create an empty database's schema at HEAD; refuse one at any other revision.

    Safe with many processes starting at once: the check and the creation happen under
    `schema_lock`, and the version row is written in the same transaction as the tables.
    """
    if _fast_revision(engine) == HEAD:
        return
    import alembic.command  # noqa: F401 -- now, not while holding the lock that others wait on

    with schema_lock(engine) as conn:
        state = read_state(conn)
        if state.revision is None:
            Base.metadata.create_all(conn)
            _stamp(conn, HEAD)
            return
        if state.revision == HEAD:
            if state.legacy:
                _stamp(conn, HEAD)  # the current schema written just before migrations
            return
    raise mismatch_error(state, url)


def mismatch_error(state: SchemaState, url: str) -> HarnessError:
    masked = mask_url(url)
    if state.revision in known_revisions():
        # A URL with a password is printed masked; "URL" then, so nobody pastes the asterisks.
        db = masked if masked == url else "URL"
        return HarnessError(
            f"database {masked} has schema revision {state.describe()}; this harness needs "
            f"{HEAD}: back it up, then run `harness db upgrade --db {db}`"
        )
    return HarnessError(
        f"database {masked} has schema revision {state.revision}, unknown to this harness "
        f"(which knows up to {HEAD}): it was written by a newer harness; upgrade the harness"
    )


def current(engine: Engine) -> SchemaState:
    with engine.connect() as conn:
        return read_state(conn)


def upgrade(engine: Engine, url: str, target: str = "head") -> tuple[SchemaState, SchemaState]:
    """Bring the database to `target` in one locked transaction; (before, after).

    A database from before migrations is stamped with the revision its tables show first.
    A failure rolls everything back (DDL is transactional on SQLite and PostgreSQL).
    """
    from alembic import command
    from alembic.util import CommandError

    revisions = known_revisions()
    if target != "head" and target not in revisions:
        raise HarnessError(
            f"unknown schema revision {target!r}; this harness knows {', '.join(revisions)} "
            "(or head)"
        )
    goal = HEAD if target == "head" else target
    with schema_lock(engine) as conn:
        before = read_state(conn)
        if before.revision is not None:
            if before.revision not in revisions:
                raise mismatch_error(before, url)
            if revisions.index(before.revision) > revisions.index(goal):
                raise HarnessError(
                    f"database {mask_url(url)} is at schema revision {before.revision}, newer "
                    f"than {goal}; the harness does not downgrade (restore a backup instead)"
                )
        try:
            if before.legacy:
                _stamp(conn, before.revision)  # what its tables show; then on from there
            command.upgrade(alembic_config(conn), goal)
        except (CommandError, DBAPIError) as exc:
            first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise HarnessError(
                f"upgrading {mask_url(url)} from {before.describe()} to {goal} failed and was "
                f"rolled back: {first}"
            ) from None
        return before, read_state(conn)
