"""Real worker processes on a real PostgreSQL server, and no password in any output.

Figures: 2 worker processes x 8 tiny digits jobs -> 8 results, each job claimed exactly once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from harness.cli import main
from harness.experiment.config import JobSpec, resolve_config
from harness.queue import jobs as queue
from harness.store.engine import make_engine
from harness.store.schema import EpochRow, Job, Result, WorkerRow

TINY = {"max_epochs": 1, "max_train_batches": 1, "batch_size": 16, "grad_batches": 1}
CLAIM = re.compile(r"claimed job (\d+) attempt (\d+)")
SECRET = "s3cret-Pa55word"


def _with_password(url: str) -> str:
    """The same database with a password in the URL (the test server trusts loopback, so any
    password connects -- which lets us check it never shows)."""
    return make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def _spec(seed: int) -> JobSpec:
    config = resolve_config("paper", "digits", "resnet18", TINY)
    return JobSpec("resnet18", "digits", seed, 42, "paper", config)


@pytest.mark.slow
def test_two_worker_processes_run_eight_jobs_exactly_once(postgres_url, tmp_path):
    url = _with_password(postgres_url)
    engine = make_engine(url)
    assert queue.enqueue(engine, [_spec(seed) for seed in range(8)], "t").new == 8
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # two workers share two cores
        "HARNESS_CHECKPOINTS": str(tmp_path / "checkpoints"),
        "HARNESS_DATA": str(tmp_path / "data"),
    }
    procs: list[tuple[subprocess.Popen, Path]] = []
    try:
        for name in ("w1", "w2"):
            log = tmp_path / f"{name}.log"
            with open(log, "w") as out:
                argv = [sys.executable, "-m", "harness.cli", "worker", "--db", url,
                        "--until-empty", "--no-progress", "--poll-seconds", "0.2"]  # fmt: skip
                procs.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                               env=env), log))  # fmt: skip
        codes = [proc.wait(timeout=300) for proc, _ in procs]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = {log.name: log.read_text() for _, log in procs}
    assert codes == [0, 0], logs
    claims = [(int(m[1]), int(m[2])) for text in logs.values() for m in CLAIM.finditer(text)]
    assert sorted(job_id for job_id, _ in claims) == list(range(1, 9)), logs
    assert max(Counter(job_id for job_id, _ in claims).values()) == 1
    assert {attempt for _, attempt in claims} == {1}
    assert all(SECRET not in text for text in logs.values())
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 8
        assert session.scalar(select(func.count()).select_from(EpochRow)) == 8
        jobs = session.scalars(select(Job)).all()
        assert {(j.status, j.attempts) for j in jobs} == {("done", 1)}
        workers = session.scalars(select(WorkerRow)).all()
        assert len(workers) == 2 and sum(w.jobs_done for w in workers) == 8
        assert all(w.stopped and w.jobs_failed == 0 for w in workers)


def test_status_never_shows_the_password(postgres_url, capsys):
    url = _with_password(postgres_url)
    queue.enqueue(make_engine(url), [_spec(seed) for seed in range(2)], "t")
    assert main(["status", "--db", url]) == 0
    out, err = capsys.readouterr()
    assert "queued" in out and "2" in out
    assert SECRET not in out + err


@pytest.mark.parametrize("where", ["closed port", "missing database"])
def test_database_errors_are_one_masked_line(pg_server, postgres_url, where, capsys):
    if where == "closed port":
        url = _with_password(postgres_url).replace(f":{pg_server.port}/", ":1/")
    else:
        url = _with_password(pg_server.url("no_such_database"))
    for command in (["status"], ["enqueue", "--grid", "demo"], ["retry", "--failed"]):
        assert main([*command, "--db", url]) == 1
        out, err = capsys.readouterr()
        assert SECRET not in out + err
        assert err.startswith("harness: error: cannot reach database postgresql+psycopg://")
        assert ":***@" in err and len(err.strip().splitlines()) == 1
        if where == "missing database":
            assert "no_such_database" in err and "does not exist" in err
