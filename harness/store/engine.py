"""`make_engine`: a connection to the results database whose schema is known to be current."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from harness.store.connection import connect, reachable
from harness.store.migrations import ensure_schema


def make_engine(url: str, *, create: bool = True, must_exist: bool = False) -> Engine:
    """An engine for `url`; a clear HarnessError if unreachable.

    With `create` (every command but `harness db`): an empty database gets the schema at the
    newest revision; one at an older revision is refused with a message naming `harness db
    upgrade` (harness.store.migrations.ensure_schema). `create=False` connects lazily and
    checks nothing. `must_exist`: a missing SQLite file is refused, not created (commands that
    only read or requeue: status, retry, report).
    """
    engine = connect(url, must_exist=must_exist)
    if create:
        with reachable(url):
            ensure_schema(engine, url)
    return engine
