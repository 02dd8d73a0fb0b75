"""Shared pytest settings: no test reads the user's database or data root by accident."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    monkeypatch.delenv("HARNESS_DB", raising=False)
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    yield


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A fresh, real SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'runs.db'}"
