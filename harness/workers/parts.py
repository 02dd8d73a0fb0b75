"""Pieces of the worker loop (harness/workers/loop.py): the heartbeat thread, the runner, progress."""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from harness.errors import HarnessError
from harness.queue import jobs as queue
from harness.queue.jobs import Lease
from harness.store.outages import first_line

log = logging.getLogger("harness.workers.loop")


class Heartbeat(threading.Thread):
    """Renews a lease every third of its length; sets `lost` when fenced out."""

    def __init__(self, engine: Engine, lease: Lease, lease_seconds: float) -> None:
        super().__init__(name=f"heartbeat-{lease.job_id}", daemon=True)
        self.engine, self.lease, self.lease_seconds = engine, lease, lease_seconds
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        interval = max(0.1, self.lease_seconds / 3)
        while not self._done.wait(interval):
            try:
                held = queue.heartbeat(self.engine, self.lease, self.lease_seconds)
            except Exception as exc:  # a busy or briefly unreachable DB: try again next beat
                log.warning(
                    "heartbeat for job %d failed (%s); next in %.1f s",
                    self.lease.job_id,
                    first_line(exc),
                    interval,
                )
                continue
            if not held:
                self.lost.set()
                return

    def stop(self) -> None:
        self._done.set()
        self.join()


def default_runner() -> tuple[Callable[..., Any], type[BaseException]]:
    """harness.training.loop's run_job and its JobInterrupted (imported late: torch is heavy)."""
    from harness.training.loop import JobInterrupted, run_job

    return run_job, JobInterrupted


def load_runner(spec: str | None) -> tuple[Callable[..., Any], type[BaseException]]:
    """`MODULE:FUNC` -> (FUNC, MODULE.JobInterrupted); None -> harness.training.loop's."""
    if spec is None:
        return default_runner()
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        run_job = getattr(module, func_name)
        interrupted = module.JobInterrupted
    except (ImportError, AttributeError, ValueError) as exc:
        raise HarnessError(
            f"--runner {spec}: {exc}; give MODULE:FUNC of an importable module that also "
            "defines JobInterrupted"
        ) from None
    return run_job, interrupted


def last_line() -> str:
    """The exception line of the traceback being handled."""
    lines = traceback.format_exc().strip().splitlines()
    return lines[-1] if lines else "?"


def progress_bar(label: str, total: int, position: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=label,
        unit="epoch",
        position=position,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )
