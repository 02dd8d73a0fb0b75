"""Queue control with real worker processes on a real SQLite file and a real PostgreSQL server:
a running job cancelled mid-run stops at its epoch boundary and nothing else is lost; a paused
queue is never claimed; priorities decide the order workers take jobs in."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.cli import main
from harness.experiment.config import JobSpec, resolve_config
from harness.queue import jobs as queue
from harness.store.engine import make_engine
from harness.store.schema import Job, Result

pytestmark = pytest.mark.slow

TINY = {"max_epochs": 1, "max_train_batches": 1, "batch_size": 16, "grad_batches": 1}
CLAIM = re.compile(r"claimed job (\d+) attempt (\d+)")


def _spec(seed: int, **overrides) -> JobSpec:
    config = resolve_config("paper", "digits", "resnet18", {**TINY, **overrides})
    return JobSpec("resnet18", "digits", seed, 42, "paper", config)


def _worker(url: str, tmp_path: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "HARNESS_CHECKPOINTS": str(tmp_path / "checkpoints")}  # fmt: skip
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "worker", "--db", url, "--no-progress",
         "--poll-seconds", "0.2", "--until-empty"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip


def _job(engine, job_id: int) -> Job:
    with Session(engine) as session:
        return session.get_one(Job, job_id)


def _wait_for(condition, what: str, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def test_cancelling_a_running_job_stops_it_and_the_worker_carries_on(db_url, tmp_path, capsys):
    engine = make_engine(db_url)
    long = _spec(1, max_epochs=40, max_train_batches=2)
    queue.enqueue(engine, [long, _spec(2), _spec(3)], "t")
    worker = _worker(db_url, tmp_path, "w")
    try:
        _wait_for(lambda: (_job(engine, 1).epoch or 0) >= 1, "the long job's first epoch")
        assert main(["cancel", "1", "--db", db_url]) == 0
        assert "1 job(s) cancelled (1 running)" in capsys.readouterr().out
        assert worker.wait(timeout=240) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    log = (tmp_path / "w.log").read_text()
    cancelled = _job(engine, 1)
    assert cancelled.status == "cancelled" and (cancelled.epoch or 0) < 40
    assert "cancelled (harness cancel)" in log and "1 cancelled" in log
    assert [int(m.group(1)) for m in CLAIM.finditer(log)] == [1, 2, 3]  # each claimed once
    with engine.connect() as conn:
        done = conn.execute(select(Result.job_id).order_by(Result.job_id)).scalars().all()
    assert done == [2, 3]  # the others ran; the cancelled job left no result
    assert main(["show", "1", "--db", db_url]) == 0
    shown = capsys.readouterr().out
    assert "CANCELLED" in shown and "cancelled while running" in shown


def test_a_paused_queue_is_not_claimed_and_priorities_order_the_rest(db_url, tmp_path, capsys):
    engine = make_engine(db_url)
    queue.enqueue(engine, [_spec(1), _spec(2)], "low")
    queue.enqueue(engine, [_spec(3)], "high", priority=10)
    assert main(["pause", "--db", db_url]) == 0
    first = _worker(db_url, tmp_path, "paused")
    assert first.wait(timeout=120) == 0
    log = (tmp_path / "paused.log").read_text()
    assert "queue paused" in log and not CLAIM.search(log)
    with engine.connect() as conn:
        assert conn.execute(
            select(func.count()).select_from(Job).where(Job.status == "queued")
        ).scalar_one() == 3
    assert main(["status", "--db", db_url]) == 0
    assert "PAUSED" in capsys.readouterr().out
    assert main(["resume", "--db", db_url]) == 0
    second = _worker(db_url, tmp_path, "resumed")
    assert second.wait(timeout=240) == 0
    log = (tmp_path / "resumed.log").read_text()
    assert [int(m.group(1)) for m in CLAIM.finditer(log)] == [3, 1, 2]
    assert all(_job(engine, i).status == "done" for i in (1, 2, 3))
