"""The queue on a real SQLite file: idempotent enqueue, atomic claims, fenced leases, expiry."""

from __future__ import annotations

import threading

import pytest
from queue_helpers import expire_lease, job_row, tiny_specs
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.experiment.grids import paper_grid, resolve_grid
from harness.queue import control
from harness.queue import jobs as queue
from harness.store.clock import database_time
from harness.store.engine import make_engine
from harness.store.schema import Job, WorkerRow


def test_enqueue_twice_adds_nothing(sqlite_url):
    engine = make_engine(sqlite_url)
    grid = resolve_grid("paper", seeds=2)
    assert len(grid.cells) == 38 and grid.seeds == (42, 43)
    assert queue.enqueue(engine, grid.jobs(), "paper") == queue.EnqueueResult(new=76, existing=0)
    assert queue.enqueue(engine, grid.jobs(), "paper") == queue.EnqueueResult(new=0, existing=76)
    # A third seed adds exactly the new seed's 38 jobs.
    more = resolve_grid("paper", seeds=3).jobs()
    assert queue.enqueue(engine, more, "paper") == queue.EnqueueResult(new=38, existing=76)


def test_paper_grid_cells():
    cells = set(paper_grid().cells)
    assert len(cells) == 38
    assert ("se_resnet18", "svhn") in cells and ("cbam_resnet18", "tinyimagenet") in cells
    assert ("se_resnet18", "cifar10") not in cells
    assert {d for _, d in cells} == {
        "tinyimagenet",
        "svhn",
        "cifar10",
        "fashionmnist",
        "tissuemnist",
        "bloodmnist",
        "pcam",
        "padufes20",
    }


def test_claim_takes_oldest_and_returns_none_when_empty(sqlite_url):
    engine = make_engine(sqlite_url)
    queue.enqueue(engine, tiny_specs(2), "t")
    first = queue.claim(engine, "w1", "cpu", 30)
    second = queue.claim(engine, "w2", "cpu", 30)
    assert (first.id, second.id) == (1, 2)
    assert first.attempts == 1 and first.lease == queue.Lease(1, "w1", 1)
    assert first.spec().key() == first.key  # the row rebuilds the very same JobSpec
    assert queue.claim(engine, "w3", "cpu", 30) is None
    row = job_row(engine, 1)
    assert row.status == "running" and row.worker_id == "w1"
    assert row.lease_expires_at > database_time(engine)


def test_concurrent_claims_never_share_a_job(sqlite_url):
    engine = make_engine(sqlite_url)
    queue.enqueue(engine, tiny_specs(60), "t")
    claimed: dict[str, list[int]] = {}

    def claim_all(name: str) -> None:
        # Each thread has its own engine, as separate worker processes would.
        own = make_engine(sqlite_url)
        mine = claimed.setdefault(name, [])
        while (job := queue.claim(own, name, "cpu", 30)) is not None:
            mine.append(job.id)

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [job_id for jobs in claimed.values() for job_id in jobs]
    assert sorted(ids) == list(range(1, 61))  # every job exactly once
    with engine.connect() as conn:
        assert set(conn.execute(select(Job.attempts)).scalars()) == {1}


def test_lease_is_fenced_and_expired_lease_goes_back_with_attempt_counted(sqlite_url):
    engine = make_engine(sqlite_url)
    queue.enqueue(engine, tiny_specs(1), "t")
    old = queue.claim(engine, "w1", "cpu", 30)
    assert queue.heartbeat(engine, old.lease, 30)
    expire_lease(engine, old.id)
    new = queue.claim(engine, "w2", "cpu", 30)  # the claim requeues the expired lease first
    assert new.id == old.id and new.attempts == 2
    # The old holder is fenced out of every write.
    assert not queue.heartbeat(engine, old.lease, 30)
    assert not queue.fail(engine, old.lease, "late traceback")
    assert not queue.release(engine, old.lease)
    row = job_row(engine, old.id)
    assert row.status == "running" and row.worker_id == "w2" and row.attempts == 2
    assert "lease expired: worker w1" in row.error


def test_release_does_not_count_an_attempt(sqlite_url):
    engine = make_engine(sqlite_url)
    queue.enqueue(engine, tiny_specs(1), "t")
    job = queue.claim(engine, "w1", "cpu", 30)
    assert queue.release(engine, job.lease)
    row = job_row(engine, job.id)
    assert (row.status, row.attempts, row.worker_id) == ("queued", 0, None)
    assert queue.claim(engine, "w2", "cpu", 30).attempts == 1


def test_fail_records_error_and_worker_counts(sqlite_url):
    engine = make_engine(sqlite_url)
    queue.enqueue(engine, tiny_specs(1), "t")
    queue.register_worker(engine, "w1", "host", 1, "cpu")
    job = queue.claim(engine, "w1", "cpu", 30)
    assert queue.fail(engine, job.lease, "Traceback ...\nValueError: boom")
    row = job_row(engine, job.id)
    assert row.status == "failed" and row.error.endswith("ValueError: boom")
    with Session(engine) as session:
        worker = session.scalars(select(WorkerRow)).one()
    assert (worker.jobs_failed, worker.consecutive_failures, worker.jobs_done) == (1, 1, 0)


def test_retry_stale_only_touches_expired_leases(sqlite_url):
    engine = make_engine(sqlite_url)
    queue.enqueue(engine, tiny_specs(2), "t")
    live = queue.claim(engine, "w1", "cpu", 300)
    dead = queue.claim(engine, "w2", "cpu", 300)
    expire_lease(engine, dead.id)
    assert control.retry_stale(engine) == 1
    assert job_row(engine, live.id).status == "running"
    dead_row = job_row(engine, dead.id)
    assert dead_row.status == "queued" and "retry --stale" in dead_row.error


@pytest.mark.parametrize("bad_url", ["sqlite:////nonexistent-dir/sub/runs.db"])
def test_unreachable_database_is_one_clear_error(bad_url):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="cannot reach database"):
        make_engine(bad_url)


def test_a_second_engine_keeps_the_first_ones_view_current(sqlite_url, tmp_path):
    """Opening the database again in a process that already holds a connection (the launch
    test does: enqueue, then an engine of its own) must not drop that connection's SQLite
    locks: if it did, another process's last close would delete the -shm and the held
    connection would read a stale WAL index for good (seen as a job 'queued' forever)."""
    import subprocess
    import sys

    engine = make_engine(sqlite_url)
    queue.enqueue(engine, tiny_specs(1), "test")
    with Session(engine) as session:  # the pool now holds one open connection
        assert session.scalars(select(Job.status)).one() == "queued"
    make_engine(sqlite_url)  # probes the file again, in this process
    path = sqlite_url.removeprefix("sqlite:///")
    write = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute(\"update jobs set status = ?\", (sys.argv[2],)); c.commit(); "
        "print('written', flush=True); sys.stdin.read(); c.close()"
    )
    # One process writes and closes (it believes itself the last, were our locks gone), then
    # another writes and stays open, as a worker in flight does.
    subprocess.run([sys.executable, "-c", write, path, "released"], input="", check=True,
                   capture_output=True, text=True)  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", write, path, "running"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "written"
        with Session(engine) as session:
            assert session.scalars(select(Job.status)).one() == "running"
    finally:
        holder.communicate("")
