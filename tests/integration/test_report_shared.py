"""One report section computes each comparison once and shares it between tables and claims,
with the same numbers as computing them apart (harness.report.comparisons)."""

from __future__ import annotations

import numpy as np
from synthetic_db import SyntheticRun, fill_synthetic

from harness.report.claims import evaluate_claims
from harness.report.comparisons import Comparisons
from harness.report.load import load_results
from harness.report.tables import build_tables, dedupe
from harness.store.engine import make_engine

MODELS = ("resnet18", "gradattn_nope", "gradattn_learnable", "gradattn_rope")


def _frame(sqlite_url):
    engine = make_engine(sqlite_url)
    rng = np.random.default_rng(4)
    runs = [SyntheticRun(m, d, s, metrics={"top1": float(0.8 + 0.02 * i + 0.01 * rng.standard_normal())})
            for d in ("cifar10", "svhn") for i, m in enumerate(MODELS) for s in range(12)]  # fmt: skip
    fill_synthetic(engine, runs)
    frame, _ = dedupe(load_results(engine))
    return frame


def _marks(tables):
    return [(t.spec.number, c.dataset, c.model, tuple(sorted((m["baseline"], m["symbol"], m["p_adjusted"])
             for m in c.marks))) for t in tables for c in t.cells.itertuples()]  # fmt: skip


def test_each_comparison_is_computed_once_and_gives_the_same_numbers(sqlite_url) -> None:
    frame = _frame(sqlite_url)
    shared = Comparisons(frame)
    tables = build_tables(frame, shared)
    after_tables = shared.computed
    verdicts = evaluate_claims(frame, "paper", comparisons=shared)
    assert shared.computed == len(shared._pairs)  # every distinct comparison exactly once
    assert shared.requests > shared.computed  # the claims reused the tables' comparisons
    assert shared.computed - after_tables < after_tables  # most of the claims' were there
    apart = build_tables(frame)
    alone = evaluate_claims(frame, "paper")
    assert _marks(tables) == _marks(apart)
    assert [(v.id, v.verdict, v.reason) for v in verdicts] == [(v.id, v.verdict, v.reason)
                                                              for v in alone]  # fmt: skip
