"""`harness launch`: real submitit local runs, the Slurm submission through a fake sbatch, the
preemption / time-limit signal path with real processes, and the refusals."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from harness.cli import main
from harness.store.connection import mask_url
from harness.store.engine import make_engine
from harness.store.schema import Job, Result, WorkerRow
from harness.workers.launch import LaunchTask, TaskConfig, task_device

TINY = ["--set", "max_epochs=1", "--set", "max_train_batches=1", "--set", "batch_size=16",
        "--set", "grad_batches=1"]  # fmt: skip
SECRET = "s3cret-Pa55word"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _enqueue(capsys, url: str, *extra: str) -> None:
    code, _, err = _run(capsys, "enqueue", "--grid", "demo", "--db", url, *extra)
    assert code == 0, err


def _fake_slurm(tmp_path: Path) -> Path:
    """sbatch that keeps the script and its environment and answers like Slurm; srun exists
    (submitit looks for it) but is never run at submission."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\nenv > {tmp_path}/sbatch.env\n'
        'echo "Submitted batch job 4242"\n'
    )
    (bindir / "srun").write_text("#!/bin/sh\nexit 99\n")
    for tool in ("sbatch", "srun"):
        (bindir / tool).chmod(0o755)
    return bindir


def _config(**changes) -> TaskConfig:
    base = {"device_kind": "cpu", "slots": 1, "checkpoints": "/shared/ck", "data_root": "/d",
            "masked_url": "sqlite:////x/runs.db", "release_wait_s": 5.0}  # fmt: skip
    return TaskConfig(**{**base, **changes})


# -- --local: the demo grid's path, end to end ----------------------------------------------


