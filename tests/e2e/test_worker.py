"""Worker processes on a real SQLite file, running the real harness.training.loop.run_job on digits.

Figures these tests establish: 3 worker loops x 8 jobs -> 8 results, 0 duplicate claims;
a failing job is recorded with its traceback while the workers carry on; a job survives a
SIGTERM (released, attempt not counted) and a SIGKILL (lease expiry, resumed from the
checkpoint) and ends with the metrics of an uninterrupted run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from harness import __version__
from harness.cli import main
from harness.experiment.config import JobSpec, resolve_config
from harness.queue import jobs as queue
from harness.store.engine import make_engine
from harness.store.schema import EpochRow, GradientLayer, Job, Result, WorkerRow

pytestmark = pytest.mark.slow

# Tiny real jobs: one or two small batches per epoch, one gradient batch.
TINY = {"max_epochs": 1, "max_train_batches": 1, "batch_size": 16, "grad_batches": 1}
CLAIM = re.compile(r"claimed job (\d+) attempt (\d+)")


@pytest.fixture
def one_torch_thread():
    """Tiny 8x8 jobs run fastest on one thread; the setting is restored for other tests."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spec(seed: int, **overrides) -> JobSpec:
    config = resolve_config("paper", "digits", "resnet18", {**TINY, **overrides})
    return JobSpec("resnet18", "digits", seed, 42, "paper", config)


@pytest.fixture(autouse=True)
def _no_stray_workers():
    """A failed assertion must not leave worker processes running: end the ones we started."""
    started: list[subprocess.Popen] = []
    _STARTED.append(started)
    yield
    _STARTED.remove(started)
    for proc in started:
        if proc.poll() is None:
            proc.terminate()  # a --slots parent forwards it to its children
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


_STARTED: list[list[subprocess.Popen]] = []


def _start_worker(url: str, tmp_path: Path, name: str, *extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # several workers share two cores
        "HARNESS_CHECKPOINTS": str(tmp_path / "checkpoints"),
        "HARNESS_DATA": str(tmp_path / "data"),
    }
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "worker",
            "--db",
            url,
            "--no-progress",
            "--poll-seconds",
            "0.2",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    _STARTED[-1].append(proc)
    return proc


