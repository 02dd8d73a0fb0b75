"""The database's clock: leases, heartbeats and events are stamped by it, never by a host's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.types import DateTime


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
