"""`harness worker / status / retry` arguments and messages (fast: no training)."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from harness.cli import main
from harness.experiment.config import JobSpec, resolve_config
from harness.queue import jobs as queue
from harness.store.engine import make_engine
from harness.store.schema import Job


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--slots", "0"], "--slots must be at least 1"),
        (["--lease-seconds", "0"], "--lease-seconds must be positive"),
        (["--max-jobs", "0"], "--max-jobs must be at least 1"),
        (["--device", "tpu:0"], "is not a torch device"),
        (["--db", "sqlite:////no/such/dir/runs.db"], "cannot reach database"),
        (["--db", "nosuchdb://x"], "invalid database URL"),
    ],
)
def test_worker_rejects_bad_options_in_one_line(capsys, sqlite_url, argv, message):
    if "--db" not in argv:
        argv = [*argv, "--db", sqlite_url]
    code, out, err = _run(capsys, "worker", *argv)
    assert code == 1 and out == "" and err.count("\n") == 1 and message in err


def test_worker_without_cuda_says_so(capsys, sqlite_url):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    code, _, err = _run(capsys, "worker", "--gpu", "0", "--db", sqlite_url)
    assert code == 1 and "CUDA is not available on this host; use --device cpu" in err


def test_status_and_retry_stale_from_the_command_line(capsys, sqlite_url):
    engine = make_engine(sqlite_url)
    config = resolve_config("paper", "digits", "resnet18", {"max_epochs": 5})
    specs = [JobSpec("resnet18", "digits", seed, 42, "paper", config) for seed in (1, 2, 3)]
    queue.enqueue(engine, specs, "t")
    queue.register_worker(engine, "host:1:0", "host", 1, "cpu")
    live = queue.claim(engine, "host:1:0", "cpu", 300)
    dead = queue.claim(engine, "host:2:0", "cpu", 300)
    with engine.begin() as conn:
        conn.execute(
            update(Job).where(Job.id == dead.id).values(lease_expires_at=queue.db_now(conn, -5))
        )
    code, out, _ = _run(capsys, "status", "--db", sqlite_url)
    assert code == 0
    assert "1 queued, 2 running, 0 done, 0 failed (3 total)" in out
    assert f"#{live.id} resnet18/digits/seed 1 [paper] epoch 0/5 on host:1:0" in out
    assert f"#{dead.id} resnet18/digits/seed 2 [paper] epoch 0/5 on host:2:0  STALE" in out
    assert "ETA: unknown until the first epoch finishes" in out

    code, out, _ = _run(capsys, "retry", "--stale", "--db", sqlite_url)
    assert code == 0 and "1 stale job(s) requeued" in out
    code, out, _ = _run(capsys, "status", "--db", sqlite_url)
    assert "2 queued, 1 running" in out and "STALE" not in out
    code, out, _ = _run(capsys, "retry", "--failed", "--db", sqlite_url)
    assert "0 failed job(s) requeued" in out


def test_retry_needs_a_choice(capsys, sqlite_url):
    with pytest.raises(SystemExit) as exc:
        main(["retry", "--db", sqlite_url])
    assert exc.value.code == 2
    assert "one of the arguments --failed --stale --cancelled is required" in capsys.readouterr().err


def test_eta_counts_the_epochs_a_requeued_job_has_checkpointed(capsys, sqlite_url):
    """A released (or stale, or retried) job resumes after its recorded epochs: the ETA must not
    count them again."""
    from harness.queue.recording import record_epoch
    from harness.training.outcome import EpochRecord

    engine = make_engine(sqlite_url)
    config = resolve_config("paper", "digits", "resnet18", {"max_epochs": 5})
    specs = [JobSpec("resnet18", "digits", seed, 42, "paper", config) for seed in (1, 2)]
    queue.enqueue(engine, specs, "t")
    queue.register_worker(engine, "host:1:0", "host", 1, "cpu")
    job = queue.claim(engine, "host:1:0", "cpu", 300)
    for epoch in (1, 2):
        record = EpochRecord(epoch, 1.0, 0.5, 1.0, 0.5, 0.1, 3.0, 1.0)
        assert record_epoch(engine, job.lease, record, 300, 1)
    code, out, _ = _run(capsys, "status", "--db", sqlite_url)
    assert f"#{job.id} resnet18/digits/seed 1 [paper] epoch 2/5" in out
    assert "(8 epochs left x 4.0 s mean epoch over 2 epochs, 1 at a time" in out
    assert "resume from their checkpoints" not in out and "ETA: unknown" not in out
    assert queue.release(engine, job.lease)  # a clean stop: back to the queue, checkpoint kept
    code, out, _ = _run(capsys, "status", "--db", sqlite_url)
    assert code == 0 and "2 queued, 0 running" in out
    assert "ETA: at most 32.0 s (8 epochs left x 4.0 s" in out  # 3 + 5, not 5 + 5
    assert "1 queued job(s) resume from their checkpoints: 2 epochs already done" in out
    assert "ETA: unknown" not in out


def test_show_cancel_pause_from_the_command_line(capsys, sqlite_url, tmp_path):
    import json

    engine = make_engine(sqlite_url)
    config = resolve_config("paper", "digits", "resnet18", {"max_epochs": 5})
    queue.enqueue(engine, [JobSpec("resnet18", "digits", s, 42, "paper", config) for s in (1, 2)], "t")
    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    code, out, _ = _run(capsys, "show", "1", "--json", "--db", sqlite_url,
                        "--checkpoints", str(checkpoints))  # fmt: skip
    doc = json.loads(out)
    key = doc["key"]
    assert code == 0 and doc["status"] == "queued" and doc["priority"] == 0
    assert doc["config"]["max_epochs"] == 5 and doc["result"] is None and doc["epochs"] == []
    assert [e["state"] for e in doc["history"]] == ["queued"]
    assert doc["departures"] == [{"key": "max_epochs", "protocol": 100, "run": 5}]
    assert doc["checkpoint"] == {"path": str(checkpoints / f"{key}.pt"), "exists": False, "bytes": None}
    (checkpoints / f"{key}.pt").write_bytes(b"x" * 10)
    code, out, _ = _run(capsys, "show", "1", "--db", sqlite_url, "--checkpoints", str(checkpoints))
    assert "QUEUED" in out and f"checkpoint: {checkpoints / key}.pt (10 bytes)" in out
    assert "result: none yet" in out and "max_epochs = 5" in out
    assert "departures from the protocol: max_epochs=5 (paper: 100)" in out

    code, _, err = _run(capsys, "show", "9", "--db", sqlite_url)
    assert code == 1 and "no job 9 in this database (ids run from 1 to 2)" in err
    code, _, err = _run(capsys, "cancel", "--db", sqlite_url)
    assert code == 1 and "name the jobs to cancel" in err and len(err.splitlines()) == 1
    code, _, err = _run(capsys, "cancel", "--all", "--models", "resnet18", "--db", sqlite_url)
    assert code == 1 and "--all cancels every unfinished job" in err
    with pytest.raises(SystemExit) as exc:
        main(["cancel", "x1", "--db", sqlite_url])
    assert exc.value.code == 2 and "'x1' is not a job id" in capsys.readouterr().err
    code, out, _ = _run(capsys, "cancel", "--all", "--db", sqlite_url)
    assert code == 0 and "2 job(s) cancelled (2 queued)" in out
    code, out, _ = _run(capsys, "status", "--db", sqlite_url)
    assert "0 failed, 2 cancelled (2 total)" in out
    code, out, _ = _run(capsys, "retry", "--cancelled", "--db", sqlite_url)
    assert "2 cancelled job(s) requeued" in out

    code, out, _ = _run(capsys, "pause", "--db", sqlite_url)
    assert code == 0 and "queue paused" in out
    code, out, _ = _run(capsys, "pause", "--db", sqlite_url)
    assert "(it was already paused)" in out
    code, out, _ = _run(capsys, "resume", "--db", sqlite_url)
    assert code == 0 and "queue resumed" in out
    code, _, err = _run(capsys, "pause", "--db", f"sqlite:///{tmp_path}/typo.db")
    assert code == 1 and "no database at" in err
    assert not (tmp_path / "typo.db").exists()


def test_enqueue_priority_out_of_range_queues_nothing(capsys, tmp_path):
    url = f"sqlite:///{tmp_path}/p.db"
    code, _, err = _run(capsys, "enqueue", "--grid", "demo", "--priority", "2000000", "--db", url)
    assert code == 1 and "--priority 2000000 is out of range; use -1000000..1000000" in err
    assert not (tmp_path / "p.db").exists()
    code, out, _ = _run(capsys, "enqueue", "--grid", "demo", "--priority", "-3", "--db", url)
    assert code == 0 and "new" in out
    assert "note: not the paper's protocol: these jobs change batch_size=32 (paper: 128); " \
           "grad_batches=4 (paper: 20); max_epochs=2 (paper: 100)" in out  # fmt: skip
    code, out, _ = _run(capsys, "enqueue", "--grid", "demo", "--priority", "7", "--db", url)
    assert "moved to priority 7" in out
