"""Claim verdicts: synthetic per-seed results with a known effect reach the expected verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from synthetic_db import fill_synthetic, grid_runs, seed_offsets

from harness.report.claims import VERDICT_RULE, evaluate_claims
from harness.report.verdicts import VERDICTS
from harness.store.engine import make_engine

BASE = 0.70


def frame(cells: dict[tuple[str, str], list[float]], metric: str = "top1", protocol="paper"):
    """One row per (dataset, model, seed) with the given per-seed values of `metric`."""
    rows, job = [], 0
    for (dataset, model), values in cells.items():
        for seed, value in enumerate(values):
            job += 1
            rows.append({"job_id": job, "dataset": dataset, "model": model, "seed": seed,
                         "split_seed": 0, "protocol": protocol, "device": "cpu", "slots": 1,
                         metric: float(value)})  # fmt: skip
    return pd.DataFrame(rows)


def pair(effect: float, sd: float, n: int) -> tuple[list[float], list[float]]:
    """Baseline and candidate per seed: differences have mean `effect` and SD `sd` exactly."""
    baseline = BASE + 0.02 * np.sin(np.arange(n))  # seeds differ; pairing removes it
    return list(baseline), list(baseline + effect + sd * seed_offsets(n))


def point_claim(value: float, dataset: str = "svhn", **extra) -> dict:
    return {"id": "T", "text": "test claim", "kind": "point", "metric": "top1",
            "dataset": dataset, "baseline": "resnet18", "candidate": "gradattn_rope",
            "value": value, "unit": "pp", "source": "test", **extra}  # fmt: skip


def verdict_for(claim: dict, df: pd.DataFrame):
    (result,) = evaluate_claims(df, "paper", claims=[claim])
    return result


@pytest.mark.parametrize(
    ("effect_pp", "sd_pp", "n", "claimed_pp", "verdict", "short"),
    [
        (2.0, 0.5, 8, 2.0, "SUPPORTED", "effect as claimed"),
        (-2.0, 0.5, 8, 2.0, "CONTRADICTED", "opposite of the claim"),
        (2.0, 0.3, 8, 11.0, "CONTRADICTED", "smaller than claimed"),
        (5.0, 0.3, 8, 0.5, "CONTRADICTED", "larger than claimed"),
        (0.0, 0.1, 8, 3.0, "CONTRADICTED", "no meaningful effect"),
        (1.0, 3.0, 8, 2.0, "INCONCLUSIVE", "needs more seeds"),
        (2.0, 0.5, 3, 2.0, "UNTESTABLE", "n too small"),
        (0.0, 0.1, 8, 0.0, "SUPPORTED", "as claimed"),  # "matches"
        (3.0, 0.1, 8, 0.0, "CONTRADICTED", "above the claimed range"),  # claimed to match
    ],
)
def test_point_claim_verdicts(effect_pp, sd_pp, n, claimed_pp, verdict, short):
    base, cand = pair(effect_pp / 100, sd_pp / 100, n)
    result = verdict_for(
        point_claim(claimed_pp),
        frame({("svhn", "resnet18"): base, ("svhn", "gradattn_rope"): cand}),
    )
    assert result.verdict == verdict
    (part,) = result.parts
    assert part["short"] == short and result.reason == part["reason"]
    assert part["n"] == n and part["m"] == 1
    assert part["mean_diff"] == pytest.approx(effect_pp / 100)
    ref = sps.wilcoxon(np.subtract(cand, base), method="exact")  # m = 1: no adjustment
    assert part["p_adjusted"] == pytest.approx(ref.pvalue)


def test_inconclusive_asks_for_more_seeds_than_it_has():
    base, cand = pair(0.01, 0.03, 8)
    result = verdict_for(
        point_claim(2.0), frame({("svhn", "resnet18"): base, ("svhn", "gradattn_rope"): cand})
    )
    (part,) = result.parts
    assert part["verdict"] == "INCONCLUSIVE" and part["seeds_needed"] > 8
    assert f"about {part['seeds_needed']} seeds would decide it" in part["reason"]


def test_no_data_is_untestable_and_baseline_check_compares_with_the_paper():
    base, cand = pair(0.02, 0.005, 8)
    df = frame({("svhn", "resnet18"): base, ("svhn", "gradattn_rope"): cand})
    missing = verdict_for(point_claim(2.0, dataset="pcam"), df)
    assert (missing.verdict, missing.reason) == ("UNTESTABLE", "no paired runs")
    assert missing.baseline_check == "resnet18 top1 vs paper: no runs for pcam"
    found = verdict_for(point_claim(2.0), df)
    mean = np.mean(base)
    assert found.baseline_check.startswith("resnet18 top1 vs paper: svhn paper 97.98%")
    assert f"ours {mean * 100:.2f} +-" in found.baseline_check
    assert f"not reproduced ({(mean - 0.9798) * 100:+.2f} pp)" in found.baseline_check
    at_paper = frame({("svhn", "resnet18"): [0.9798 + 0.001 * o for o in seed_offsets(8)]})
    assert verdict_for(point_claim(2.0), at_paper).baseline_check.endswith(": reproduced")


def test_count_claim_with_best_variant_selection_and_sign_test():
    cells, n = {}, 8
    for dataset, effects in {"svhn": (0.02, 0.0), "cifar10": (0.03, 0.01),
                             "pcam": (-0.03, -0.02)}.items():  # fmt: skip
        base, rope = pair(effects[0], 0.004, n)
        cells[(dataset, "resnet18")] = base
        cells[(dataset, "gradattn_rope")] = rope
        cells[(dataset, "gradattn_nope")] = pair(effects[1], 0.004, n)[1]
    df = frame(cells)
    claim = {"id": "K", "text": "wins on 2 of 3", "kind": "count", "metric": "top1",
             "baseline": "resnet18", "candidate": "best_gradattn_variant",
             "datasets": ["svhn", "cifar10", "pcam"], "at_least": 2}  # fmt: skip
    result = verdict_for(claim, df)
    assert result.verdict == "SUPPORTED"
    by_dataset = {p["dataset"]: p for p in result.parts}
    assert by_dataset["pcam"]["candidate"] == "gradattn_nope"  # the better of two losers
    assert by_dataset["pcam"]["verdict"] == "CONTRADICTED"
    assert by_dataset["svhn"]["m"] == 6  # Bonferroni over every dataset x variant cell
    assert "best mean" in by_dataset["svhn"]["selection"]
    assert any("optimistic" in note for note in result.notes)
    sign = result.extra["sign_test"]
    assert (sign["datasets_better"], sign["datasets_compared"]) == (2, 3)
    assert sign["p_value"] == pytest.approx(sps.binomtest(2, 3, 0.5, "greater").pvalue)
    assert "sign test over datasets: 2 of 3 better, p = 0.5" in result.reason
    assert result.claimed.endswith("for the best of 3 variants, chosen on these runs (optimistic)")
    stricter = verdict_for({**claim, "at_least": 3}, df)
    assert stricter.verdict == "CONTRADICTED" and "at most 2 of 3" in stricter.reason
    wider = {**claim, "datasets": ["svhn", "cifar10", "pcam", "bloodmnist"], "at_least": 3}
    wider = verdict_for(wider, df)
    assert wider.verdict == "UNTESTABLE"
    assert wider.reason.startswith("2 of 4 shown better; 1 without data")


def test_relative_claim_on_log_ratios():
    n = 8
    base = list(0.10 + 0.01 * np.sin(np.arange(n)))
    cand = list(np.array(base) * np.exp(np.log(0.60) + 0.02 * seed_offsets(n)))  # 40% lower
    df = frame({("svhn", "resnet18"): base, ("svhn", "gradattn_rope"): cand}, metric="ece")
    claim = {"id": "R", "text": "ECE down 35-45%", "kind": "every", "metric": "ece",
             "direction": "lower", "low": 0.35, "high": 0.45, "unit": "rel",
             "pairs": [{"dataset": "svhn", "baseline": "resnet18",
                        "candidate": "gradattn_rope"}]}  # fmt: skip
    result = verdict_for(claim, df)
    assert result.verdict == "SUPPORTED"
    assert result.parts[0]["estimate"].startswith("-40.0%")
    assert result.claimed == "-45.0% to -35.0%"
    # Claiming a 10-20% reduction is contradicted: ours is larger than claimed.
    small = verdict_for({**claim, "low": 0.10, "high": 0.20}, df)
    assert (small.verdict, small.parts[0]["short"]) == ("CONTRADICTED", "larger than claimed")


def test_level_claim_params_and_epoch_time():
    n = 8
    df = frame({("svhn", "resnet18"): [1.0] * n, ("pcam", "resnet18"): [0.9] * n},
               metric="ghs_1e-6_1e1")  # fmt: skip
    level = {"id": "L", "text": "GHS 1", "kind": "every", "metric": "ghs_1e-6_1e1",
             "model": "resnet18", "datasets": ["svhn"], "value": 1.0, "unit": "abs"}  # fmt: skip
    assert verdict_for(level, df).verdict == "SUPPORTED"
    both = verdict_for({**level, "datasets": ["svhn", "pcam"]}, df)
    assert both.verdict == "CONTRADICTED"
    assert {p["dataset"]: p["short"] for p in both.parts}["pcam"] == "below the claimed range"

    params = frame({("svhn", "resnet18"): [11.2e6] * 2, ("svhn", "gradattn_rope"): [12.8e6] * 2,
                    ("svhn", "gradattn_nope"): [11.05e6] * 2}, metric="params")  # fmt: skip
    claim = {"id": "P", "text": "+14.3%", "kind": "point", "metric": "params",
             "baseline": "resnet18", "candidate": "each_gradattn_variant", "value": 0.143,
             "unit": "rel"}  # fmt: skip
    result = verdict_for(claim, params)
    parts = {p["candidate"]: p for p in result.parts}
    assert parts["gradattn_rope"]["verdict"] == "SUPPORTED"
    assert parts["gradattn_rope"]["mean_diff"] == pytest.approx(12.8 / 11.2 - 1)
    assert (parts["gradattn_nope"]["verdict"], parts["gradattn_nope"]["short"]) == (
        "CONTRADICTED", "smaller than claimed")  # fmt: skip
    assert parts["gradattn_learnable"]["reason"] == "no data"

    base = list(10 + 0.2 * np.sin(np.arange(n)))
    slow = list(np.array(base) * 1.3 * np.exp(0.01 * seed_offsets(n)))
    same = list(np.array(base) * np.exp(0.01 * seed_offsets(n)))
    timing = {"id": "S", "text": "not consistently slower", "kind": "directional",
              "metric": "epoch_seconds", "baseline": "resnet18",
              "candidate": "each_gradattn_variant"}  # fmt: skip
    mixed = frame({("svhn", "resnet18"): base, ("svhn", "gradattn_rope"): slow,
                   ("svhn", "gradattn_nope"): same}, metric="epoch_seconds")  # fmt: skip
    result = verdict_for(timing, mixed)
    assert result.verdict == "SUPPORTED" and any("device" in note for note in result.notes)
    assert result.reason.endswith("device-dependent (measured on cpu with 1 job(s) per device)")
    all_slow = frame({("svhn", "resnet18"): base, ("svhn", "gradattn_rope"): slow,
                      ("svhn", "gradattn_nope"): slow, ("svhn", "gradattn_learnable"): slow},
                     metric="epoch_seconds")  # fmt: skip
    result = verdict_for(timing, all_slow)
    assert result.verdict == "CONTRADICTED"
    assert {p["short"] for p in result.parts} == {"above the claimed range"}


def test_every_paper_claim_gets_a_verdict_and_protocols_do_not_mix():
    rng = np.random.default_rng(3)
    rows, job = [], 0
    for dataset in ("tinyimagenet", "svhn", "fashionmnist"):
        for seed in range(4):
            for model in ("resnet18", "gradattn_nope", "gradattn_learnable", "gradattn_rope",
                          "se_resnet18", "cbam_resnet18"):  # fmt: skip
                job += 1
                rows.append({"job_id": job, "dataset": dataset, "model": model, "seed": seed,
                             "split_seed": 0, "protocol": "paper", "device": "cpu", "slots": 1,
                             "top1": 0.6 + rng.normal(0, 0.01), "f1_macro": 0.5, "ece": 0.1,
                             "gen_gap": 0.05, "ghs_1e-6_1e1": 1.0, "params": 11.2e6,
                             "epoch_seconds": 10.0, "best_epoch": 5})  # fmt: skip
    df = pd.DataFrame(rows)
    verdicts = evaluate_claims(df, "paper")
    assert [v.id for v in verdicts] == [f"C{i}" for i in range(1, 20)]
    assert all(v.verdict in VERDICTS and v.baseline_check for v in verdicts)
    # Four seeds cannot reach alpha with the exact test: the comparisons are untestable.
    assert {v.id: v.verdict for v in verdicts}["C3"] == "UNTESTABLE"
    others = evaluate_claims(df, "reference-code")
    assert all(v.verdict == "UNTESTABLE" for v in others)
    assert "Bonferroni" in VERDICT_RULE and "SUPPORTED" in VERDICT_RULE


def test_claims_from_a_real_database(sqlite_url):
    from harness.report.load import load_results  # imports torch (GHS); only this test needs it

    engine = make_engine(sqlite_url)
    seeds = range(8)
    runs = grid_runs({("svhn", "resnet18"): 0.90}, seeds=seeds, sd=0.004)
    runs += grid_runs({("svhn", "gradattn_rope"): 0.93}, seeds=seeds, sd=0.009)
    paper_ids = fill_synthetic(engine, runs)
    # The same cells under another protocol, with the opposite effect: must not leak in.
    other = grid_runs({("svhn", "resnet18"): 0.95, ("svhn", "gradattn_rope"): 0.85},
                      seeds=seeds, sd=0.004, protocol="reference-code")  # fmt: skip
    fill_synthetic(engine, other)
    df = load_results(engine)
    result = verdict_for(point_claim(3.0), df)
    assert result.verdict == "SUPPORTED"
    (part,) = result.parts
    assert part["n"] == 8 and part["mean_diff"] == pytest.approx(0.03)
    assert sorted(part["job_ids"]) == sorted(paper_ids)
    (ref,) = evaluate_claims(df, "reference-code", claims=[point_claim(3.0)])
    assert (ref.verdict, ref.parts[0]["short"]) == ("CONTRADICTED", "opposite of the claim")
