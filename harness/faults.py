"""Surviving faults: fault-injection points for the fault suite, and riding out database outages.

Injection (tests only). ``HARNESS_FAULTS="claim:0.01,complete:@3"`` makes each named point
SIGKILL its own process with that probability per visit, or at its N-th visit (``@N``), so the
fault suite (tests/test_faults.py) kills real workers at exact places -- inside the claim
transaction before its commit, mid-epoch, between a checkpoint's write and its rename, inside an
epoch row's or the completion's transaction before the commit -- instead of only wherever a
random signal happens to land. Each kill is first
appended to ``HARNESS_FAULTS_LOG`` (when set) so the suite can count them. Unset, a point costs
one dictionary lookup.

Outages. `Backoff` turns database errors during an outage into waits of exponentially growing,
jittered length (capped), one log line per retry, and gives up with one clear line after
`patience` seconds without a successful call (docs/QUEUE.md, "Database outages").
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

from harness.db import _masked, mask_url
from harness.errors import HarnessError

log = logging.getLogger("harness.worker")

FAULT_POINTS = ("claim", "epoch", "checkpoint", "record", "complete")
ENV_FAULTS = "HARNESS_FAULTS"
ENV_FAULTS_LOG = "HARNESS_FAULTS_LOG"

# Connection refused or lost, server shutting down, SQLite busy past its timeout: all worth a
# retry. Errors in the statements themselves (IntegrityError, ProgrammingError) are not.
DB_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)

_plan: dict[str, float] | None = None
_rng = random.Random()  # its own generator: jobs may seed the global one
_visits: dict[str, int] = {}


def parse_faults(text: str) -> dict[str, float]:
    """``"claim:0.01,complete:@3"`` -> {"claim": 0.01, "complete": -3.0}: a probability per
    visit, or ``@N`` (stored as -N) for "at the N-th visit in this process"; one clear error for
    anything else."""
    plan: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition(":")
        try:
            number = -float(int(value[1:])) if value.startswith("@") else float(value)
        except ValueError:
            number = 2.0
        if value.startswith("@") and number > -1:
            number = 2.0  # @0 or @-N: no such visit
        if name not in FAULT_POINTS or not (number <= -1 or 0 <= number <= 1):
            raise HarnessError(
                f"{ENV_FAULTS}={text!r}: {part!r} is not POINT:PROBABILITY or POINT:@N; points "
                f"are {', '.join(FAULT_POINTS)} (e.g. claim:0.01,complete:@3)"
            )
        plan[name] = number
    return plan


def fault_plan() -> dict[str, float]:
    """This process's injection plan, read from the environment once."""
    global _plan
    if _plan is None:
        _plan = parse_faults(os.environ.get(ENV_FAULTS, ""))
    return _plan


def point(name: str) -> None:
    """A place where the fault suite may SIGKILL this process (no-op unless HARNESS_FAULTS)."""
    plan = _plan if _plan is not None else fault_plan()
    rule = plan.get(name) if plan else None
    if not rule:
        return
    if rule < 0:  # @N: count the visits
        _visits[name] = _visits.get(name, 0) + 1
        if _visits[name] != -rule:
            return
    elif _rng.random() >= rule:
        return
    path = os.environ.get(ENV_FAULTS_LOG)
    if path:
        # O_APPEND: many processes add whole lines to one file without interleaving.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{time.time():.6f} {os.getpid()} {name}\n".encode())
        finally:
            os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


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
        reason = _masked(first_line(exc), self.url)
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
