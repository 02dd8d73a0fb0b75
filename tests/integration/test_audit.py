"""`harness audit` on SQLite and PostgreSQL: seeds go only to open parts, decided parts stop,
the budget holds, failed seeds are skipped, and a restart resumes from the database alone.

The jobs are run by `drain`: the real claim and the real completion transaction
(harness.queue.jobs.claim, harness.queue.recording.complete) with a stand-in for training that
reports top-1 = a per-model level + a per-seed shift + noise, and a set run time. Everything the
audit reads comes back through the database as a worker's results do.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pytest
import yaml
from sqlalchemy import select, update

from harness.audit.plan import BUDGET, DECIDED_STATE
from harness.audit.run import run_audit
from harness.audit.spec import AuditSpec, grid_claims, load_audit
from harness.cli import main
from harness.errors import HarnessError
from harness.experiment.grids import resolve_grid
from harness.queue.jobs import claim, fail
from harness.queue.recording import complete
from harness.report.sequential import Design
from harness.store.engine import make_engine
from harness.store.schema import Job
from harness.training.outcome import EpochRecord, job_outcome

LEVEL = {"resnet18": 0.90, "gradattn_rope": 0.84}  # rope 6 pp below: claims about it decide


def outcome(model: str, seed: int, noise_sd: float = 0.01):
    rng = np.random.default_rng(seed * 7919 + len(model))
    top1 = LEVEL[model] + 0.02 * np.sin(seed) + noise_sd * rng.standard_normal()
    record = EpochRecord(1, 0.5, top1, 0.5, top1, 0.1, 1.0, 0.1)
    return job_outcome([record], best_epoch=1, evaluated_epoch=1, params=1000, device="cpu",
                       metrics={"top1": float(top1), "top5": 1.0, "f1_macro": float(top1)})  # fmt: skip


def drain(engine, *, fail_seed: int | None = None, seconds: float = 60.0) -> int:
    """Run every queued job through claim + complete (or fail, for `fail_seed`); returns count."""
    count = 0
    while (job := claim(engine, "test-worker", "cpu", 300)) is not None:
        if job.seed == fail_seed and job.model == "gradattn_rope":
            fail(engine, job.lease, "RuntimeError: boom")
        else:
            complete(engine, job.lease, outcome(job.model, job.seed), slots=1)
        with engine.begin() as conn:  # a run time to budget with (a real worker's wall time)
            row = conn.execute(select(Job.finished_at).where(Job.id == job.id)).scalar_one()
            conn.execute(update(Job).where(Job.id == job.id)
                         .values(started_at=row - timedelta(seconds=seconds)))  # fmt: skip
        count += 1
    return count


CLAIMS = {"claims": [
    {"id": "A1", "text": "RoPE is better than ResNet-18 on top-1", "kind": "directional",
     "metric": "top1", "dataset": "digits", "baseline": "resnet18", "candidate": "gradattn_rope"},
    {"id": "A2", "text": "RoPE matches ResNet-18 on top-5", "kind": "point", "metric": "top5",
     "dataset": "digits", "baseline": "resnet18", "candidate": "gradattn_rope", "value": 0,
     "unit": "pp"},
]}  # fmt: skip


@pytest.fixture
def claims(tmp_path):
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(CLAIMS))
    return path


def make_spec(claims_path, horizon=12, budget=None, name="t", spending="pocock") -> AuditSpec:
    grid = resolve_grid("demo", seeds=horizon, overrides={"max_epochs": 1})
    claims, source = grid_claims(claims_path, grid)
    return AuditSpec(name, grid, claims, source, Design(horizon, spending), budget)


def test_decided_parts_stop_and_the_seeds_are_spent_only_where_needed(db_url, claims) -> None:
    engine = make_engine(db_url)
    spec = make_spec(claims)
    lines: list[str] = []
    plan = run_audit(engine, spec, between=lambda: drain(engine), say=lines.append)
    assert plan.finished
    states = {p.claim: p for p in plan.parts}
    # A1 is contradicted (RoPE is 6 pp worse), A2 (top-5 identical: all differences 0) is
    # SUPPORTED; both at the first look that can decide, well before the horizon.
    assert {v.id: v.verdict for v in plan.verdicts} == {"A1": "CONTRADICTED", "A2": "SUPPORTED"}
    first = min(p.decided_at for p in plan.parts)
    assert all(p.state == DECIDED_STATE for p in plan.parts)
    assert first < spec.design.horizon
    with engine.connect() as conn:
        seeds = sorted({s for s in conn.execute(select(Job.seed)).scalars()})
        grids = set(conn.execute(select(Job.grid)).scalars())
    assert len(seeds) == max(p.decided_at for p in states.values()) < spec.design.horizon
    assert grids == {"audit:t"}
    assert any("finished" in line for line in lines)
    # The report's sequential parts say when: "decided at look k of at most 12".
    assert all(f"decided at look {p.decided_at} of at most 12" in part["reason"]
               for v in plan.verdicts for part, p in zip(v.parts, plan.parts, strict=False)
               if part.get("decided_at") == p.decided_at)  # fmt: skip


def test_budget_stops_parts_it_cannot_decide(db_url, claims) -> None:
    engine = make_engine(db_url)
    # 0.05 h = 3 runs of 60 s. With no run time measured the first round queues one seed per
    # cell (2 runs); the 7 seeds the first deciding look needs then cost more than is left.
    spec = make_spec(claims, budget=0.05, name="b")
    lines: list[str] = []
    plan = run_audit(engine, spec, between=lambda: drain(engine), say=lines.append)
    assert plan.finished
    assert {p.state for p in plan.parts} == {BUDGET}
    assert plan.spent_hours == pytest.approx(2 * 60 / 3600)
    assert plan.progress()["budget_left_hours"] == pytest.approx(0.05 - 2 * 60 / 3600)
    assert "2 out of budget" in lines[-2] and "(0.017 left)" in lines[-2]
    with engine.connect() as conn:
        assert len(conn.execute(select(Job.id)).scalars().all()) == 2


def test_restart_resumes_from_the_database_and_a_failed_seed_is_skipped(db_url, claims) -> None:
    engine = make_engine(db_url)
    spec = make_spec(claims, name="r")
    run_audit(engine, spec, once=True, say=lambda _: None)  # round 1 only, then "crash"
    drain(engine, fail_seed=spec.grid.seeds[0])
    stored = load_audit(engine, "r")  # a new process: everything from the database
    assert stored == spec
    plan = run_audit(engine, stored, between=lambda: drain(engine), say=lambda _: None)
    assert plan.finished
    with engine.connect() as conn:
        failed = conn.execute(select(Job.seed).where(Job.status == "failed")).scalars().all()
    assert failed == [spec.grid.seeds[0]]
    # The failed seed never pairs; the parts still reached their looks on later seeds.
    assert all(p.state == DECIDED_STATE for p in plan.parts)


def test_two_controllers_at_once_queue_each_job_once(db_url, claims) -> None:
    engine = make_engine(db_url)
    spec = make_spec(claims, name="c")
    run_audit(engine, spec, once=True, say=lambda _: None)
    errors: list[BaseException] = []

    def controller() -> None:
        try:
            run_audit(make_engine(db_url), spec, once=True, say=lambda _: None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    drain(engine)
    threads = [threading.Thread(target=controller) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with engine.connect() as conn:
        keys = conn.execute(select(Job.key)).scalars().all()
    assert len(keys) == len(set(keys))


def test_cli_refuses_bad_audits(sqlite_url, claims, capsys) -> None:
    assert main(["audit", "--db", sqlite_url, "--grid", "demo", "--claims", str(claims)]) != 0
    assert "give --max-seeds N, --budget GPU_HOURS or both" in capsys.readouterr().err
    assert main(["audit", "--db", sqlite_url, "--grid", "demo", "--max-seeds", "99"]) != 0
    assert "must be 1..50" in capsys.readouterr().err
    assert main(["audit", "--db", sqlite_url, "--resume", "nope"]) != 0
    assert "no audit named 'nope'" in capsys.readouterr().err
    # Before any run exists, a claims file is checked against the grid, and says so.
    outside = {"claims": [{**CLAIMS["claims"][0], "candidate": "se_resnet18", "dataset": "svhn"}]}
    claims.write_text(yaml.safe_dump(outside))
    assert main(["audit", "--db", sqlite_url, "--grid", "demo", "--max-seeds", "5", "--claims",
                 str(claims)]) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "dataset 'svhn' is not in the audit's grid; datasets in the grid: digits" in err
    assert ("candidate 'se_resnet18' is not in the audit's grid (did you mean 'resnet18'?); "
            "models in the grid: gradattn_rope, resnet18") in err
    assert "has no runs" not in err
    claims.write_text(yaml.safe_dump(CLAIMS))
    engine = make_engine(sqlite_url)
    run_audit(engine, make_spec(claims, name="x"), once=True, say=lambda _: None)
    with pytest.raises(HarnessError, match="already exists with a different grid, design; resume it with"):
        run_audit(engine, make_spec(claims, name="x", horizon=10), once=True, say=lambda _: None)
