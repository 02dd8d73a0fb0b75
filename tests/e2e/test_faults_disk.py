"""Checkpoint writes that cannot succeed: an unwritable directory, a full disk.

Real worker processes and real errors from the kernel: EACCES from a directory mode 0555 (as
root, which may write anywhere, the worker drops the capabilities that allow it), and EFBIG
from RLIMIT_FSIZE -- a file-size limit on the worker process, the one "disk full" an
unprivileged test can cause for real (no tmpfs to mount, and /dev/full cannot hold a rename).
Each time the job fails with one clear line naming the path and the fix, nothing half-written
is left (no checkpoint, no temporary file, no result or epoch row), and the worker goes on.
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fault_suite import worker_argv, worker_env
from queue_helpers import tiny_specs
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.experiment.config import JobSpec, resolve_config
from harness.queue import jobs as queue
from harness.store.engine import make_engine
from harness.store.schema import EpochRow, Job, Result

pytestmark = pytest.mark.slow
PR_CAPBSET_DROP = 24  # prctl option, linux/prctl.h
LIMIT = 8 << 20  # bytes: room for the database and logs, not for a ResNet-18 checkpoint


def _jobs(engine) -> dict[int, Job]:
    with Session(engine) as session:
        return {job.seed: job for job in session.scalars(select(Job))}


def _rows(engine, table) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(table))


def _file_size_limit() -> None:
    """In the worker process: writes past LIMIT fail with EFBIG (SIGXFSZ ignored, not fatal)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _assert_clean_failure(job: Job, checkpoint: Path, why: str, fix: str) -> None:
    assert job.status == "failed" and job.error.startswith("Traceback")
    last = job.error.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"harness\.errors\.HarnessError: cannot write checkpoint {re.escape(str(checkpoint))}: "
        rf"{why} \(errno \d+\); {re.escape(fix)}.*; then `harness retry --failed`",
        last,
    ), last


def test_full_disk_fails_the_real_job_cleanly(sqlite_url, tmp_path):
    """The real run_job (digits, 1 epoch, 1 batch): its first checkpoint hits the limit."""
    engine = make_engine(sqlite_url)
    config = resolve_config("paper", "digits", "resnet18", {"max_epochs": 1,
                            "max_train_batches": 1, "batch_size": 16, "grad_batches": 1})  # fmt: skip
    spec = JobSpec("resnet18", "digits", 5, 42, "paper", config)
    queue.enqueue(engine, [spec], "t")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_DATA": str(tmp_path / "data")}
    checkpoints = tmp_path / "checkpoints"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "worker", "--db", sqlite_url, "--until-empty",
         "--no-progress", "--checkpoints", str(checkpoints)],  # fmt: skip
        env=env, capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job = _jobs(engine)[5]
    _assert_clean_failure(
        job, checkpoints / f"{spec.key()}.pt", "File too large", "the file exceeds this process"
    )
    assert list(checkpoints.iterdir()) == []  # no checkpoint, no temporary file
    assert (_rows(engine, Result), _rows(engine, EpochRow)) == (0, 0)
    assert "failed: harness.errors.HarnessError: cannot write checkpoint" in proc.stderr


def test_full_disk_fails_one_job_and_the_worker_goes_on(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    specs = tiny_specs(3, max_epochs=2)
    queue.enqueue(engine, specs, "t")
    env = worker_env(tmp_path, FAULT_RUNNER_BIG=f"1:{LIMIT + (1 << 20)}")  # seed 1's is too big
    proc = subprocess.run(
        worker_argv(sqlite_url, "--until-empty"), env=env, capture_output=True, text=True,
        timeout=120, preexec_fn=_file_size_limit,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    jobs = _jobs(engine)
    assert (jobs[0].status, jobs[2].status) == ("done", "done")  # before and after the failure
    checkpoints = tmp_path / "checkpoints"
    _assert_clean_failure(
        jobs[1], checkpoints / f"{specs[1].key()}.pt", "File too large", "the file exceeds"
    )
    assert list(checkpoints.iterdir()) == []
    assert _rows(engine, Result) == 2
    with Session(engine) as session:
        assert session.scalars(select(EpochRow.job_id).distinct()).all() == [1, 3]


def _without_root_file_powers() -> None:
    """In the worker process, as root: drop the capabilities that let root write anywhere
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) from the bounding set, so that
    directory permissions apply to it after exec like to any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) needs CAP_SETPCAP")


def test_unwritable_checkpoint_directory_fails_jobs_cleanly(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    specs = tiny_specs(2)
    queue.enqueue(engine, specs, "t")
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    checkpoints.chmod(0o555)
    root = os.geteuid() == 0
    if root:
        try:  # a root without CAP_SETPCAP (some containers) cannot give up its file powers
            subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_without_root_file_powers,
                           check=True, timeout=60)  # fmt: skip
        except subprocess.SubprocessError as exc:
            pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE here ({exc})")
    proc = subprocess.run(
        worker_argv(sqlite_url, "--until-empty"), env=worker_env(tmp_path), capture_output=True,
        text=True, timeout=120, preexec_fn=_without_root_file_powers if root else None,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    jobs = _jobs(engine)
    for spec in specs:  # both failed, by the same worker: it went on after the first
        _assert_clean_failure(
            jobs[spec.seed], checkpoints / f"{spec.key()}.pt", "Permission denied",
            "make the directory writable by this worker's user",
        )  # fmt: skip
    assert len({job.worker_id for job in jobs.values()}) == 1
    assert list(checkpoints.iterdir()) == []
    assert (_rows(engine, Result), _rows(engine, EpochRow)) == (0, 0)
