"""Loading the database and rebuilding Tables 3-9: real SQLite files filled by synthetic_db."""

from __future__ import annotations

import math

import numpy as np
import pytest
from synthetic_db import SyntheticRun, fill_synthetic, grid_runs

from harness.report.load import load_epochs, load_gradients, load_jobs, load_results
from harness.report.tables import TABLE_SPECS, build_table, build_tables, cell_text, dedupe
from harness.store.engine import make_engine

SPEC = {spec.number: spec for spec in TABLE_SPECS}
H100 = {"device_name": "NVIDIA H100 80GB HBM3", "git_commit": "abc1234"}


@pytest.fixture
def engine(sqlite_url):
    return make_engine(sqlite_url)


def test_load_results_keeps_fractions_and_derives_columns(engine):
    fill_synthetic(
        engine,
        [
            SyntheticRun("resnet18", "svhn", 1, metrics={"top1": 0.9}),
            # evaluated at the last epoch (reference-code quirk): gen_gap is the last epoch's
            SyntheticRun("gradattn_rope", "svhn", 1, epochs=5, best_epoch=2,
                         metrics={"gen_gap_best": 0.01, "gen_gap_last": 0.07,
                                  "evaluated_epoch": 5}),
            SyntheticRun("gradattn_nope", "svhn", 1, status="failed", error="boom"),
            SyntheticRun("gradattn_nope", "svhn", 2, status="queued"),
        ],
    )  # fmt: skip
    frame = load_results(engine)
    assert sorted(frame["model"]) == ["gradattn_rope", "resnet18"]  # done jobs only
    resnet = frame[frame.model == "resnet18"].iloc[0]
    assert resnet["top1"] == pytest.approx(0.9)  # stored fraction, not percent
    assert resnet["f1"] == resnet["f1_macro"]
    assert resnet["gen_gap"] == pytest.approx(0.03)  # evaluated_epoch == best_epoch
    rope = frame[frame.model == "gradattn_rope"].iloc[0]
    assert rope["gen_gap"] == pytest.approx(0.07)
    assert len(load_jobs(engine)) == 4
    assert set(load_epochs(engine)["job_id"]) == set(frame["job_id"])
    assert set(load_gradients(engine)["mode"]) == {"output", "param"}


def test_gradient_health_columns_and_silent_layers(engine):
    means = [1e-8, None, 0.1, 0.2, 20.0]  # vanishing, silent, two healthy, exploding
    fill_synthetic(
        engine,
        [
            SyntheticRun("gradattn_nope", "svhn", 1, grad_means=means, param_grad_means=[0.1, 0.2]),
            SyntheticRun("gradattn_nope", "svhn", 1, protocol="reference-code", grad_means=means),
        ],
    )
    frame = load_results(engine).set_index("protocol")
    paper, ref = frame.loc["paper"], frame.loc["reference-code"]
    # Silent layer left out under the paper protocol: 2 healthy of 4 measured in (1e-6, 10).
    assert paper["ghs_1e-6_1e1"] == pytest.approx(2 / 4)
    assert paper["ghs_1e-7_1e2"] == pytest.approx(3 / 4)  # 20.0 is healthy below 1e2
    assert paper["ghs_1e-5_1e0"] == pytest.approx(2 / 4)
    # reference-code counts the silent layer as unhealthy (quirk ghs_count_silent).
    assert ref["ghs_1e-6_1e1"] == pytest.approx(2 / 5)
    assert paper["param_ghs_1e-6_1e1"] == pytest.approx(1.0)
    assert paper["n_vanishing"] == 1 and paper["n_silent"] == 1
    fired = np.array([1e-8, 0.1, 0.2, 20.0])
    assert paper["grad_norm_avg"] == pytest.approx(fired.mean())
    assert paper["grad_norm_std"] == pytest.approx(fired.std())
    assert (paper["grad_norm_min"], paper["grad_norm_max"]) == (pytest.approx(1e-8), 20.0)


def test_load_jobs_first_error_line(engine):
    trace = "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory\n"
    fill_synthetic(
        engine,
        [SyntheticRun("resnet18", "svhn", 1, status="failed", error=trace),
         SyntheticRun("resnet18", "svhn", 2, status="failed", error="disk full\nmore")],
    )  # fmt: skip
    assert list(load_jobs(engine)["error_line"]) == [
        "RuntimeError: CUDA out of memory",
        "disk full",
    ]


def test_table3_mean_sd_n_paper_and_missing_cells(engine):
    fill_synthetic(
        engine,
        grid_runs({("fashionmnist", "resnet18"): 0.64, ("fashionmnist", "gradattn_learnable"): 0.75},
                  seeds=(1, 2, 3, 4), sd=0.01),
    )  # fmt: skip
    table = build_table(SPEC[3], load_results(engine))
    cell = table.cell(("fashionmnist",), "gradattn_learnable")
    assert cell["n"] == 4
    assert cell["mean"] == pytest.approx(75.0)  # percent, as the paper prints
    assert cell["sd"] == pytest.approx(1.0)
    assert cell["paper"] == pytest.approx(75.18)
    assert cell["diff"] == pytest.approx(75.0 - 75.18)
    assert sorted(cell["seeds"]) == [1, 2, 3, 4]
    # Every paper dataset stays in the layout; cells without data say so, with the paper's value.
    missing = table.cell(("cifar10",), "resnet18")
    assert missing["n"] == 0 and math.isnan(missing["mean"])
    assert cell_text(missing) == "no data | paper 92.10"
    assert len(table.rows) == 8
    display = table.display().set_index("dataset")
    assert display.loc["fashionmnist", "gradattn_learnable"].startswith("75.00 ± 1.00 (n=4)")


