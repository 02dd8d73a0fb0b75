"""The report's figures are drawn in worker processes beside the tables and claims: the same
figures, byte for byte and in the same order, as drawing them in-process; and a section that
fails stops its drawing, so nothing is written into the removed staging directory."""

from __future__ import annotations

import time

import pytest
from synthetic_db import SyntheticRun, fill_synthetic

from harness.report import render
from harness.report.figures import start_figures
from harness.report.load import load_epochs, load_gradients, load_results
from harness.store.engine import make_engine

MODELS = ("resnet18", "gradattn_nope", "gradattn_rope")


def _fill(url: str) -> None:
    runs = [SyntheticRun(m, d, s, metrics={"top1": 0.8 + 0.01 * i + 0.003 * s})
            for d in ("cifar10", "svhn") for i, m in enumerate(MODELS) for s in range(3)]  # fmt: skip
    fill_synthetic(make_engine(url), runs)


def _drawn(report_dir):
    return {p.name: p.read_bytes() for p in sorted(report_dir.glob("*.png"))}


def test_figures_from_worker_processes_equal_those_drawn_in_process(
    sqlite_url, tmp_path, monkeypatch
) -> None:
    _fill(sqlite_url)
    pages = {}
    for processes in ("1", "2"):
        monkeypatch.setenv("HARNESS_REPORT_PROCESSES", processes)
        data = render.collect(sqlite_url, None, "r", tmp_path / processes)
        figures = [(f.kind, f.title, f.file, f.skipped) for s in data.protocols for f in s.figures]
        pages[processes] = (figures, _drawn(tmp_path / processes))
    figures, files = pages["1"]
    assert {kind for kind, *_ in figures} == {"forest", "seeds", "curves", "gradients", "attention"}
    assert len(files) == len(figures) == 8  # forest, seeds, and 3 kinds x 2 datasets
    assert pages["2"] == pages["1"]


def test_cancel_stops_the_drawing(sqlite_url, tmp_path, monkeypatch) -> None:
    _fill(sqlite_url)
    engine = make_engine(sqlite_url)
    monkeypatch.setenv("HARNESS_REPORT_PROCESSES", "2")
    drawing = start_figures(load_results(engine), load_epochs(engine), load_gradients(engine),
                            "paper", tmp_path)  # fmt: skip
    drawing.cancel()
    written = _drawn(tmp_path)
    time.sleep(0.5)
    assert _drawn(tmp_path) == written  # every worker has stopped: nothing more arrives


def test_a_failing_section_leaves_no_report_and_no_figures_behind(
    sqlite_url, tmp_path, monkeypatch
) -> None:
    _fill(sqlite_url)
    monkeypatch.setenv("HARNESS_REPORT_PROCESSES", "2")

    def fail(*args, **kwargs):
        raise RuntimeError("tables failed")

    monkeypatch.setattr(render, "_section_numbers", fail)
    out = tmp_path / "reports"
    with pytest.raises(RuntimeError, match="tables failed"):
        render.build_report(sqlite_url, out, name="r")
    time.sleep(0.5)
    assert not out.exists()  # the staging directory and the --out it created are gone
