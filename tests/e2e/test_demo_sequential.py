"""`harness demo --sequential`: a sequential audit of the digits claims, end to end on CPU.

Real digits training (one epoch of one batch per job, so the whole audit takes about a
minute), the real audit loop between worker runs, the real report. The checks are what a user
reads: parts decided at a look before the horizon, no seeds spent on them afterwards, and the
report's sequential section and status line built from the database.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.cli import main
from harness.store.engine import make_engine
from harness.store.schema import AuditRow, Job

pytestmark = pytest.mark.slow


def test_sequential_demo_spends_seeds_only_where_undecided(tmp_path, capsys) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path / "demo"
    try:
        argv = ["demo", "--sequential", "--out", str(out), "--max-seeds", "8", "--budget", "2",
                "--max-epochs", "1", "--max-train-batches", "1", "--slots", "1",
                "--no-progress"]  # fmt: skip
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "audit demo-sequential: finished" in printed
    engine = make_engine(f"sqlite:///{out / 'runs.db'}")
    with Session(engine) as session:
        audit = session.scalars(select(AuditRow)).one()
        jobs = session.scalars(select(Job)).all()
    assert audit.state == "finished" and audit.design["horizon"] == 8
    states = audit.progress["states"]
    assert states.get("decided", 0) >= 1  # some part is decided before the horizon
    assert {j.grid for j in jobs} == {"audit:demo-sequential"}
    assert all(j.status == "done" for j in jobs)
    assert len({j.seed for j in jobs}) <= 8

    assert main(["report", "--db", f"sqlite:///{out / 'runs.db'}", "--claims",
                 "harness/paperdata/digits_claims.yaml", "--format", "json", "--out", "-"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    (seq,) = doc["sequential_audits"]
    assert seq["name"] == "demo-sequential" and seq["state"] == "finished"
    assert seq["jobs"] == len(jobs) and seq["seeds"] == len({j.seed for j in jobs})
    assert seq["budget_left_hours"] == pytest.approx(2 - seq["spent_hours"])
    decided = [c for c in seq["claims"] if c["decided"]]
    assert decided and all(max(c["decided_at"]) <= 8 for c in decided)
    # The same verdicts the audit recorded in its last round, recomputed from the rows.
    assert {c["claim"]: c["verdict"] for c in seq["claims"]} == audit.progress["claims"]
    assert doc["notes"][0].startswith("Sequential audit demo-sequential (finished): ")
    # The protocol section built from the same runs says its fixed-n verdicts ignore stopping.
    (section,) = doc["protocols"].values()
    assert any(note.startswith(f"{len(jobs)} of these {len(jobs)} runs were queued by "
                               "sequential audit demo-sequential") for note in section["notes"])  # fmt: skip

    assert main(["report", "--db", f"sqlite:///{out / 'runs.db'}", "--claims",
                 "harness/paperdata/digits_claims.yaml", "--format", "latex", "--out",
                 str(tmp_path / "tex"), "--name", "seq"]) == 0  # fmt: skip
    capsys.readouterr()
    latex = (tmp_path / "tex" / "seq" / "report.tex").read_text(encoding="utf-8")
    assert r"\subsection*{Sequential audits}" in latex
    assert r"\subsubsection*{Sequential audit demo-sequential (finished)}" in latex
    assert "runs were queued by sequential audit demo-sequential" in latex

    assert main(["status", "--db", f"sqlite:///{out / 'runs.db'}"]) == 0
    assert "audit demo-sequential (finished): " in capsys.readouterr().out
    page = (out / "reports" / "sequential" / "index.html").read_text(encoding="utf-8")
    assert 'id="sequential"' in page and "Sequential audit demo-sequential (finished)" in page
