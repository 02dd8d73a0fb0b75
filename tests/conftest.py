"""Shared pytest settings: no test reads the user's database or data root by accident."""

from __future__ import annotations

import pytest

_KINDS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:  # noqa: ARG001
    """Each test is marked by its folder, so `-m unit` selects tests/unit and nothing else."""
    for item in items:
        kind = next((part for part in item.path.parts if part in _KINDS), None)
        if kind is None:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit, tests/integration or tests/e2e")
        item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
):
    monkeypatch.delenv("HARNESS_DB", raising=False)
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    # Downloads retry with backoff; tests of unreachable servers need not wait seconds.
    monkeypatch.setenv("HARNESS_DOWNLOAD_BACKOFF", "0.01")
    yield


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A fresh, real SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the whole session (tests/helpers/pg_server.py), stopped at the end.

    Without PostgreSQL's binaries or psycopg the tests that use it are skipped, saying what to
    install -- unless HARNESS_REQUIRE_POSTGRES=1 (CI), where they fail instead.
    """
    import os

    from pg_server import INSTALL_HINT, PostgresServer, find_pg_bindir

    required = os.environ.get("HARNESS_REQUIRE_POSTGRES") == "1"
    missing = None
    bindir = find_pg_bindir()
    if bindir is None:
        missing = INSTALL_HINT
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            missing = "psycopg not installed; pip install 'psycopg[binary]' (the `test` extra)"
    if missing:
        if required:
            pytest.fail(f"HARNESS_REQUIRE_POSTGRES=1 but {missing}")
        pytest.skip(missing)
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(pg_server, request) -> str:
    """A fresh, empty database on the session's PostgreSQL server for one test."""
    import re

    _DATABASE_COUNT[0] += 1
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    return pg_server.create_database(f"t{_DATABASE_COUNT[0]}_{name}")


_DATABASE_COUNT = [0]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str:
    """Each test that takes it runs twice: on a real SQLite file and on a real PostgreSQL
    server (skipped, or failed with HARNESS_REQUIRE_POSTGRES=1, without the binaries)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


# The fault suite's figures (tests/e2e/test_faults.py): one line per run, printed after the tests so
# CI's log shows them (e.g. "faults[sqlite]: 1000 jobs, 16 workers, 0 duplicates, 0 lost, ...").
_FAULT_FIGURES = pytest.StashKey[list]()


@pytest.fixture
def fault_figures(pytestconfig: pytest.Config) -> list[str]:
    """A list the fault tests append their figure lines to."""
    return pytestconfig.stash.setdefault(_FAULT_FIGURES, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    figures = config.stash.get(_FAULT_FIGURES, [])
    if figures:
        terminalreporter.section("fault-injection figures")
        for line in figures:
            terminalreporter.write_line(line)
