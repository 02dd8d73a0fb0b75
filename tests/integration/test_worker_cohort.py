"""Fused seed cohorts (`harness worker --fuse-seeds S`) on real databases and real processes.

The claim (queue.claim_cohort) runs on SQLite and PostgreSQL; the worker runs the stand-in
runner (tests/helpers/fault_runner.py: run_jobs trains nothing, keeps the contract), so everything but
the fused training itself is the real harness: claims, leases, heartbeats, epoch rows,
completions, releases, failures, checkpoints, the signal handler.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
from fault_suite import worker_argv, worker_env
from queue_helpers import job_row
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from harness.cli import main
from harness.experiment.config import JobSpec, resolve_config
from harness.queue import jobs as queue
from harness.store.clock import database_time
from harness.store.engine import make_engine
from harness.store.schema import EpochRow, Job, Result, WorkerRow
from harness.workers.loop import Worker, WorkerOptions

RUNNER = "fault_runner:run_job"


def _cell(
    seeds, model="resnet18", dataset="digits", split_seed=42, pipeline="device", **overrides
) -> list[JobSpec]:
    """One paper-grid cell's seeds (pipeline "device" unless said otherwise)."""
    config = resolve_config(
        "paper", dataset, model, {"pipeline": pipeline, "max_epochs": 3, **overrides}
    )
    return [JobSpec(model, dataset, seed, split_seed, "paper", config) for seed in seeds]


def _enqueue_in_order(engine, specs: list[JobSpec]) -> None:
    """One insert each, so job ids follow the list (the claim order)."""
    for spec in specs:
        assert queue.enqueue(engine, [spec], "t").new == 1


def _ids(jobs) -> list[int]:
    return [job.id for job in jobs]


def test_claim_cohort_takes_exactly_the_matching_jobs_oldest_first(db_url):
    engine = make_engine(db_url)
    cell = _cell(range(6))
    _enqueue_in_order(
        engine,
        [
            cell[0],  # 1
            *_cell([0], lr=3e-4),  # 2: another configuration
            *_cell([0], model="gradattn_rope"),  # 3: another model
            *_cell([0], dataset="svhn"),  # 4: another dataset
            *_cell([1], split_seed=7),  # 5: another split seed
            cell[1],  # 6
            *_cell([1], pipeline="loader"),  # 7: the loader pipeline
            cell[2],  # 8
            cell[3],  # 9
            cell[4],  # 10: another harness version (below)
            *_cell([2], pipeline="loader"),  # 11: a seed of job 7's cell
        ],
    )
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == 10).values(harness_version="0.0.old"))

    first = queue.claim_cohort(engine, "w1", "cuda:0", 30, 3)
    assert _ids(first) == [1, 6, 8]  # not more than 3, though job 9 matches too
    assert [job.seed for job in first] == [0, 1, 2]
    for job in first:
        assert job.lease == queue.Lease(job.id, "w1", 1) and job.attempts == 1
        assert job.spec().key() == job.key
        row = job_row(engine, job.id)
        assert (row.status, row.worker_id, row.device) == ("running", "w1", "cuda:0")
        assert row.lease_expires_at > database_time(engine)
    claims = [_ids(queue.claim_cohort(engine, "w2", "cpu", 30, 3)) for _ in range(9)]
    # Every distractor alone; the loader job without its seed partner (11).
    assert claims == [[2], [3], [4], [5], [7], [9], [10], [11], []]
    with engine.connect() as conn:
        assert set(conn.execute(select(Job.status)).scalars()) == {"running"}
        assert set(conn.execute(select(Job.attempts)).scalars()) == {1}


def test_concurrent_cohort_claims_never_share_a_job(db_url):
    engine = make_engine(db_url)
    specs = [
        *_cell(range(5)),
        *_cell(range(5), model="gradattn_rope"),
        *_cell(range(5), lr=3e-4),
        *_cell(range(4), pipeline="loader"),
    ]
    queue.enqueue(engine, specs, "t")
    cohorts: list[list] = []
    errors: list[BaseException] = []

    def claim_all(name: str) -> None:
        own = make_engine(db_url)  # its own connection pool, as a worker process would have
        try:
            while jobs := queue.claim_cohort(own, name, "cpu", 30, 3):
                cohorts.append(jobs)
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    ids = sorted(job.id for jobs in cohorts for job in jobs)
    assert ids == list(range(1, len(specs) + 1))  # every job exactly once
    for jobs in cohorts:
        assert 1 <= len(jobs) <= 3 and len({job.lease.worker_id for job in jobs}) == 1
        cells = {(job.model, job.dataset, json.dumps(job.config, sort_keys=True)) for job in jobs}
        assert len(cells) == 1, jobs  # one cell per cohort
        if jobs[0].config["pipeline"] == "loader":
            assert len(jobs) == 1
    with engine.connect() as conn:
        assert set(conn.execute(select(Job.attempts)).scalars()) == {1}