def _noisy(dataset, model, mean, seeds, rng, sd=0.005):
    return [
        SyntheticRun(model, dataset, s, metrics={"top1": float(mean + rng.normal(0, sd))})
        for s in seeds
    ]


def test_marks_better_worse_and_not_testable(engine):
    rng = np.random.default_rng(0)
    seeds = range(10)
    runs = _noisy("svhn", "resnet18", 0.90, seeds, rng)
    runs += _noisy("svhn", "gradattn_rope", 0.95, seeds, rng)  # clearly better
    runs += _noisy("svhn", "gradattn_nope", 0.80, seeds, rng)  # clearly worse
    runs += _noisy("svhn", "gradattn_learnable", 0.90, [0], rng)  # one seed: no test
    fill_synthetic(engine, runs)
    table = build_table(SPEC[3], load_results(engine))
    marks = {m: table.cell(("svhn",), m)["marks"] for m in table.columns}
    assert marks["resnet18"] == []  # the baseline itself
    assert [m["symbol"] for m in marks["gradattn_rope"]] == ["▲"]
    assert [m["symbol"] for m in marks["gradattn_nope"]] == ["▼"]
    assert [m["symbol"] for m in marks["gradattn_learnable"]] == ["n/t"]
    better = marks["gradattn_rope"][0]
    assert better["n"] == 10 and better["mean_diff"] == pytest.approx(0.05, abs=0.01)
    # Bonferroni over the table's three tests; all 10 differences positive: 3 x 2 / 2^10.
    assert better["m"] == 3 and better["p_adjusted"] == pytest.approx(3 * 2 / 2**10)
    assert better["ci_low"] > 0 and marks["gradattn_nope"][0]["ci_high"] < 0
    assert "R▲" in cell_text(table.cell(("svhn",), "gradattn_rope"))


def test_table9_marks_against_three_baselines_and_table8_device(engine):
    rng = np.random.default_rng(1)
    seeds = range(8)
    runs = []
    for model, mean in [("resnet18", 0.60), ("se_resnet18", 0.70), ("cbam_resnet18", 0.80),
                        ("gradattn_rope", 0.75)]:  # fmt: skip
        runs += [
            SyntheticRun(model, "tinyimagenet", s, device="cuda:0", slots=4, provenance=H100,
                         metrics={"top1": float(mean + rng.normal(0, 0.004))})
            for s in seeds
        ]  # fmt: skip
    fill_synthetic(engine, runs)
    tables = {t.number: t for t in build_tables(load_results(engine))}
    marks = tables[9].cell(("tinyimagenet",), "gradattn_rope")["marks"]
    assert {m["baseline"]: m["symbol"] for m in marks} == {
        "resnet18": "▲", "se_resnet18": "▲", "cbam_resnet18": "▼"
    }  # fmt: skip
    info = tables[8].cell(("tinyimagenet",), "gradattn_rope")["info"]
    assert info == "cuda:0 (NVIDIA H100 80GB HBM3), 4 slot(s), n=8"
    # Table 7 covers every dataset with data, although the paper prints Tiny ImageNet only.
    assert ("tinyimagenet", "se_resnet18") not in tables[7].rows
    assert ("tinyimagenet", "gradattn_rope") in tables[7].rows


def test_table6_gap_in_percentage_points_and_table4_pairs(engine):
    fill_synthetic(
        engine,
        grid_runs({("fashionmnist", "resnet18"): 0.64, ("digits", "resnet18"): 0.9},
                  seeds=(1, 2), metrics={"gen_gap_best": 0.1157}),
    )  # fmt: skip
    tables = {t.number: t for t in build_tables(load_results(engine))}
    gap = tables[6].cell(("fashionmnist",), "resnet18")
    assert gap["mean"] == pytest.approx(11.57) and gap["diff"] == pytest.approx(0.0)
    # Table 4: the paper's pairs, plus datasets the paper never ran (the demo's digits).
    assert ("fashionmnist", "resnet18") in tables[4].rows
    assert ("digits", "resnet18") in tables[4].rows
    assert ("svhn", "resnet18") not in tables[4].rows
    ece = tables[4].cell(("fashionmnist", "resnet18"), "ece")
    assert ece["paper"] == pytest.approx(0.193) and ece["mean"] == pytest.approx(0.05)


def test_protocols_never_mix_and_duplicates_keep_newest(engine):
    runs = grid_runs({("svhn", "resnet18"): 0.9}, seeds=(1,))
    runs += grid_runs({("svhn", "resnet18"): 0.8}, seeds=(1,), grid="rerun")
    runs += grid_runs({("svhn", "resnet18"): 0.5}, seeds=(1,), protocol="reference-code")
    fill_synthetic(engine, runs)
    results = load_results(engine)
    with pytest.raises(ValueError, match="one protocol"):
        build_tables(results)
    paper = results[results.protocol == "paper"]
    kept, dropped = dedupe(paper)
    assert dropped == 1 and list(kept["top1"]) == [pytest.approx(0.8)]
    table3 = build_tables(paper)[0]
    assert table3.cell(("svhn",), "resnet18")["mean"] == pytest.approx(80.0)
