"""`harness demo`: enqueue -> CPU worker -> report, end to end on digits (a smaller run)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.cli import main
from harness.store.engine import make_engine
from harness.store.schema import Job, Result

pytestmark = pytest.mark.slow


@pytest.fixture
def one_torch_thread():
    """Tiny 8x8 jobs run fastest on one thread; the setting is restored for other tests."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_demo_runs_the_whole_loop(tmp_path, capsys, one_torch_thread):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--seeds",
        "1",
        "--max-epochs",
        "1",
        "--max-train-batches",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "demo: 2 new, 0 already queued/done" in printed
    assert "0 queued, 0 running, 2 done, 0 failed (2 total)" in printed
    report = out / "reports" / "demo" / "index.html"
    assert f"report: {report}" in printed and report.is_file()

    engine = make_engine(f"sqlite:///{out / 'runs.db'}")
    with Session(engine) as session:
        models = set(session.scalars(select(Job.model).where(Job.status == "done")))
        assert models == {"resnet18", "gradattn_rope"}
        assert session.scalar(select(func.count()).select_from(Result)) == 2
    page = report.read_text(encoding="utf-8")
    # The report leads with the scorecard of the demo's own claims file (one seed: untestable).
    assert page.index('id="scorecard"') < page.index("<nav>")
    assert "digits_claims.yaml" in page and 'href="#p-paper-claim-D1"' in page
    assert not any((out / "checkpoints").glob("*.pt"))  # deleted once results are committed


def test_demo_rejects_bad_options(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--max-epochs", "0"]) == 1
    assert "--max-epochs must be at least 1" in capsys.readouterr().err


def test_full_audit_runs_both_protocols_tuning_and_the_tuned_grid(tmp_path, capsys):
    out = tmp_path / "audit"
    argv = ["demo", "--full-audit", "--out", str(out), "--seeds", "1", "--models", "resnet18",
            "gradattn_rope", "--trials", "1", "--max-epochs", "1", "--max-train-batches", "1",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for part in ("[demo]", "[demo/reference-code]", "[demo/tuned]"):
        assert f"2 new, 0 already queued/done {part}" in printed
    assert "0 queued, 0 running, 6 done, 0 failed (6 total)" in printed
    engine = make_engine(f"sqlite:///{out / 'runs.db'}")
    with Session(engine) as session:
        jobs = list(session.scalars(select(Job)))
    arms = {(j.protocol, j.config["hparams"]) for j in jobs}
    assert arms == {("paper", "paper"), ("reference-code", "paper"), ("paper", "tuned")}
    from harness.tuning.results import best_hparams

    for job in jobs:
        if job.config["hparams"] == "tuned":  # the study's best trial, not Table 1's settings
            best = best_hparams(engine, "paper", "digits", job.model)
            assert best is not None and job.config["lr"] == best["lr"] != 1e-3
    html = (out / "reports" / "audit" / "index.html").read_text()
    for section in ("Protocol differences", "which switch moves which number",
                    "Tuned vs paper hyper-parameters", "Claims under each protocol"):  # fmt: skip
        assert section in html


def test_audit_queues_single_switch_runs_only_where_they_separate_effects():
    from harness.experiment.grids import resolve_grid
    from harness.tuning.full_audit import protocol_parts

    grid = resolve_grid("paper", seeds=2, datasets=["cifar10", "svhn", "tinyimagenet"])
    parts = {part.name: part.specs for part in protocol_parts(grid)}
    # CIFAR-10: corrupted images + last-epoch weights for all, + the small No-PE encoder for
    # gradattn_nope; SVHN: merge + last-epoch; Tiny ImageNet: last-epoch only (no switch runs).
    corrupt = parts["paper/switch:corrupt_train_images"]
    assert {(s.dataset, s.protocol) for s in corrupt} == {("cifar10", "paper")}
    assert len(corrupt) == 4 * 2 and all(s.config.quirks == {"corrupt_train_images": True}
                                         for s in corrupt)  # fmt: skip
    small = parts["paper/switch:small_nope_encoder"]
    assert {(s.model, s.dataset) for s in small} == {("gradattn_nope", "cifar10")}
    last = parts["paper/switch:last_epoch_weights"]
    assert {s.dataset for s in last} == {"cifar10", "svhn"}
    assert {s.dataset for s in parts["paper/switch:svhn_merge_extra"]} == {"svhn"}
    assert len(parts["paper"]) == len(parts["paper/reference-code"]) == len(grid.jobs())