def _run_worker(url: str, tmp_path: Path, name: str, *extra: str, **env: str):
    with open(tmp_path / f"{name}.log", "w") as log:
        return subprocess.run(
            worker_argv(url, "--until-empty", "--poll-seconds", "0.2", *extra),
            env=worker_env(tmp_path, FAULT_RUNNER_EARLY_STOP="1", **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
        ).returncode


def _epochs(engine) -> dict[int, list[int]]:
    with engine.connect() as conn:
        rows = conn.execute(select(EpochRow.job_id, EpochRow.epoch).order_by(EpochRow.epoch))
        by_job: dict[int, list[int]] = {}
        for job_id, epoch in rows:
            by_job.setdefault(job_id, []).append(epoch)
    return by_job


def _early_stop(seed: int, max_epochs: int) -> int:
    """The stand-in's last epoch with FAULT_RUNNER_EARLY_STOP=1 (tests/helpers/fault_runner.py)."""
    return max(1, max_epochs - seed % 3)


def test_fused_worker_drains_two_cells_and_a_loader_job_exactly_once(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    specs = [*_cell([0, 1, 2]), *_cell([0, 1, 2], model="gradattn_rope"), *_cell([5], "se_resnet18",
             pipeline="loader")]  # fmt: skip
    _enqueue_in_order(engine, specs)
    # Two slot processes, each claiming cohorts of up to 3.
    assert _run_worker(sqlite_url, tmp_path, "w", "--fuse-seeds", "3", "--slots", "2") == 0
    logs = (tmp_path / "w.log").read_text()
    assert logs.count("claimed a cohort of 3") == 2, logs
    with Session(engine) as session:
        jobs = session.scalars(select(Job).order_by(Job.id)).all()
        results = {r.job_id: r for r in session.scalars(select(Result))}
        workers = session.scalars(select(WorkerRow)).all()
    assert [(j.status, j.attempts) for j in jobs] == [("done", 1)] * 7, logs
    assert sorted(results) == [1, 2, 3, 4, 5, 6, 7]
    epochs = _epochs(engine)
    for job in jobs:
        last = _early_stop(job.seed, 3)
        assert results[job.id].epochs_run == last  # members finished at different epochs
        assert epochs[job.id] == list(range(1, last + 1)), job.id
        fused = results[job.id].extra.get("fused_seeds")
        assert fused == (None if job.model == "se_resnet18" else 3)
        # Jobs sharing the device, for Table 8: 2 slots, x3 when fused.
        assert results[job.id].slots == (2 if fused is None else 6)
    assert len(workers) == 2 and sum(w.jobs_done for w in workers) == 7
    runs = Counter(line.split()[3] for line in (tmp_path / "runs.log").read_text().splitlines()
                   if line.split()[2] == "start")  # fmt: skip
    assert sorted(runs.values()) == [1] * 7  # each job run once
    assert not list((tmp_path / "checkpoints").iterdir())


def test_sigterm_mid_cohort_releases_the_unfinished_and_a_second_worker_resumes(
    sqlite_url, tmp_path, monkeypatch
):
    engine = make_engine(sqlite_url)
    specs = _cell([0, 1, 2], max_epochs=4)  # last epochs 4, 3 and 2
    _enqueue_in_order(engine, specs)
    # The stand-in SIGTERMs its own worker as seed 2 finishes (epoch 2): the real handler.
    code = _run_worker(sqlite_url, tmp_path, "a", "--fuse-seeds", "3",
                       FAULT_RUNNER_SIGTERM_AFTER_DONE="1")  # fmt: skip
    log = (tmp_path / "a.log").read_text()
    assert code == 0, log
    rows = {row.seed: row for row in (job_row(engine, i) for i in (1, 2, 3))}
    assert (rows[2].status, rows[2].attempts) == ("done", 1)
    for seed in (0, 1):  # released: queued again, attempt given back, checkpoint kept
        assert (rows[seed].status, rows[seed].attempts, rows[seed].worker_id) == ("queued", 0, None)
        state = json.loads((tmp_path / "checkpoints" / f"{specs[seed].key()}.pt").read_text())
        assert len(state["history"]) == 2
    assert log.count("released back to the queue; its checkpoint is kept") == 2, log
    assert "stopping (SIGTERM)" in log

    # A second worker (in this process: the same loop) claims both as a cohort and resumes.
    monkeypatch.setenv("FAULT_RUNNER_EARLY_STOP", "1")
    summary = _worker(engine, tmp_path).run()
    assert (summary.done, summary.failed, summary.released) == (2, 0, 0)
    with Session(engine) as session:
        results = {r.job_id: r for r in session.scalars(select(Result))}
    assert {i: results[i].extra["resumed_after_epoch"] for i in (1, 2)} == {1: 2, 2: 2}
    assert results[3].extra["resumed_after_epoch"] == 0
    assert _epochs(engine) == {1: [1, 2, 3, 4], 2: [1, 2, 3], 3: [1, 2]}
    assert {job_row(engine, i).attempts for i in (1, 2, 3)} == {1}
    assert not list((tmp_path / "checkpoints").iterdir())


def _worker(engine, tmp_path: Path, **options) -> Worker:
    defaults = dict(
        checkpoints=tmp_path / "checkpoints",
        data_root=tmp_path / "data",
        until_empty=True,
        progress=False,
        runner=RUNNER,
        cohort_size=4,
        poll_seconds=0.1,
    )
    return Worker(engine, WorkerOptions(**{**defaults, **options}))


def test_a_raising_runner_fails_every_unfinished_member_and_quarantine_counts_jobs(
    sqlite_url, tmp_path, monkeypatch
):
    engine = make_engine(sqlite_url)
    queue.enqueue(engine, _cell([0, 1, 2, 3]), "t")  # last epochs 3, 2, 1, 3
    monkeypatch.setenv("FAULT_RUNNER_EARLY_STOP", "1")
    monkeypatch.setenv("FAULT_RUNNER_FAIL_EPOCH", "2")  # seed 2 is done after epoch 1
    summary = _worker(engine, tmp_path, max_consecutive_failures=3).run()
    assert (summary.done, summary.failed) == (1, 3)
    assert summary.gave_up and "3 jobs failed in a row" in summary.stop_reason
    with Session(engine) as session:
        jobs = {job.seed: job for job in session.scalars(select(Job))}
        worker = session.scalars(select(WorkerRow)).one()
    assert jobs[2].status == "done"
    for seed in (0, 1, 3):
        assert jobs[seed].status == "failed"
        assert jobs[seed].error.startswith("Traceback (most recent call last):")
        last = jobs[seed].error.strip().splitlines()[-1]
        assert last == "RuntimeError: stand-in failure at epoch 2 of a fused cohort"
    assert (worker.jobs_done, worker.jobs_failed, worker.quarantined) == (1, 3, True)


def test_max_jobs_limits_the_cohort_and_a_lost_lease_stops_it(sqlite_url, tmp_path, monkeypatch):
    engine = make_engine(sqlite_url)
    queue.enqueue(engine, _cell([0, 1, 2], max_epochs=40), "t")
    monkeypatch.setenv("FAULT_RUNNER_STEP_SECONDS", "0.02")
    worker = _worker(engine, tmp_path, max_jobs=2, lease_seconds=0.6)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(worker.run()))
    thread.start()
    # Once both members have an epoch row, another worker takes job 1 over (what a claim does
    # after an expired lease): the cohort stops, job 1 is left to it, job 2 is released.
    deadline = 60
    while len(_epochs(engine)) < 2 and deadline > 0:
        thread.join(0.05)
        deadline -= 0.05
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == 1).values(worker_id="thief", attempts=2))
    thread.join(60)
    summary = result[0]
    assert (summary.lost, summary.released, summary.done) == (1, 1, 0)
    assert summary.stop_reason == "--max-jobs 2 reached"
    assert [(job_row(engine, i).status, job_row(engine, i).worker_id) for i in (1, 2, 3)] == [
        ("running", "thief"), ("queued", None), ("queued", None)]  # fmt: skip
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Result)).scalar_one() == 0


@pytest.mark.parametrize("value", ["0", "-2"])
def test_fuse_seeds_below_one_is_one_clear_error(capsys, sqlite_url, value):
    assert main(["worker", "--db", sqlite_url, "--fuse-seeds", value]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"harness: error: --fuse-seeds must be at least 1 (got {value})\n"


def test_a_runner_module_without_run_jobs_is_refused_before_claiming(capsys, sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    queue.enqueue(engine, _cell([0, 1]), "t")
    # The module has a FUNC and JobInterrupted, so only its missing run_jobs is at fault.
    argv = ["worker", "--db", sqlite_url, "--fuse-seeds", "2", "--runner",
            "harness.training.outcome:job_outcome"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and err.count("\n") == 1
    assert "run_jobs" in err and "drop --fuse-seeds" in err
    assert {job_row(engine, i).status for i in (1, 2)} == {"queued"}
