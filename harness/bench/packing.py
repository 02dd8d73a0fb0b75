"""`harness bench` packing: k concurrent fast-path jobs (processes) sharing one device.

Each job is built and warmed up, then all are released together by a barrier, so only their
overlap is timed; the total steps/s says how much of the device one job leaves idle. A job
that dies (a CUDA error, the OOM killer, an MPS client that cannot connect) fails the
measurement within seconds, with its exit code, instead of leaving the others waiting.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from typing import Any

import torch

from harness.bench.pipeline import BenchSettings, fast_path, synchronize, warmup_steps
from harness.errors import HarnessError

POLL_S = 1.0  # how often the parent checks for dead jobs while it waits for their reports


def _packing_job(
    settings: BenchSettings, threads: int, barrier: Any, results: Any, env: dict[str, str]
) -> None:
    # Here, before CUDA starts (it reads CUDA_MPS_* once): a fork server started earlier lacks it.
    os.environ.update(env)
    torch.set_num_threads(threads)
    device = torch.device(settings.device)
    _, _, train_steps = fast_path(settings, seed=os.getpid())
    train_steps(warmup_steps(settings))
    synchronize(device)
    barrier.wait()  # all jobs are built and warm: time only the overlap
    start = time.perf_counter()  # CLOCK_MONOTONIC on Linux: comparable across processes
    train_steps(settings.steps)
    synchronize(device)
    results.put((start, time.perf_counter()))


def _collect(results: Any, procs: list[Any], timeout_s: float) -> list[tuple[float, float]]:
    """One (start, end) per job, in arrival order; fails as soon as a job died unreported."""
    spans: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout_s
    while len(spans) < len(procs):
        try:
            spans.append(results.get(timeout=POLL_S))
            continue
        except queue.Empty:
            pass
        # A job that reported has put its span before exiting, so a dead job's exit code is
        # only a failure while reports are still missing.
        dead = [proc.exitcode for proc in procs if proc.exitcode not in (None, 0)]
        if dead:
            raise HarnessError(
                f"a packed bench job of {len(procs)} exited with code {dead[0]} before "
                "reporting (its error is printed above); rerun with fewer --slots, or without --mps"
            )
        if time.monotonic() > deadline:
            raise HarnessError(
                f"the packed bench jobs ({len(procs)}) did not report within {timeout_s:.0f} s; "
                "rerun with fewer --slots or --steps"
            )
    return spans


def measure_packing(
    settings: BenchSettings,
    job_counts: list[int],
    timeout_s: float = 900,
    env: dict[str, str] | None = None,
) -> list[dict]:
    """Total and per-job steps/s with k concurrent jobs (processes) sharing the device; `env`:
    extra environment variables of every job (harness.bench.mps)."""
    on_cuda = torch.device(settings.device).type == "cuda"
    # Not fork: a child forked after the parent ran torch's OpenMP pool can deadlock in it, and
    # CUDA cannot be re-initialised in a forked child. A fork server that has imported torch
    # (and this module) once starts clean children quickly.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "harness.bench.packing"])
    runs = []
    for jobs in job_counts:
        threads = settings.threads or max(1, (os.cpu_count() or 1) // jobs)
        threads = 1 if on_cuda else threads
        barrier, results = context.Barrier(jobs), context.Queue()
        procs = [
            context.Process(
                target=_packing_job, args=(settings, threads, barrier, results, env or {})
            )
            for _ in range(jobs)
        ]
        for proc in procs:
            proc.start()
        try:
            spans = _collect(results, procs, timeout_s)
        except BaseException:
            for proc in procs:  # the others may wait at the barrier for a dead job forever
                if proc.is_alive():
                    proc.kill()
            raise
        finally:
            for proc in procs:
                proc.join(timeout=60)
        wall = max(end for _, end in spans) - min(start for start, _ in spans)
        per_job = [settings.steps / (end - start) for start, end in spans]
        runs.append(
            {
                "jobs": jobs,
                "wall_s": wall,
                "total_steps_per_s": jobs * settings.steps / wall,
                "per_job_steps_per_s": per_job,
            }
        )
    return runs
