"""Queue control on both backends (a real SQLite file, a real PostgreSQL server): priorities,
pause/resume, cancel (queued and running), retry --cancelled, and the job history."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from queue_helpers import tiny_specs
from sqlalchemy import select

from harness.queue import control, recording
from harness.queue import jobs as queue
from harness.store.engine import make_engine
from harness.store.schema import EpochRow, Job, JobEvent


def _epoch(n: int) -> SimpleNamespace:
    return SimpleNamespace(epoch=n, train_loss=1.0, train_acc=0.5, val_loss=1.0, val_acc=0.5,
                           lr=1e-3, train_seconds=0.1, eval_seconds=0.1)  # fmt: skip


def _history(engine, job_id: int) -> list[tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(JobEvent.state, JobEvent.note).where(JobEvent.job_id == job_id)
            .order_by(JobEvent.id)
        ).all()  # fmt: skip
    return [tuple(r) for r in rows]


def _status(engine, job_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(Job.status).where(Job.id == job_id)).scalar_one()


def test_highest_priority_first_then_oldest(db_url):
    engine = make_engine(db_url)
    specs = tiny_specs(6)
    queue.enqueue(engine, specs[:2], "low")  # ids 1, 2 at priority 0
    queue.enqueue(engine, specs[2:4], "high", priority=5)  # ids 3, 4
    queue.enqueue(engine, specs[4:], "mid", priority=2)  # ids 5, 6
    order = [queue.claim(engine, "w:1:0", "cpu", 60).id for _ in range(6)]
    assert order == [3, 4, 5, 6, 1, 2]
    assert queue.claim(engine, "w:1:0", "cpu", 60) is None


def test_enqueue_again_with_a_priority_moves_only_jobs_still_queued(db_url):
    engine = make_engine(db_url)
    queue.enqueue(engine, tiny_specs(3), "g")
    running = queue.claim(engine, "w:1:0", "cpu", 60)  # job 1
    result = queue.enqueue(engine, tiny_specs(4), "g", priority=9)
    assert (result.new, result.existing, result.reprioritised) == (1, 3, 2)
    with engine.connect() as conn:
        priorities = dict(conn.execute(select(Job.id, Job.priority)).all())
    assert priorities == {1: 0, 2: 9, 3: 9, 4: 9}
    assert ("queued", "priority set to 9") in _history(engine, 2)
    assert ("queued", "priority set to 9") not in _history(engine, running.id)
    again = queue.enqueue(engine, tiny_specs(4), "g", priority=9)  # idempotent: nothing moves
    assert (again.new, again.reprioritised) == (0, 0)


def test_paused_queue_is_never_claimed_until_resumed(db_url):
    engine = make_engine(db_url)
    queue.enqueue(engine, tiny_specs(20), "g")
    assert control.set_paused(engine, True) is False
    assert control.is_paused(engine)
    claims: list[int] = []

    def claimer(n: int) -> None:
        for _ in range(5):
            job = queue.claim(engine, f"w:{n}:0", "cpu", 60)
            if job:
                claims.append(job.id)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert claims == []  # 20 claims tried, none taken
    assert control.set_paused(engine, False) is True
    assert queue.claim(engine, "w:9:0", "cpu", 60).id == 1


def test_cancel_queued_and_running_and_undo(db_url):
    engine = make_engine(db_url)
    queue.enqueue(engine, tiny_specs(4), "g")
    running = queue.claim(engine, "w:1:0", "cpu", 60)  # job 1
    assert recording.record_epoch(engine, running.lease, _epoch(1), 60, 1)
    counts = control.cancel(engine, control.JobFilter(ids=[running.id, 2]))
    assert counts == {"queued": 1, "running": 1, "failed": 0}
    # The worker's next fenced write finds its lease gone: the run stops there.
    assert not recording.record_epoch(engine, running.lease, _epoch(2), 60, 1)
    assert not queue.heartbeat(engine, running.lease, 60)
    assert _status(engine, 1) == _status(engine, 2) == "cancelled"
    with engine.connect() as conn:  # the epoch it finished stays on record; the next never landed
        epochs = conn.execute(select(EpochRow.epoch).where(EpochRow.job_id == 1)).scalars().all()
    assert epochs == [1]
    taken = [queue.claim(engine, "w:2:0", "cpu", 60) for _ in range(3)]
    assert [j.id for j in taken if j] == [3, 4]  # cancelled jobs are never claimed
    states = [state for state, _ in _history(engine, 1)]
    assert states == ["queued", "running", "cancelled"]
    assert control.cancel(engine, control.JobFilter(ids=[1, 2])) == {
        "queued": 0, "running": 0, "failed": 0
    }  # fmt: skip
    assert control.retry_cancelled(engine) == 2
    assert _status(engine, 1) == "queued" and _history(engine, 1)[-1] == ("queued", "retry --cancelled")


def test_cancel_by_model_dataset_and_grid(db_url):
    engine = make_engine(db_url)
    specs = tiny_specs(4)
    queue.enqueue(engine, specs[:2], "first")
    queue.enqueue(engine, specs[2:], "second")
    assert control.cancel(engine, control.JobFilter(grids=["second"]))["queued"] == 2
    assert control.cancel(engine, control.JobFilter(models=["nope"]))["queued"] == 0
    model, dataset = specs[0].model, specs[0].dataset
    assert control.cancel(engine, control.JobFilter(models=[model], datasets=[dataset]))["queued"] == 2


def test_history_follows_claim_release_fail_retry_and_done(db_url):
    engine = make_engine(db_url)
    queue.enqueue(engine, tiny_specs(1), "g", priority=3)
    job = queue.claim(engine, "w:1:0", "cpu", 60)
    assert queue.release(engine, job.lease)
    job = queue.claim(engine, "w:1:0", "cpu", 60)
    assert queue.fail(engine, job.lease, "Traceback (most recent call last):\n  ...\nValueError: boom\n")
    assert control.retry_failed(engine) == 1
    job = queue.claim(engine, "w:2:0", "cpu", 60)
    outcome = SimpleNamespace(
        metrics={"top1": 0.5}, gen_gap_best=0.0, gen_gap_last=0.0, best_epoch=1, epochs_run=1,
        evaluated_epoch=1, epoch_seconds=0.1, train_seconds=0.1, eval_seconds=0.0, params=1,
        device="cpu", provenance={}, extra={}, epochs=[_epoch(1)], gradient_layers=[],
    )  # fmt: skip
    assert recording.complete(engine, job.lease, outcome, 1)
    assert _history(engine, job.id) == [
        ("queued", "enqueued (grid g, priority 3)"),
        ("running", "claimed for cpu"),
        ("queued", "released by w:1:0"),
        ("running", "claimed for cpu"),
        ("failed", "ValueError: boom"),
        ("queued", "retry --failed"),
        ("running", "claimed for cpu"),
        ("done", "1 epochs run"),
    ]


def test_expired_leases_requeued_by_a_claim_or_by_retry_stale_say_so(db_url):
    from queue_helpers import expire_lease, job_row

    engine = make_engine(db_url)
    queue.enqueue(engine, tiny_specs(2), "g")
    first = queue.claim(engine, "w:1:0", "cpu", 60)
    second = queue.claim(engine, "w:2:0", "cpu", 60)
    expire_lease(engine, first.id)
    assert control.retry_stale(engine) == 1
    row = job_row(engine, first.id)
    assert (row.status, row.worker_id) == ("queued", None)
    assert row.error == (
        "lease expired: worker w:1:0 stopped heartbeating; requeued by `harness retry --stale`"
    )
    assert _history(engine, first.id)[-1] == ("queued", "retry --stale: the lease had expired")
    expire_lease(engine, second.id)
    assert queue.claim(engine, "w:3:0", "cpu", 60).id == first.id  # the claim requeues second
    row = job_row(engine, second.id)
    assert row.status == "queued"
    assert row.error == "lease expired: worker w:2:0 stopped heartbeating; job requeued"
    assert _history(engine, second.id)[-1] == (
        "queued", "lease expired: the worker stopped heartbeating"
    )  # fmt: skip
