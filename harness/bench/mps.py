"""`harness bench --mps`: the packing measurement under a private CUDA MPS daemon.

Without MPS, processes packed on one GPU time-slice it (one context at a time); under the
Multi-Process Service their kernels run concurrently. The bench starts its own control daemon
with a fresh pipe and log directory (so it neither needs root nor meets another user's daemon),
gives the packed jobs those CUDA_MPS_* variables, and stops the daemon afterwards whatever
happened. A CUDA process that cannot reach a daemon silently runs without MPS, so whether MPS
served the jobs is read back from the daemon (`get_server_list`) before it is stopped.

Not testable without a GPU and the NVIDIA tools: the CPU tests cover the "not available" paths
and the start/stop bookkeeping with a stand-in executable (tests/integration/test_bench.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CONTROL = "nvidia-cuda-mps-control"


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ""


def _control(env: dict[str, str], command: str, folder: Path) -> tuple[int | None, str]:
    """Run the control program (`-d`: start the daemon; else `command` on its stdin); return
    (exit code or None when it could not run, its output)."""
    arguments = ["-d"] if command == "-d" else []
    # Output to a file, not a pipe: the daemon it forks may keep a pipe open, and reading
    # the pipe to its end would then wait for the daemon to exit.
    output = folder / f"control-{len(list(folder.glob('control-*')))}.out"
    try:
        with output.open("w") as handle:
            done = subprocess.run(
                [CONTROL, *arguments],
                # The daemon gets no stdin; a command goes to the control program's stdin.
                **({"stdin": subprocess.DEVNULL} if command == "-d" else {"input": command + "\n"}),
                env={**os.environ, **env},
                stdout=handle,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=60,
            )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{CONTROL}: {exc}"
    return done.returncode, output.read_text(errors="replace")


@contextmanager
def mps_daemon(device: str, requested: bool) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    """Yield (environment for the packed jobs, record for the JSON's packing.mps).

    The record says `used` (MPS served the jobs) or why not in `reason`: not requested, the
    device is the CPU, the control program is not on PATH, or the daemon's own error line.
    """
    record: dict[str, Any] = {"requested": requested, "used": False, "reason": None}
    if not requested:
        record["reason"] = "not requested (--mps)"
        yield {}, record
        return
    if not device.startswith("cuda"):
        record["reason"] = "device is cpu"
        yield {}, record
        return
    if shutil.which(CONTROL) is None:
        record["reason"] = f"{CONTROL} not on PATH"
        yield {}, record
        return
    folder = Path(tempfile.mkdtemp(prefix="harness-mps-"))
    env = {
        "CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"),
        "CUDA_MPS_LOG_DIRECTORY": str(folder / "log"),
    }
    for path in env.values():
        Path(path).mkdir()
    try:
        code, output = _control(env, "-d", folder)
        if code != 0:
            record["reason"] = _last_line(output, _log(folder)) or (
                f"{CONTROL} -d exited with code {code}"
            )
            yield {}, record
            return
        try:
            yield env, record
            code, output = _control(env, "get_server_list", folder)
            record["servers"] = output.split() if code == 0 else []
            record["used"] = bool(record["servers"])
            if not record["used"]:
                record["reason"] = (
                    "the daemon started but no MPS server ran (the jobs ran without MPS): "
                    + (_last_line(output if code else "", _log(folder)) or "nothing in its log")
                )
        finally:
            code, output = _control(env, "quit", folder)
            if code != 0:
                record["stop_error"] = _last_line(output) or f"quit exited with code {code}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _log(folder: Path) -> str:
    path = folder / "log" / "control.log"
    return path.read_text(errors="replace") if path.exists() else ""
