"""Optuna plumbing of `harness tune`: the study storage on the harness database and the
per-trial seeded TPE sampler (docs/TUNING.md)."""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.pool import NullPool

from harness.errors import HarnessError

TPE_STARTUP_TRIALS = 10  # Optuna's TPE default: random proposals first, then TPE
OPTUNA_SCHEMA_LOCK = 0x6F7074756E61  # any fixed 64-bit number: "optuna"


# --------------------------------------------------------------------------- storage


def storage_url(db_url_or_engine: Any) -> str:
    """The database URL as a string, password included (RDBStorage needs to connect)."""
    from sqlalchemy.engine import Engine

    if isinstance(db_url_or_engine, Engine):
        return db_url_or_engine.url.render_as_string(hide_password=False)
    return str(db_url_or_engine)


def open_storage(url: str, *, heartbeat: bool = False) -> Any:
    """optuna's RDBStorage on the harness database (it creates Optuna's tables on first use).

    With `heartbeat`, a running trial beats every 30 s and one silent for 120 s (its process
    died) is marked FAIL by the next tuner, so it stops holding a place in the budget."""
    import optuna
    from optuna.exceptions import ExperimentalWarning

    from harness.store.connection import mask_url

    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # Several tuners on one SQLite file: wait for the write lock instead of failing.
        engine_kwargs["connect_args"] = {"timeout": 30}
    extra: dict[str, Any] = {"heartbeat_interval": 30, "grace_period": 120} if heartbeat else {}
    try:
        # Optuna creates its tables and stamps its own alembic_version without a lock: tuners
        # starting together on a fresh database race ("already exists", or a duplicate version
        # row). One process at a time opens the storage; later ones find everything in place.
        with _optuna_schema_lock(url), warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **extra)
    except Exception as exc:  # SQLAlchemy/driver errors: one line naming the database
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessError(
            f"cannot open the Optuna study storage in {mask_url(url)}: "
            f"{first.replace(str(_password(url)), '***') if _password(url) else first}; "
            "check --db / HARNESS_DB"
        ) from None


@contextmanager
def _optuna_schema_lock(url: str) -> Iterator[None]:
    """Serialise Optuna's schema set-up across processes without blocking its own connections:
    an flock on a lock file beside the SQLite file (never on the database file itself: closing
    any descriptor of it would drop this process's SQLite locks), or a session-level advisory
    lock on a separate PostgreSQL connection."""
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            yield
            return
        # Named like SQLite's own -wal/-shm companions (and ignored by the same patterns).
        fd = os.open(f"{database}-optuna-lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock
        return
    if parsed.get_backend_name() != "postgresql":
        yield
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(select(func.pg_advisory_lock(OPTUNA_SCHEMA_LOCK)))
            try:
                yield
            finally:
                conn.execute(select(func.pg_advisory_unlock(OPTUNA_SCHEMA_LOCK)))
                conn.commit()
    finally:
        engine.dispose()


def _password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password
    except Exception:
        return None


# --------------------------------------------------------------------------- sampler


def seeded_sampler(seed: int) -> Any:
    """A TPE sampler whose randomness for trial k comes from (seed, k) alone.

    A plain TPESampler(seed=s) restarts its random stream in every process, so a top-up run
    (or a second parallel tuner) would propose the first run's parameters again. Re-seeding
    per trial number keeps a from-scratch run reproducible and never repeats a proposal."""
    import optuna

    from harness.training.runtime import derived_seed

    class PerTrialSeededTPE(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._inner = self._make(0)

        @staticmethod
        def _make(number: int) -> optuna.samplers.TPESampler:
            return optuna.samplers.TPESampler(
                seed=derived_seed(seed, number, "tune-sampler") % 2**32,
                n_startup_trials=TPE_STARTUP_TRIALS,
                constant_liar=True,  # parallel tuners: treat running trials as poor, spread out
            )

        def before_trial(self, study: Any, trial: Any) -> None:
            self._inner = self._make(trial.number)
            self._inner.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return self._inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
            return self._inner.sample_relative(study, trial, search_space)

        def sample_independent(
            self, study: Any, trial: Any, param_name: str, param_distribution: Any
        ) -> Any:
            return self._inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._inner.after_trial(study, trial, state, values)

    return PerTrialSeededTPE()
