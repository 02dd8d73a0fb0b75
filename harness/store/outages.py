"""Riding out database outages: `Backoff` turns database errors during an outage into waits of
exponentially growing, jittered length (capped), one log line per retry, and gives up with one
clear line after `patience` seconds without a successful call (docs/QUEUE.md, "Database
outages").
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

from harness.errors import HarnessError
from harness.store.connection import mask_url, masked

log = logging.getLogger("harness.workers.loop")

# Connection refused or lost, server shutting down, SQLite busy past its timeout: all worth a
# retry. Errors in the statements themselves (IntegrityError, ProgrammingError) are not.
DB_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
_rng = random.Random()  # its own generator: jobs may seed the global one


class DatabaseUnreachable(HarnessError):
    """The database stayed unreachable for the worker's whole patience."""


T = TypeVar("T")


class Backoff:
    """Waits between retries during a database outage; gives up after `patience` seconds.

    `failed()` after each failed call returns how long to wait (exponential, x0.5-1.5 jitter so
    that many workers do not all knock at the same instant, capped), or raises
    DatabaseUnreachable once the outage has lasted `patience` seconds; `succeeded()` ends it.
    """

    def __init__(
        self,
        url: str,
        patience: float,
        first_delay: float = 0.25,
        max_delay: float = 15.0,
    ) -> None:
        self.url, self.patience = url, patience
        self.first_delay, self.max_delay = first_delay, max_delay
        self.outage_started: float | None = None
        self.retries = 0

    def failed(self, what: str, exc: BaseException) -> float:
        now = time.monotonic()
        if self.outage_started is None:
            self.outage_started = now
        waited = now - self.outage_started
        reason = masked(first_line(exc), self.url)
        if waited >= self.patience:
            raise DatabaseUnreachable(
                f"database {mask_url(self.url)} unreachable for {waited:.0f} s (--db-patience "
                f"{self.patience:g}; last error: {reason})"
            )
        delay = min(self.first_delay * 2**self.retries, self.max_delay)
        delay = min(delay * _rng.uniform(0.5, 1.5), self.patience - waited)
        self.retries += 1
        log.warning(
            "%s: database unreachable (%s); retry %d in %.1f s (gives up %.0f s from now)",
            what,
            reason,
            self.retries,
            delay,
            self.patience - waited,
        )
        return max(delay, 0.0)

    def succeeded(self) -> None:
        if self.outage_started is not None:
            log.info(
                "database reachable again after %.1f s and %d retries",
                time.monotonic() - self.outage_started,
                self.retries,
            )
        self.outage_started, self.retries = None, 0

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """fn() retried through an outage (blocking); DatabaseUnreachable after the patience."""
        while True:
            try:
                result = fn()
            except DB_ERRORS as exc:
                time.sleep(self.failed(what, exc))
                continue
            self.succeeded()
            return result


def first_line(exc: BaseException) -> str:
    """The driver's own message, first line only (SQLAlchemy appends SQL and a help link)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:200]
