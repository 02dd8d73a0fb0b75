"""`harness report` end to end: real SQLite databases in, every format and figure out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from synthetic_db import EVIL, SyntheticRun, fill_synthetic, sample_report

from harness.cli import main
from harness.errors import HarnessError
from harness.report.claims import VERDICT_RULE
from harness.report.render import build_report
from harness.store.engine import make_engine

VERDICTS = {"SUPPORTED", "CONTRADICTED", "INCONCLUSIVE", "UNTESTABLE"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    url, index = sample_report(tmp_path_factory.mktemp("sample"))
    return url, index, index.read_text(encoding="utf-8")


def test_all_formats_and_figures_written(sample):
    _, index, page = sample
    out = index.parent
    assert {p.name for p in out.iterdir() if p.suffix != ".png"} == {
        "index.html", "report.md", "report.tex", "tables.csv", "report.json"
    }  # fmt: skip
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 8  # seeds, curves, gradients, attention, for both datasets
    for name in images:
        assert "/" not in name and (out / name).stat().st_size > 1000
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left

    cells = pd.read_csv(out / "tables.csv")
    row = cells[(cells.protocol == "paper") & (cells.table == 3) & (cells.dataset == "fashionmnist")
                & (cells.model == "gradattn_learnable")].iloc[0]  # fmt: skip
    assert row["n"] == 3 and row["mean"] == pytest.approx(66.0) and row["sd"] == pytest.approx(0.5)
    assert row["paper"] == pytest.approx(75.18) and row["diff"] == pytest.approx(66.0 - 75.18)
    assert row["job_ids"].count(" ") == 2

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(report["protocols"]) == {"paper", "reference-code"}
    paper = report["protocols"]["paper"]
    assert [t["number"] for t in paper["tables"]] == [3, 4, 5, 6, 7, 8, 9]
    assert paper["claims"] and {c["verdict"] for c in paper["claims"]} <= VERDICTS
    missing = [c for c in paper["tables"][0]["cells"] if c["dataset"] == "cifar10"][0]
    assert missing["n"] == 0 and missing["mean"] is None  # NaN written as null

    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert all(f"### Table {n}." in markdown for n in range(3, 10))
    assert "66.00 ± 0.50 (n=3) \\| paper 75.18 \\| Δ -9.18" in markdown
    latex = (out / "report.tex").read_text(encoding="utf-8")
    assert latex.count(r"\subsubsection*{Table ") == 14 and latex.rstrip().endswith(
        r"\end{document}"
    )
    assert latex.count(r"\begin{longtable}") == latex.count(r"\end{longtable}") > 14
    assert r"66.00 $\pm$ 0.50 (n=3)" in latex


def test_database_strings_are_escaped_everywhere(sample):
    _, index, page = sample
    assert page.count("<script") == 1  # our own sortable-table script only
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the model name, as text
    assert "&lt;i&gt;odd dataset&lt;/i&gt;" in page  # a dataset name in Table 3's rows
    assert "&lt;b&gt;grid&lt;/b&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    markdown = (index.parent / "report.md").read_text(encoding="utf-8")
    assert EVIL not in markdown and "<i>odd" not in markdown
    latex = (index.parent / "report.tex").read_text(encoding="utf-8")
    assert r"\textless{}i\textgreater{}odd dataset" in latex


def test_claims_runs_and_provenance_sections(sample):
    _, _, page = sample
    assert VERDICT_RULE.splitlines()[0][:40] in page.replace("&#39;", "'").replace("&#34;", '"')
    assert 'id="p-paper-claim-C1"' in page
    anchors = set(re.findall(r'<tr id="job-(\d+)"', page))
    assert len(anchors) == 2 * 6 * 3 + 5  # every job, done or not
    links = set(re.findall(r'href="#job-(\d+)"', page))
    assert links and links <= anchors  # claim parts and failed jobs link to existing runs
    # Provenance: commits, seeds, devices; the failed job with its exception line.
    assert "abc1234" in page and "42, 43, 44, 45" in page and "cpu, 1 slot(s), n=3" in page
    assert "RuntimeError: CUDA out of memory" in page and "queued" in page
    assert 'class="cell nodata"' in page  # cells without data are marked


def test_figures_without_data_are_skipped_with_reason(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    fill_synthetic(engine, [SyntheticRun("resnet18", "svhn", 1, grad_means=[])])
    index = build_report(engine, out_dir=tmp_path, name="small")  # an Engine, as `demo` passes
    page = index.read_text(encoding="utf-8")
    assert "Attention weight per token depth: not drawn (no GradAttn result has" in page
    assert "Gradient norm per layer: not drawn (no gradient rows" in page
    assert len(re.findall(r"<img ", page)) == 2  # seeds and curves


def test_empty_missing_and_invalid_inputs_give_one_line_errors(sqlite_url, tmp_path, capsys):
    out = tmp_path / "out"
    make_engine(sqlite_url)  # schema, no jobs
    with pytest.raises(HarnessError, match="has no jobs; run `harness enqueue`"):
        build_report(sqlite_url, out_dir=out)
    assert not out.exists()  # nothing half-written, not even the empty --out directory
    with pytest.raises(HarnessError, match="no database at"):
        build_report(f"sqlite:///{tmp_path / 'nope.db'}", out_dir=out)
    assert not (tmp_path / "nope.db").exists()
    assert main(["report", "--db", sqlite_url, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error: the database") and "\n" not in err
    fill_synthetic(make_engine(sqlite_url), [SyntheticRun("resnet18", "svhn", 1)])
    assert main(["report", "--db", sqlite_url, "--out", str(out), "--format", "pdf"]) == 1
    assert "unknown --format pdf; valid: md, latex, csv, json" in capsys.readouterr().err
    with pytest.raises(HarnessError, match="no jobs under protocol 'reference-code'"):
        build_report(sqlite_url, out_dir=out, protocol="reference-code")
    with pytest.raises(HarnessError, match="invalid report name"):
        build_report(sqlite_url, out_dir=out, name="../escape")


def test_incomplete_grid_without_results_still_reports(sqlite_url, tmp_path):
    fill_synthetic(
        make_engine(sqlite_url),
        [SyntheticRun("resnet18", "svhn", 1, status="failed", error="ValueError: bad split"),
         SyntheticRun("gradattn_rope", "svhn", 1, status="queued")],
    )  # fmt: skip
    index = build_report(sqlite_url, out_dir=tmp_path)
    assert index.parent.name == "synthetic"  # named after the grid
    page = index.read_text(encoding="utf-8")
    assert "No job has finished yet" in page and "ValueError: bad split" in page


def test_rebuild_replaces_the_report_whole(sqlite_url, tmp_path):
    out = tmp_path / "out"
    fill_synthetic(make_engine(sqlite_url), [SyntheticRun("resnet18", "svhn", 1, grad_means=[])])
    first = build_report(sqlite_url, out_dir=out, name="r", formats=("html", "md"))
    (first.parent / "stale.txt").write_text("from an older report")
    second = build_report(sqlite_url, out_dir=out, name="r")
    assert second == first and not (first.parent / "stale.txt").exists()
    assert not (first.parent / "report.md").exists()
    assert sorted(p.name for p in out.iterdir()) == ["r"]


def test_cli_in_a_real_process(sqlite_url, tmp_path):
    fill_synthetic(make_engine(sqlite_url), [SyntheticRun("resnet18", "svhn", 1, grad_means=[])])
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", "--html", "--db", sqlite_url,
         "--out", str(tmp_path / "out"), "--format", "md,json", "--format", "csv",
         "--protocol", "paper"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / "synthetic"
    assert f"report written: {out / 'index.html'}" in done.stdout
    assert {"index.html", "report.md", "report.json", "tables.csv"} <= {
        p.name for p in out.iterdir()
    }
    assert Path(out / "index.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
