"""Workers as submitit jobs: one task per GPU (Slurm) or per CPU worker (`--local`).

Each task runs the ordinary worker command, `harness worker --device D --slots K
--until-empty`, as a child process, so there is one worker loop in the harness (harness/workers/loop.py)
and the launch only adds scheduling around it.

Signals (docs/QUEUE.md, "Launching workers with Slurm"):
- SIGUSR2 is submitit's warning that the time limit (or a preemption, on clusters configured so)
  is near. Every task answers it by sending SIGTERM to its worker, which releases the job in
  flight at the next batch (attempt given back, checkpoint kept). Rank 0's submitit handler then
  calls `checkpoint()`, which waits for that release and returns a resubmission of the same task,
  and requeues the Slurm job. The workers start with SIGUSR2 ignored: Slurm signals every process
  of the job step, and SIGUSR2's default action would kill a worker without releasing its job.
- SIGTERM (Slurm preemption, `scancel`) and SIGINT are forwarded to the worker, which releases its
  job the same way; the task then returns normally (Slurm requeues preempted jobs itself).

The database URL is never pickled into the submission (those files sit on a shared file system
and would expose the password): the task reads HARNESS_DB from its environment, which sbatch
exports from the submitting shell and the local executor inherits; it carries only the masked URL
to check that it got the database it was launched for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from harness.store.connection import mask_url


@dataclass(frozen=True)
class TaskConfig:
    """Everything a task needs, all safe to write to a shared file system."""

    device_kind: str  # "cpu" or "cuda": the device index comes from the task's local rank
    slots: int
    checkpoints: str  # absolute; on a shared file system a requeued job resumes anywhere
    data_root: str
    masked_url: str  # mask_url(url): the password never travels in the submission
    release_wait_s: float  # how long checkpoint() waits for the worker to release its job
    fuse_seeds: int = 1  # worker --fuse-seeds: seeds of one cell trained as one model


def task_device(kind: str, local_rank: int, visible: str | None) -> str:
    """This task's torch device: cpu, or cuda:<local rank> among the node's visible GPUs.

    Some clusters bind one GPU per task (CUDA_VISIBLE_DEVICES lists one); then it is cuda:0."""
    if kind == "cpu":
        return "cpu"
    listed = [part for part in (visible or "").split(",") if part.strip()]
    return "cuda:0" if len(listed) == 1 else f"cuda:{local_rank}"


def worker_argv(config: TaskConfig, device: str) -> list[str]:
    """The `harness` command line one task runs: the same as a hand-started worker's."""
    return [
        "worker",
        "--device",
        device,
        "--slots",
        str(config.slots),
        "--fuse-seeds",
        str(config.fuse_seeds),
        "--until-empty",
        "--checkpoints",
        config.checkpoints,
        "--data",
        config.data_root,
        "--no-progress",
    ]


