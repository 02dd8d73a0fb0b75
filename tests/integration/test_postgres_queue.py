"""The queue on both backends: a real SQLite file and a real PostgreSQL server (tests/helpers/pg_server.py).

Each test runs once per backend; the PostgreSQL runs are skipped (or fail, with
HARNESS_REQUIRE_POSTGRES=1) when the server binaries are not installed.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from queue_helpers import expire_lease, job_row, tiny_specs
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.queue import control, recording
from harness.queue import jobs as queue
from harness.store.engine import make_engine
from harness.store.schema import EpochRow, GradientLayer, Job, Result, WorkerRow


def _outcome(top1: float) -> SimpleNamespace:
    """What harness.training.loop.run_job hands to recording.complete, with two epochs and one layer."""
    epochs = [
        SimpleNamespace(epoch=e, train_loss=1.0 / e, train_acc=0.5, val_loss=1.2, val_acc=0.4,
                        lr=1e-3, train_seconds=0.1, eval_seconds=0.05)
        for e in (1, 2)
    ]  # fmt: skip
    return SimpleNamespace(
        metrics={"top1": top1, "top3": 0.9},
        gen_gap_best=0.1, gen_gap_last=0.12, best_epoch=2, epochs_run=2, evaluated_epoch=2,
        epoch_seconds=0.15, train_seconds=0.1, eval_seconds=0.05, params=1234, device="cpu",
        provenance={"git": "abc", "torch": "x", "nested": {"ok": [1, 2]}}, extra={"note": "é"},
        epochs=epochs,
        gradient_layers=[{"mode": "output", "layer_index": 0, "layer": "conv1", "kind": "Conv2d",
                          "batches": 1, "mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5}],
    )  # fmt: skip


def test_enqueue_is_idempotent(db_url):
    engine = make_engine(db_url)
    assert queue.enqueue(engine, tiny_specs(5), "t") == queue.EnqueueResult(new=5, existing=0)
    assert queue.enqueue(engine, tiny_specs(7), "t") == queue.EnqueueResult(new=2, existing=5)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 7


def test_concurrent_claims_never_share_a_job(db_url):
    engine = make_engine(db_url)
    queue.enqueue(engine, tiny_specs(40), "t")
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def claim_all(name: str) -> None:
        own = make_engine(db_url)  # its own connection pool, as a worker process would have
        mine = claimed.setdefault(name, [])
        try:
            while (job := queue.claim(own, name, "cpu", 30)) is not None:
                mine.append(job.id)
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    ids = sorted(job_id for jobs in claimed.values() for job_id in jobs)
    assert ids == list(range(1, 41))  # every job exactly once
    with engine.connect() as conn:
        rows = conn.execute(select(Job.status, Job.attempts, Job.worker_id)).all()
    assert {(status, attempts) for status, attempts, _ in rows} == {("running", 1)}
    owners = {job_id: name for name, jobs in claimed.items() for job_id in jobs}
    with Session(engine) as session:
        assert all(session.get_one(Job, i).worker_id == owners[i] for i in owners)


def test_expired_lease_is_reclaimed_and_the_old_holder_is_fenced_out(db_url):
    engine = make_engine(db_url)
    queue.enqueue(engine, tiny_specs(1), "t")
    for name in ("w1", "w2"):
        queue.register_worker(engine, name, "host", 1, "cpu")
    old = queue.claim(engine, "w1", "cpu", 30)
    assert queue.heartbeat(engine, old.lease, 30)
    expire_lease(engine, old.id)
    new = queue.claim(engine, "w2", "cpu", 30)
    assert new.id == old.id and new.attempts == 2 and new.lease.attempt == 2
    # The old holder can write nothing: heartbeat, epoch, completion, failure, release.
    assert not queue.heartbeat(engine, old.lease, 30)
    assert not recording.record_epoch(engine, old.lease, _outcome(0.1).epochs[0], 30, 1)
    assert not recording.complete(engine, old.lease, _outcome(0.1), 1)
    assert not queue.fail(engine, old.lease, "late traceback")
    assert not queue.release(engine, old.lease)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Result)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(EpochRow)).scalar_one() == 0
    row = job_row(engine, old.id)
    assert (row.status, row.worker_id, row.attempts) == ("running", "w2", 2)
    assert "lease expired: worker w1" in row.error
    # The new holder completes: result, epochs, gradients and status in one transaction.
    assert recording.record_epoch(engine, new.lease, _outcome(0.7).epochs[0], 30, 1)
    assert recording.complete(engine, new.lease, _outcome(0.7), 1)
    with Session(engine) as session:
        result = session.scalars(select(Result)).one()
        assert result.top1 == 0.7 and result.provenance["nested"] == {"ok": [1, 2]}
        assert result.extra == {"note": "é"}
        assert session.scalar(select(func.count()).select_from(EpochRow)) == 2
        assert session.scalar(select(func.count()).select_from(GradientLayer)) == 1
        done = {w.id: w.jobs_done for w in session.scalars(select(WorkerRow))}
    assert done == {"w1": 0, "w2": 1}
    row = job_row(engine, old.id)
    assert row.status == "done" and row.error is None  # the stale "lease expired" text is cleared
    assert not recording.complete(engine, new.lease, _outcome(0.7), 1)  # only once


def test_max_attempts_then_retry(db_url):
    engine = make_engine(db_url)
    queue.enqueue(engine, tiny_specs(1), "t", max_attempts=2)
    for name in ("w1", "w2"):
        job = queue.claim(engine, name, "cpu", 30)
        assert job is not None
        expire_lease(engine, job.id)
    assert queue.claim(engine, "w3", "cpu", 30) is None
    row = job_row(engine, 1)
    assert row.status == "failed" and row.attempts == 2
    assert "gave up after max_attempts" in row.error and "retry --failed" in row.error
    assert control.retry_failed(engine) == 1
    # a retried job gets a fresh attempt budget
    assert queue.claim(engine, "w4", "cpu", 30).attempts == 1


def test_release_and_retry_stale(db_url):
    engine = make_engine(db_url)
    queue.enqueue(engine, tiny_specs(2), "t")
    first = queue.claim(engine, "w1", "cpu", 300)
    assert queue.release(engine, first.lease)
    assert (job_row(engine, first.id).status, job_row(engine, first.id).attempts) == ("queued", 0)
    live = queue.claim(engine, "w1", "cpu", 300)
    dead = queue.claim(engine, "w2", "cpu", 300)
    expire_lease(engine, dead.id)
    assert control.retry_stale(engine) == 1
    assert job_row(engine, live.id).status == "running"
    assert job_row(engine, dead.id).status == "queued"


def test_real_lease_runs_out_on_the_database_clock(db_url):
    engine = make_engine(db_url)
    queue.enqueue(engine, tiny_specs(1), "t")
    job = queue.claim(engine, "w1", "cpu", 0.3)
    assert queue.claim(engine, "w2", "cpu", 0.3) is None
    time.sleep(0.5)
    again = queue.claim(engine, "w2", "cpu", 30)
    assert again.id == job.id and again.attempts == 2


def test_database_clock_moves_inside_a_transaction(db_url):
    """Leases are stamped with the time of the statement, not of the transaction's start
    (PostgreSQL's now() would freeze it), so a claim that waited on a lock is judged fairly."""
    engine = make_engine(db_url)
    with engine.begin() as conn:
        before = conn.execute(select(queue.db_now(conn))).scalar_one()
        time.sleep(0.2)
        after = conn.execute(select(queue.db_now(conn))).scalar_one()
        later = conn.execute(select(queue.db_now(conn, 60))).scalar_one()
    assert 0.15 < (after - before).total_seconds() < 30
    assert 59 < (later - after).total_seconds() < 61


def test_timestamps_are_utc(db_url):
    """created_at (a server default) and started_at (db_now) agree, in UTC, whatever the
    server's own time zone (the test server runs in UTC+05:45 to catch a local-time default)."""
    engine = make_engine(db_url)
    queue.enqueue(engine, tiny_specs(1), "t")
    job = queue.claim(engine, "w1", "cpu", 30)
    row = job_row(engine, job.id)
    assert abs((row.started_at - row.created_at).total_seconds()) < 30
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            utc = conn.execute(select(func.timezone("UTC", func.clock_timestamp()))).scalar_one()
            server_zone = conn.exec_driver_sql("SHOW timezone").scalar_one()
        assert abs((utc - row.started_at).total_seconds()) < 30
        assert server_zone == "UTC"  # the engine's session setting, not the server's
