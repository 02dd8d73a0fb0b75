"""Fault-injection points for the fault suite (riding out outages is harness.store.outages).

Injection (tests only). ``HARNESS_FAULTS="claim:0.01,complete:@3"`` makes each named point
SIGKILL its own process with that probability per visit, or at its N-th visit (``@N``), so the
fault suite (tests/e2e/test_faults.py) kills real workers at exact places -- inside the claim
transaction before its commit, mid-epoch, between a checkpoint's write and its rename, inside an
epoch row's or the completion's transaction before the commit -- instead of only wherever a
random signal happens to land. Each kill is first
appended to ``HARNESS_FAULTS_LOG`` (when set) so the suite can count them. Unset, a point costs
one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time

from harness.errors import HarnessError

log = logging.getLogger("harness.workers.loop")

FAULT_POINTS = ("claim", "epoch", "checkpoint", "record", "complete")
ENV_FAULTS = "HARNESS_FAULTS"
ENV_FAULTS_LOG = "HARNESS_FAULTS_LOG"


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