@contextmanager
def _usr2_ignored_for_children() -> Iterator[None]:
    """Processes started inside inherit SIGUSR2 as ignored (SIG_IGN survives exec).

    The signal is blocked meanwhile, so one aimed at this process is delivered, not lost, once
    its own handler is back."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR2, previous)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})


class LaunchTask(Checkpointable):
    """The submitit callable: run one worker group on this task's device until the queue is empty.

    Returns a small summary dict; raises when the worker failed (a non-zero exit not caused by a
    stop request), so submitit records the task as failed."""

    def __init__(self, config: TaskConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._returncode: int | None = None
        self._stop_reason: str | None = None

    # Only the configuration is pickled: never a process handle or runtime state.
    def __getstate__(self) -> dict[str, Any]:
        return {"config": asdict(self.config)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(TaskConfig(**state["config"]))  # type: ignore[misc]

    def __call__(self) -> dict[str, Any]:
        from submitit import JobEnvironment

        env = JobEnvironment()
        url = os.environ.get("HARNESS_DB")
        if not url:
            raise RuntimeError(
                "HARNESS_DB is not set in this task's environment: submit from a shell where "
                "it is set and let sbatch export the environment (no --export=NONE / "
                "SBATCH_EXPORT=NONE)"
            )
        if mask_url(url) != self.config.masked_url:
            raise RuntimeError(
                f"HARNESS_DB here is {mask_url(url)}, but this task was launched for "
                f"{self.config.masked_url}; launch again from the right environment"
            )
        device = task_device(
            self.config.device_kind, env.local_rank, os.environ.get("CUDA_VISIBLE_DEVICES")
        )
        child_env = dict(os.environ)
        if device == "cpu" and "OMP_NUM_THREADS" not in child_env:
            # The node's tasks share its cores: split them instead of oversubscribing.
            per_node = max(1, env.num_tasks // max(1, env.num_nodes)) * self.config.slots
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            child_env["OMP_NUM_THREADS"] = str(max(1, cores // per_node))
        argv = [sys.executable, "-m", "harness.cli", *worker_argv(self.config, device)]
        print(
            f"launch: task {env.global_rank} (local rank {env.local_rank}) on {env.hostname}, "
            f"pid {os.getpid()}: harness {' '.join(argv[3:])} (database {mask_url(url)})",
            flush=True,
        )
        previous = self._install_handlers()
        try:
            if self._stop_reason is None:  # not already told to stop
                with _usr2_ignored_for_children():
                    # Its own session: a Ctrl-C on a terminal reaches it once, through us.
                    self._proc = subprocess.Popen(argv, env=child_env, start_new_session=True)
                if self._stop_reason is not None:  # the signal came while it was starting
                    self._signal_worker(signal.SIGTERM)
                while self._poll() is None:
                    time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        code = self._returncode
        print(f"launch: worker exited with code {code} ({self._stop_reason or 'done'})", flush=True)
        if self._stop_reason is None and code != 0:
            raise RuntimeError(f"the worker on {device} exited with code {code}; see the log above")
        return {
            "rank": env.global_rank,
            "host": env.hostname,
            "device": device,
            "exit_code": code,
            "stopped_by": self._stop_reason,
        }

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Called by submitit on rank 0 at SIGUSR2: release the job in flight, then resubmit.

        The worker's released job goes back to the queue with its checkpoint; the resubmitted
        task (the same configuration, no state) claims from the queue again after the requeue."""
        self.request_stop("SIGUSR2")
        code = self.wait_worker(self.config.release_wait_s)
        if self._proc is not None:
            state = "still running" if code is None else f"exited with code {code}"
            print(f"launch: worker {state} ({self._stop_reason}); resubmitting", flush=True)
        return DelayedSubmission(LaunchTask(self.config), *args, **kwargs)

    # -- the worker process -----------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Ask the worker to release its job and stop (once: a second SIGTERM means 'now')."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._signal_worker(signal.SIGTERM)

    def wait_worker(self, timeout_s: float) -> int | None:
        """The worker's exit code, waiting up to timeout_s; None if it is still running."""
        deadline = time.monotonic() + timeout_s
        while self._proc is not None and self._poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return self._returncode

    def _signal_worker(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self._proc.pid, sig)

    def _poll(self) -> int | None:
        """Reap the worker without Popen's lock: this also runs inside signal handlers, which
        may interrupt the main loop anywhere, including inside Popen.poll()."""
        if self._returncode is not None or self._proc is None:
            return self._returncode
        try:
            pid, status = os.waitpid(self._proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by the interrupted frame: its code is lost
            pid, status = self._proc.pid, 255 << 8
        if pid == 0:
            return None
        self._returncode = os.waitstatus_to_exitcode(status)
        self._proc.returncode = self._returncode  # so Popen does not think it still runs
        return self._returncode

    def _install_handlers(self) -> dict[int, Any]:
        previous = {
            sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
        }
        chained = previous[signal.SIGUSR2]

        def on_stop(signum: int, _frame: Any) -> None:
            self.request_stop(signal.Signals(signum).name)

        def on_usr2(signum: int, frame: Any) -> None:
            self.request_stop("SIGUSR2")
            if callable(chained):  # submitit's: checkpoint() and requeue on rank 0
                chained(signum, frame)

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGUSR2, on_usr2)
        return previous


@contextmanager
def exported_db(url: str) -> Iterator[None]:
    """HARNESS_DB=url in this process's environment while submitting (sbatch exports it, the
    local executor's processes inherit it), restored afterwards."""
    before = os.environ.get("HARNESS_DB")
    os.environ["HARNESS_DB"] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HARNESS_DB", None)
        else:
            os.environ["HARNESS_DB"] = before
