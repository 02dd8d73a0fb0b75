"""The fault-injection suite (issue 7): real worker processes, SIGKILLed at random and at exact
points, on SQLite and on PostgreSQL; a database that goes away; a device that fails every job.

Figures (printed at the end of the test session by tests/conftest.py): 16 workers x 1,000 tiny
jobs per database -> 0 duplicates, 0 lost, every job with one result row, epoch rows 1..n once
each and all its gradient rows, every extra claim explained by a kill. The jobs are the stand-in
runner's (tests/helpers/fault_runner.py): everything but the training is the real harness.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time

import pytest
from fault_suite import FaultRun, worker_argv, worker_env
from queue_helpers import tiny_specs
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.cli import main
from harness.faults import FAULT_POINTS
from harness.queue import jobs as queue
from harness.store.engine import make_engine
from harness.store.schema import Job, Result, WorkerRow

JOBS = 1000
WORKERS = 16
LEASE_SECONDS = 4.0
RANDOM_KILLS = 5
FAULTS_PER_POINT = 2  # workers that SIGKILL themselves at each point (harness/faults.py)


def _faults(seed: int) -> list[str]:
    """One exact kill for each of the first workers: at the N-th visit of a point (inside the
    claim transaction, mid-epoch, between a checkpoint's write and rename, inside an epoch
    row's transaction, inside the completion's transaction), N early enough to be reached."""
    rng = random.Random(seed)
    plan = [
        f"{point}:@{rng.randint(1, 15 if point in ('claim', 'complete') else 30)}"
        for point in FAULT_POINTS
        for _ in range(FAULTS_PER_POINT)
    ]
    rng.shuffle(plan)
    return plan


def _fault_suite(url: str, tmp_path, fault_figures: list[str], label: str) -> None:
    engine = make_engine(url)
    # max_attempts well above what kills can use up: a job that fails here is a bug, not bad luck.
    assert queue.enqueue(engine, tiny_specs(JOBS, max_epochs=2), "faults", max_attempts=50).new
    run = FaultRun(
        url, tmp_path, WORKERS, LEASE_SECONDS, _faults(os.getpid()), random_kills=RANDOM_KILLS
    )
    wall = run.run(engine, JOBS)
    figures, problems = run.figures(engine, JOBS, wall)
    fault_figures.append(figures.line(label))
    assert not problems, f"{figures.line(label)}\n" + "\n".join(problems)
    assert (figures.duplicates, figures.lost) == (0, 0)
    # Every kill point was hit (the workers reach N well before the queue runs dry).
    assert set(figures.kills_by_point) == {"random", *FAULT_POINTS}, figures.kills_by_point
    assert figures.restarts >= figures.kills


@pytest.mark.slow
def test_sixteen_workers_thousand_jobs_sigkilled_sqlite(sqlite_url, tmp_path, fault_figures):
    _fault_suite(sqlite_url, tmp_path, fault_figures, "sqlite")


@pytest.mark.slow
def test_sixteen_workers_thousand_jobs_sigkilled_postgres(postgres_url, tmp_path, fault_figures):
    _fault_suite(postgres_url, tmp_path, fault_figures, "postgresql")


def _wait_for(condition, what: str, limit: float = 90) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def _count(engine, status: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(Job).where(Job.status == status)
        ).scalar_one()


@pytest.mark.slow
def test_database_outage_ridden_out_then_patience_exhausted(pg_server, tmp_path, fault_figures):
    """Own server (the session's must stay up): down 2 s -> ridden out; down past the patience
    -> every worker exits with one line; back up -> a fresh worker finishes the rest once."""
    from pg_server import PostgresServer

    server = PostgresServer(pg_server.bindir)
    procs: list[subprocess.Popen] = []
    try:
        server.start()
        url = server.create_database("outage")
        engine = make_engine(url)
        queue.enqueue(engine, tiny_specs(40, max_epochs=2), "outage")
        env = worker_env(tmp_path, FAULT_RUNNER_STEP_SECONDS="0.02")
        argv = worker_argv(url, "--lease-seconds", "6", "--poll-seconds", "0.2",
                           "--db-patience", "5")  # fmt: skip
        for i in range(3):
            with open(tmp_path / f"w{i}.log", "w") as log:
                procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))
        _wait_for(lambda: _count(engine, "done") >= 6, "6 jobs before the outage")
        server.pause()
        time.sleep(2)
        server.resume()
        _wait_for(lambda: _count(engine, "done") >= 16, "16 jobs after the short outage")
        assert all(proc.poll() is None for proc in procs)  # all rode it out
        logs = [(tmp_path / f"w{i}.log").read_text() for i in range(3)]
        assert any("database unreachable" in text for text in logs), logs[0][-2000:]
        assert any("database reachable again" in text for text in logs)

        outage = time.monotonic()
        server.pause()
        codes = [proc.wait(timeout=60) for proc in procs]
        gave_up_after = time.monotonic() - outage
        server.resume()
        assert codes == [1, 1, 1], codes
        assert 5 <= gave_up_after < 40
        prefix = (
            rf"harness: error: database {re.escape(url)} unreachable for \d+ s \(--db-patience "
            r"5; last error: .+\); worker stopped"
        )
        tails = (
            r", holding no job",
            r"; job \d+ stays leased to it and goes back to the queue when its lease expires "
            r"\(resuming from its checkpoint\)",
        )
        for i in range(3):
            last = (tmp_path / f"w{i}.log").read_text().strip().splitlines()[-1]
            assert any(re.fullmatch(prefix + tail, last) for tail in tails), last
        # Back up: a fresh worker takes the rest, including the jobs the others left leased.
        with open(tmp_path / "finisher.log", "w") as log:
            last_worker = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            procs.append(last_worker)
        _wait_for(lambda: _count(engine, "done") == 40, "all 40 jobs after the outage")
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(Result)) == 40
            assert session.scalar(select(func.sum(WorkerRow.jobs_done))) == 40
        fault_figures.append(
            f"faults[outage]: 40 jobs, 3 workers rode out a 2 s outage, then stopped with one "
            f"line {gave_up_after:.0f} s into a longer one (--db-patience 5); 0 lost"
        )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.stop()


@pytest.mark.slow
def test_failing_device_quarantines_the_worker(sqlite_url, tmp_path, capsys):
    engine = make_engine(sqlite_url)
    queue.enqueue(engine, tiny_specs(5), "t")
    env = worker_env(tmp_path, FAULT_RUNNER_MODE="cuda-error")
    proc = subprocess.run(
        worker_argv(sqlite_url, "--max-failures", "3", "--poll-seconds", "0.2"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"harness: error: worker \S+ quarantined: 3 jobs failed in a row on cpu \(last: "
        r"RuntimeError: CUDA error: an illegal memory access .*\); it claims no more; check the "
        r"device, then `harness retry --failed` and start a new worker",
        last,
    ), last
    assert (_count(engine, "failed"), _count(engine, "queued")) == (3, 2)
    with Session(engine) as session:
        worker = session.scalars(select(WorkerRow)).one()
    assert worker.quarantined and worker.stopped and worker.jobs_failed == 3
    assert worker.stop_reason == last.removeprefix("harness: error: ")
    assert main(["status", "--db", sqlite_url]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].startswith("QUARANTINED workers (1)"), out
    assert lines[2] == f"  host {worker.host} pid {worker.pid} device cpu: {worker.stop_reason}"
    assert os.getpid() != worker.pid
