"""`harness db upgrade | current`: the results database's schema revision (Alembic)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands._common import add_db_option, db_url


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "db",
        help="schema revision of the results database: show it, upgrade it",
        description="Every other command refuses a database whose schema is older than this "
        "harness's (workers of the older version may still be using it); back it up, stop "
        "those workers, then `harness db upgrade`.",
    )
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    upgrade = actions.add_parser(
        "upgrade",
        help="upgrade the schema (default: to the newest revision)",
        description="Upgrade the schema in one transaction (rolled back on failure). A database "
        "written before migrations existed is recognised by its tables and stamped first.",
    )
    add_db_option(upgrade)
    upgrade.add_argument(
        "--revision", default="head", help="target revision (default head: the newest)"
    )
    upgrade.set_defaults(func=run_upgrade)

    current = actions.add_parser(
        "current",
        help="the schema revision; exit 0 when up to date, 1 when it needs an upgrade",
    )
    add_db_option(current)
    current.set_defaults(func=run_current)


def _engine(url: str):  # noqa: ANN202 -- Engine; imported lazily to keep `harness --help` fast
    from harness.store.connection import reachable
    from harness.store.engine import make_engine

    engine = make_engine(url, create=False)  # no revision check: that is what we are fixing
    with reachable(url):
        engine.connect().close()  # unreachable -> one line here, not mid-migration
    return engine


def run_upgrade(args: argparse.Namespace) -> int:
    from harness.store.connection import mask_url
    from harness.store.migrations import upgrade

    url = db_url(args)
    before, after = upgrade(_engine(url), url, args.revision)
    if before.revision == after.revision and not before.legacy:
        print(f"{mask_url(url)}: schema revision {after.describe()}, nothing to do")
    else:
        print(f"{mask_url(url)}: schema revision {before.describe()} -> {after.describe()}")
    return 0


def run_current(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from harness.errors import HarnessError
    from harness.store.connection import mask_url
    from harness.store.migrations import HEAD, current, known_revisions, mismatch_error

    url = db_url(args)
    # Connecting to SQLite creates the file; a look at a mistyped path should not.
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and not Path(path).exists():
            raise HarnessError(f"no database file {path}; check --db / HARNESS_DB")
    state = current(_engine(url))
    if state.revision is not None and state.revision not in known_revisions():
        raise mismatch_error(state, url)
    verdict = "up to date" if state.revision == HEAD and not state.legacy else "needs upgrade"
    print(f"{mask_url(url)}: schema revision {state.describe()}, head {HEAD}: {verdict}")
    return 0 if verdict == "up to date" else 1