@pytest.mark.slow
def test_local_launch_runs_the_queue_to_completion(tmp_path, sqlite_url, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./checkpoints and ./data of the tasks
    _enqueue(capsys, sqlite_url, "--models", "resnet18", "gradattn_nope", "--seeds", "1", *TINY)
    logs = tmp_path / "logs" / "%j"
    code, out, err = _run(
        capsys, "launch", "--local", "--workers", "2", "--wait", "--db", sqlite_url,
        "--logs", str(logs),
    )  # fmt: skip
    assert code == 0, out + err
    assert "2/2 task(s) finished cleanly; jobs 2 done, 0 failed" in out
    assert "HARNESS_DB" not in os.environ  # exported for the submission only
    engine = make_engine(sqlite_url)
    with Session(engine) as session:
        jobs = session.scalars(select(Job)).all()
        assert [(j.status, j.attempts) for j in jobs] == [("done", 1), ("done", 1)]
        results = session.scalars(select(Result.job_id)).all()
        assert sorted(results) == sorted(j.id for j in jobs)  # each exactly once
        workers = session.scalars(select(WorkerRow)).all()
        assert len(workers) == 2 and sum(w.jobs_done for w in workers) == 2  # one per task
    task_logs = sorted((tmp_path / "logs").glob("*/*_log.out"))
    assert len(task_logs) == 2
    assert all(
        "--device cpu --slots 1 --fuse-seeds 1 --until-empty" in p.read_text() for p in task_logs
    )


# -- --slurm: the submission, checked through a fake sbatch -----------------------------------


def test_slurm_submission_script_and_no_password_on_disk(
    tmp_path, postgres_url, capsys, monkeypatch
):
    url = make_url(postgres_url).set(password=SECRET).render_as_string(hide_password=False)
    _enqueue(capsys, url, "--models", "resnet18", "--seeds", "1")
    monkeypatch.setenv("PATH", f"{_fake_slurm(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    code, out, err = _run(
        capsys, "launch", "--slurm", "--nodes", "2", "--gpus-per-node", "4", "--slots", "2",
        "--fuse-seeds", "5", "--partition", "gpu", "--time", "1:30:00", "--sbatch", "account=lab",
        "--db", url, "--logs", str(tmp_path / "logs" / "%j"),
    )  # fmt: skip
    assert code == 0, err
    assert "slurm job 4242: 2 node(s) x 4 GPU task(s), 2 slot(s) each" in out
    assert mask_url(url) in out and SECRET not in out + err
    script = (tmp_path / "submitted.sh").read_text().splitlines()
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
                 "--time=90", "--requeue", "--signal=USR2@90", "--account=lab"):  # fmt: skip
        assert f"#SBATCH {line}" in script
    assert any(line.startswith("srun ") and "submitit.core._submit" in line for line in script)
    # The URL reaches the job through sbatch's exported environment, never through a file.
    assert f"HARNESS_DB={url}" in (tmp_path / "sbatch.env").read_text().splitlines()
    assert "HARNESS_DB" not in os.environ
    files = [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    assert any(p.name == "4242_submitted.pkl" for p in files)
    assert all(SECRET.encode() not in p.read_bytes() for p in files)
    from submitit.core.utils import DelayedSubmission

    pickled = next(p for p in files if p.name == "4242_submitted.pkl")
    task = DelayedSubmission.load(pickled).function
    assert isinstance(task, LaunchTask)
    assert (task.config.device_kind, task.config.slots, task.config.fuse_seeds) == ("cuda", 2, 5)
    assert task.config.masked_url == mask_url(url)


# -- preemption and time limit ---------------------------------------------------------------


def test_checkpoint_resubmits_the_same_task_without_state():
    config = _config(device_kind="cuda", slots=3)
    task = LaunchTask(config)
    delayed = task.checkpoint()
    again = delayed.function
    assert isinstance(again, LaunchTask) and again is not task
    assert again.config == config and delayed.args == () and delayed.kwargs == {}
    assert pickle.loads(pickle.dumps(again)).config == config


@pytest.mark.parametrize(
    ("kind", "rank", "visible", "device"),
    [
        ("cpu", 3, None, "cpu"),
        ("cuda", 2, "0,1,2,3", "cuda:2"),
        ("cuda", 2, "5", "cuda:0"),
        ("cuda", 1, None, "cuda:1"),
    ],  # fmt: skip
)
def test_task_device_follows_the_local_rank(kind, rank, visible, device):
    assert task_device(kind, rank, visible) == device


def _wait_for(condition, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _running_worker(engine, exclude: set[str]) -> WorkerRow | None:
    """The worker row of the process that holds the running job, once it is new to us."""
    with Session(engine) as session:
        job = session.scalars(select(Job)).one()
        if job.status != "running" or job.worker_id in exclude:
            return None
        return session.get(WorkerRow, job.worker_id)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_signals_release_the_job_and_usr2_requeues(tmp_path, sqlite_url, capsys, monkeypatch):
    """SIGUSR2 (time limit) to the task and its worker: the job is released, the task requeues
    itself and the restarted worker claims the job again; SIGTERM (preemption) to that task:
    released again, no requeue. The job ends queued with no attempt counted."""
    monkeypatch.chdir(tmp_path)
    # Long enough (many batches) that it is still training when the signals land.
    _enqueue(capsys, sqlite_url, "--models", "resnet18", "--seeds", "1",
             "--set", "max_epochs=5", "--set", "batch_size=9", "--set", "grad_batches=1")  # fmt: skip
    code, out, err = _run(
        capsys, "launch", "--local", "--db", sqlite_url, "--logs", str(tmp_path / "logs" / "%j")
    )
    assert code == 0, err
    controller = int(out.split("local job ", 1)[1].split(":", 1)[0])
    engine = make_engine(sqlite_url)
    try:
        first = _wait_for(lambda: _running_worker(engine, set()), "the first claim")
        os.kill(first.pid, signal.SIGUSR2)  # as Slurm signals every process: must be ignored
        os.kill(_parent_pid(first.pid), signal.SIGUSR2)
        second = _wait_for(lambda: _running_worker(engine, {first.id}), "the requeued claim")
        assert second.pid != first.pid
        os.kill(_parent_pid(second.pid), signal.SIGTERM)
        _wait_for(lambda: os.waitpid(controller, os.WNOHANG)[0] == controller, "the end")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(controller, signal.SIGKILL)
    with Session(engine) as session:
        job = session.scalars(select(Job)).one()
        assert (job.status, job.attempts, job.worker_id) == ("queued", 0, None)
        workers = session.scalars(select(WorkerRow)).all()
        assert {w.id for w in workers} == {first.id, second.id}
        assert all(w.stopped for w in workers)
        assert session.scalar(select(func.count()).select_from(Result)) == 0
    log = "".join(p.read_text() for p in (tmp_path / "logs").glob("*/*_log.*"))
    assert log.count("released back to the queue; its checkpoint is kept") == 2, log
    assert "worker exited with code 0 (SIGUSR2); resubmitting" in log, log
    assert "Requeued job" in log and "worker exited with code 0 (SIGTERM)" in log, log


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--local", "--workers", "0"], "--workers must be at least 1"),
        (["--local", "--slots", "0"], "--slots must be at least 1"),
        (["--local", "--fuse-seeds", "0"], "--fuse-seeds must be at least 1"),
        (["--slurm", "--nodes", "0"], "--nodes must be at least 1"),
        (["--slurm", "--gpus-per-node", "0"], "--gpus-per-node must be at least 1"),
        (["--local", "--time", "soon"], "--time 'soon': expected minutes or [D-]HH:MM[:SS]"),
        (["--local", "--time", "0"], "is under a minute"),
        (["--local", "--nodes", "2"], "--nodes is a --slurm option"),
        (["--slurm", "--workers", "2"], "--workers is a --local option"),
        (["--slurm", "--sbatch", "=x"], "--sbatch '=x': expected KEY=VALUE"),
        (["--slurm"], "no sbatch on PATH: run this on a Slurm login node, or use --local"),
        (["--local"], "nothing queued in sqlite:///"),
        (["--local", "--db", "sqlite://"], "an in-memory SQLite database is not shared"),
        (["--slurm", "--nodes", "2", "FAKE"], "SQLite on a shared file system is unsafe across"),
    ],
)
def test_launch_refusals_are_one_line(tmp_path, sqlite_url, capsys, monkeypatch, argv, message):
    bindir = tmp_path / "empty"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))  # no sbatch here...
    if "FAKE" in argv:  # ...unless the case is about what comes after that check
        argv = [a for a in argv if a != "FAKE"]
        monkeypatch.setenv("PATH", str(_fake_slurm(tmp_path)))
    if "--db" not in argv:
        argv = [*argv, "--db", sqlite_url]
    code, out, err = _run(capsys, "launch", *argv)
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "submitted.sh").exists()


def test_help_renders(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["launch", "--help"])
    assert exit_info.value.code == 0 and "default launch/%j" in capsys.readouterr().out


def test_slurm_and_local_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["launch", "--slurm", "--local"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
