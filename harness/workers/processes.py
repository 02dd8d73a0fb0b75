"""Several worker loops at once: one child `harness worker` process per slot or GPU.

Split from harness/workers/loop.py (the loop itself); harness.workers.loop re-exports both functions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any


def run_slot_processes(child_argv: list[str], slots: int, db_url: str) -> int:
    """Run `slots` copies of the worker loop as child processes; forward SIGTERM/SIGINT."""
    return run_worker_processes(
        [[*child_argv, "--slot-index", str(i)] for i in range(slots)], db_url
    )


def run_worker_processes(child_argvs: list[list[str]], db_url: str) -> int:
    """One child `harness` process per argv (e.g. one per GPU and slot); forward SIGTERM/SIGINT
    to them and return the exit code furthest from 0."""
    # The URL travels in the environment, not the command line, where `ps` would show a
    # database password to every user of the host.
    env = {**os.environ, "HARNESS_DB": db_url}
    # Each child in its own session: a Ctrl-C on the terminal reaches only this parent, which
    # forwards it once (twice would mean "stop now" to the children).
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "harness.cli", *argv], start_new_session=True, env=env
        )
        for argv in child_argvs
    ]

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [child.wait() for child in children]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max(codes, key=abs) if codes else 0
