"""Optuna plumbing of `harness tune`: the study storage on the harness database and the
per-trial seeded TPE sampler (docs/TUNING.md)."""

from __future__ import annotations

import random
import time
import warnings
from typing import Any

from harness.errors import HarnessError

TPE_STARTUP_TRIALS = 10  # Optuna's TPE default: random proposals first, then TPE
SCHEMA_RACE_RETRIES = 3


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

    from harness.db import mask_url

    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # Several tuners on one SQLite file: wait for the write lock instead of failing.
        engine_kwargs["connect_args"] = {"timeout": 30}
    extra: dict[str, Any] = {"heartbeat_interval": 30, "grace_period": 120} if heartbeat else {}
    try:
        for attempt in range(SCHEMA_RACE_RETRIES + 1):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **extra)
            except Exception as exc:
                # Optuna creates its tables without a lock: two tuners starting on a fresh
                # database race, and the loser sees "already exists". The tables are there
                # now, so opening again succeeds.
                if "already exists" not in str(exc) or attempt == SCHEMA_RACE_RETRIES:
                    raise
                time.sleep(random.uniform(0.1, 0.5))
        raise AssertionError("unreachable")
    except Exception as exc:  # SQLAlchemy/driver errors: one line naming the database
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessError(
            f"cannot open the Optuna study storage in {mask_url(url)}: "
            f"{first.replace(str(_password(url)), '***') if _password(url) else first}; "
            "check --db / HARNESS_DB"
        ) from None


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

    from harness.runtime import derived_seed

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