def _wait_for(condition: Callable[[], bool], what: str, limit: float = 240) -> None:
    """Poll until `condition()`; the limit only keeps a broken run from hanging the suite."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def _job(engine, job_id: int) -> Job:
    with Session(engine) as session:
        return session.get_one(Job, job_id)


def _claims(tmp_path: Path) -> list[tuple[int, int]]:
    return [
        (int(m.group(1)), int(m.group(2)))
        for log in sorted(tmp_path.glob("*.log"))
        for m in CLAIM.finditer(log.read_text())
    ]


def test_three_worker_loops_run_eight_jobs_exactly_once(sqlite_url, tmp_path, capsys):
    engine = make_engine(sqlite_url)
    assert queue.enqueue(engine, [_spec(seed) for seed in range(8)], "t").new == 8
    # A job that raises inside run_job: a dataset the registry does not know.
    broken = _spec(99)
    with engine.begin() as conn:
        conn.execute(
            insert(Job).values(
                key="broken-job",
                grid="t",
                model="resnet18",
                dataset="nosuchdata",
                seed=99,
                split_seed=42,
                protocol="paper",
                config=broken.config.to_dict(),
                harness_version=__version__,
            )
        )
    # Three loops: a plain worker and one with two slots (two child processes).
    workers = [
        _start_worker(sqlite_url, tmp_path, "w1", "--until-empty"),
        _start_worker(sqlite_url, tmp_path, "w3", "--until-empty", "--slots", "2"),
    ]
    codes = [w.wait(timeout=300) for w in workers]
    logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
    assert codes == [0, 0], logs

    claims = _claims(tmp_path)
    assert len(claims) == 9, logs  # 8 jobs + the broken one, each claimed once
    # One progress line per finished epoch: job, epoch/max, train loss, val top-1, seconds, ETA.
    epoch_lines = re.findall(
        r"job (\d+) resnet18/digits/seed \d+ epoch 1/1: train loss \d+\.\d{4}, "
        r"val top-1 [01]\.\d{4}, \d+\.\d s, last epoch", "".join(logs.values())
    )
    assert sorted(map(int, epoch_lines)) == list(range(1, 9)), logs
    assert max(Counter(job_id for job_id, _ in claims).values()) == 1
    assert {attempt for _, attempt in claims} == {1}
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 8
        done = session.scalars(select(Job).where(Job.status == "done")).all()
        assert len(done) == 8 and {j.attempts for j in done} == {1}
        # Results, epoch rows and gradient rows landed with the completion.
        assert session.scalar(select(func.count()).select_from(EpochRow)) == 8
        assert session.scalar(select(func.count(func.distinct(GradientLayer.job_id)))) == 8
        failed = session.scalars(select(Job).where(Job.status == "failed")).one()
        assert failed.key == "broken-job"
        assert failed.error.startswith("Traceback (most recent call last):")
        assert "nosuchdata" in failed.error.strip().splitlines()[-1]
        rows = session.scalars(select(WorkerRow)).all()
        assert len(rows) == 3 and all(r.stopped for r in rows)  # 1 + 2 slot children
        assert sum(r.jobs_done for r in rows) == 8 and sum(r.jobs_failed for r in rows) == 1
        slotted = session.scalars(select(Result.slots).distinct()).all()
        assert set(slotted) == {1, 2}  # the --slots 2 children recorded the device sharing

    # status: counts and the failure's exception line; retry --failed requeues it.
    assert main(["status", "--db", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert "0 queued, 0 running, 8 done, 1 failed (9 total)" in out
    assert re.search(
        r"#9 resnet18/nosuchdata/seed 99 .*after 1 attempt\(s\): ValueError: "
        r"unknown dataset 'nosuchdata'",
        out,
    ), out
    assert main(["retry", "--failed", "--db", sqlite_url]) == 0
    assert "1 failed job(s) requeued" in capsys.readouterr().out
    assert _job(engine, 9).status == "queued"


def test_sigterm_release_then_sigkill_then_resume_matches_uninterrupted_run(
    sqlite_url, tmp_path, capsys, one_torch_thread
):
    spec = _spec(7, max_epochs=4, max_train_batches=2)
    engine = make_engine(sqlite_url)
    queue.enqueue(engine, [spec], "t")
    checkpoint = tmp_path / "checkpoints" / f"{spec.key()}.pt"

    # 1. SIGTERM after the first epoch: the job goes back to the queue, attempt not counted.
    first = _start_worker(sqlite_url, tmp_path, "a")
    _wait_for(lambda: (_job(engine, 1).epoch or 0) >= 1, "epoch 1")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 0
    job = _job(engine, 1)
    assert (job.status, job.attempts, job.worker_id) == ("queued", 0, None)
    assert checkpoint.exists()
    assert "released back to the queue" in (tmp_path / "a.log").read_text()

    # 2. SIGKILL a second worker mid-job: nothing is released, the lease just runs out.
    second = _start_worker(sqlite_url, tmp_path, "b", "--lease-seconds", "2")
    resumed_at = _job(engine, 1).epoch or 0
    _wait_for(lambda: (_job(engine, 1).epoch or 0) > resumed_at, "an epoch on worker b")
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=60)
    assert _job(engine, 1).status == "running"
    from harness.commands.status import collect_status

    _wait_for(lambda: collect_status(engine).running[0].stale, "the lease to expire", 60)
    assert main(["status", "--db", sqlite_url]) == 0
    assert "STALE" in capsys.readouterr().out

    # 3. Another worker reclaims it (attempt 2) and resumes from the checkpoint. It runs in
    #    this process (the same loop as `harness worker`), which saves a torch start-up.
    from harness.workers.loop import Worker, WorkerOptions

    summary = Worker(
        engine,
        WorkerOptions(
            data_root=tmp_path / "data",
            checkpoints=tmp_path / "checkpoints",
            until_empty=True,
            progress=False,
        ),
    ).run()
    assert (summary.done, summary.failed, summary.stop_reason) == (1, 0, "queue empty")
    job = _job(engine, 1)
    assert (job.status, job.attempts) == ("done", 2)
    assert job.error is None  # the lease expiry is history (attempts == 2), not a standing error
    assert not checkpoint.exists()
    assert _claims(tmp_path) == [(1, 1), (1, 1)]  # a and b; the third claim is attempt 2
    with Session(engine) as session:
        result = session.scalars(select(Result)).one()
        epochs = session.scalars(select(EpochRow).order_by(EpochRow.epoch)).all()
    assert result.extra["resumed_after_epoch"] >= 2
    assert [e.epoch for e in epochs] == list(range(1, result.epochs_run + 1))

    # 4. The same job run without interruption gives the same numbers.
    from harness.training.loop import run_job

    clean = run_job(spec, data_root=tmp_path / "data")
    assert clean.epochs_run == result.epochs_run and clean.best_epoch == result.best_epoch
    for key, value in clean.metrics.items():
        assert getattr(result, key) == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert [e.val_acc for e in epochs] == pytest.approx([e.val_acc for e in clean.epochs])
    assert [e.train_loss for e in epochs] == pytest.approx([e.train_loss for e in clean.epochs])
