"""`harness worker --gpus LIST` and `--exclusive`: what the CPU can check.

--gpus: argument validation and the child processes' command lines (one per GPU and slot).
--exclusive: a worker does not claim while another job runs on the same host and device, does
claim when the other job is on another host, another device or under a dead lease, gives a
claim back when the device turned busy in between, and records exclusive=True with slots 1.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from sqlalchemy import select, update

from harness.cli import build_parser, main
from harness.commands.worker import gpu_child_argvs
from harness.experiment.config import JobSpec, resolve_config
from harness.queue import jobs as queue
from harness.store.engine import make_engine
from harness.store.schema import Job, Result
from harness.workers.loop import Worker, WorkerOptions

TINY = {
    "max_epochs": 1,
    "max_train_batches": 1,
    "batch_size": 32,
    "grad_batches": 1,
    "model.d_model": 16,
    "model.nhead": 2,
    "model.dim_feedforward": 16,
    "model.num_layers": 1,
}


def _enqueue(engine, seeds: tuple[int, ...]) -> None:
    config = resolve_config("paper", "digits", "gradattn_nope", TINY)
    queue.enqueue(
        engine, [JobSpec("gradattn_nope", "digits", s, 42, "paper", config) for s in seeds], "t"
    )


def _error(capsys, *argv: str) -> str:
    code = main(["worker", *argv])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("gpus", "message"),
    [
        ("a,b", "expected GPU numbers such as 0,1,2,3"),
        (",", "expected GPU numbers such as 0,1,2,3"),
        ("-1", "expected GPU numbers such as 0,1,2,3"),
        ("0,0", "lists a GPU twice; use --slots K"),
    ],
)
def test_bad_gpu_lists_are_one_line_errors(capsys, sqlite_url, gpus, message):
    assert message in _error(capsys, "--gpus", gpus, "--db", sqlite_url)


def test_listed_gpu_that_does_not_exist(capsys, sqlite_url):
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    err = _error(capsys, "--gpus", f"0,{count + 3}", "--db", sqlite_url)
    if count == 0:
        assert "CUDA is not available on this host; use --device cpu" in err
    else:
        assert f"no GPU {count + 3}; this host has {count}" in err


def test_exclusive_refuses_several_slots(capsys, sqlite_url):
    err = _error(capsys, "--exclusive", "--slots", "2", "--db", sqlite_url)
    assert "--exclusive runs one job per device alone; drop --slots 2" in err


def test_gpus_and_device_are_mutually_exclusive(capsys, sqlite_url):
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--gpus", "0", "--device", "cpu", "--db", sqlite_url])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_one_child_per_gpu_and_slot(sqlite_url):
    args = build_parser().parse_args(
        ["worker", "--gpus", "0,2", "--slots", "2", "--db", sqlite_url, "--until-empty"]
    )
    argvs = gpu_child_argvs(args, [0, 2])
    devices = [
        (argv[argv.index("--device") + 1], argv[argv.index("--slot-index") + 1]) for argv in argvs
    ]
    assert devices == [("cuda:0", "0"), ("cuda:0", "1"), ("cuda:2", "0"), ("cuda:2", "1")]
    for argv in argvs:
        assert argv[0] == "worker" and "--gpus" not in argv and "--until-empty" in argv
        assert argv[argv.index("--slots") + 1] == "2"
        # the URL goes to the children through HARNESS_DB: `ps` must not show a password
        assert "--db" not in argv and sqlite_url not in argv
        assert "--exclusive" not in argv
    exclusive = build_parser().parse_args(
        ["worker", "--gpus", "1", "--exclusive", "--db", sqlite_url]
    )
    assert all("--exclusive" in argv for argv in gpu_child_argvs(exclusive, [1]))


def _worker(engine, tmp_path: Path, **options) -> Worker:
    return Worker(
        engine,
        WorkerOptions(
            device="cpu",
            data_root=Path("/nonexistent-data-root"),
            checkpoints=tmp_path / "ckpt",
            poll_seconds=0.01,
            exclusive=True,
            progress=False,
            **options,
        ),
    )


def test_exclusive_worker_waits_for_the_device(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    _enqueue(engine, (1, 2))
    host = socket.gethostname()
    other = queue.claim(engine, f"{host}:999:0", "cpu", 300)  # another worker's job, running
    exclusive = _worker(engine, tmp_path)
    plain = _worker(engine, tmp_path)
    plain.options.exclusive = False

    assert exclusive.claim_next() == ([], True)
    with engine.connect() as conn:
        assert conn.execute(select(Job.status).where(Job.id != other.id)).scalar_one() == "queued"
    # A job on another host or device, or under a dead lease, does not make the device busy.
    for change in (
        {"worker_id": "elsewhere:1:0"},
        {"device": "cuda:1"},
        {"lease_expires_at": queue.db_now(engine, -5)},
    ):
        with engine.begin() as conn:
            conn.execute(
                update(Job)
                .where(Job.id == other.id)
                .values(
                    worker_id=f"{host}:999:0",
                    device="cpu",
                    lease_expires_at=queue.db_now(conn, 300),
                )
            )
            conn.execute(update(Job).where(Job.id == other.id).values(**change))
        assert not exclusive.device_busy(), change
    # Restore the busy state; a plain worker still claims beside it (exclusivity is opt-in).
    with engine.begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id == other.id)
            .values(
                worker_id=f"{host}:999:0", device="cpu", lease_expires_at=queue.db_now(conn, 300)
            )
        )
    jobs, busy = plain.claim_next()
    assert len(jobs) == 1 and not busy
    queue.release(engine, jobs[0].lease)


def test_exclusive_claim_is_given_back_when_the_device_turned_busy(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    _enqueue(engine, (1, 2))
    worker = _worker(engine, tmp_path)
    other = f"{socket.gethostname()}:999:0"
    # A concurrent claim inside the race window, made by the database itself: the moment our
    # worker's claim commits, another worker on this host and device claims the other job.
    with engine.begin() as conn:
        conn.exec_driver_sql(f"""
            CREATE TRIGGER concurrent_claim AFTER UPDATE OF status ON jobs
            WHEN NEW.status = 'running' AND NEW.worker_id = '{worker.worker_id}'
            BEGIN
                UPDATE jobs SET status = 'running', worker_id = '{other}', device = 'cpu',
                    attempts = attempts + 1,
                    lease_expires_at = strftime('%Y-%m-%d %H:%M:%f', 'now', '+300 seconds')
                WHERE id != NEW.id AND status = 'queued';
            END""")
    assert not worker.device_busy()  # the pre-claim check passes
    assert worker.claim_next() == ([], True)
    with engine.connect() as conn:
        rows = conn.execute(select(Job.status, Job.worker_id, Job.attempts).order_by(Job.id)).all()
    # Ours went back to the queue without using an attempt; the other job keeps running.
    assert [tuple(row) for row in rows] == [("queued", None, 0), ("running", other, 1)]


def test_exclusive_result_is_recorded(sqlite_url, tmp_path):
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = make_engine(sqlite_url)
    _enqueue(engine, (1,))
    try:
        summary = _worker(engine, tmp_path, until_empty=True).run()
    finally:
        torch.set_num_threads(torch_threads)
    assert summary.done == 1
    with engine.connect() as conn:
        result = conn.execute(select(Result.slots, Result.extra)).one()
    assert result.slots == 1 and result.extra["exclusive"] is True
