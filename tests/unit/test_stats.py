"""harness.report.stats against independent computations (scipy, statsmodels, brute force)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.errors import HarnessError
from harness.report.stats import (
    METRIC_DIRECTIONS,
    compare_cells,
    log_ratio,
    log_to_rel,
    one_sample,
    paired_cell,
    paired_comparison,
    rel_to_log,
    sign_flip_p,
)

A = [0.712, 0.698, 0.731, 0.705, 0.722, 0.690, 0.717]
B = [0.701, 0.699, 0.712, 0.690, 0.719, 0.684, 0.700]


def brute_force_sign_flip(diffs, alternative):
    """Every sign pattern written out, statistic = the mean (not the sum the module uses)."""
    observed = sum(diffs) / len(diffs)
    count = 0
    patterns = list(itertools.product((1, -1), repeat=len(diffs)))
    for signs in patterns:
        stat = sum(s * abs(d) for s, d in zip(signs, diffs, strict=True)) / len(diffs)
        if alternative == "greater":
            count += stat >= observed - 1e-12
        elif alternative == "less":
            count += stat <= observed + 1e-12
        else:
            count += abs(stat) >= abs(observed) - 1e-12
    return count / len(patterns)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_paired_comparison_matches_scipy_and_brute_force(alternative):
    res = paired_comparison(A, B, alternative=alternative, level=0.95)
    ref = sps.ttest_rel(A, B, alternative=alternative)
    diffs = np.subtract(A, B)
    n, mean, sd = len(diffs), diffs.mean(), diffs.std(ddof=1)
    half = sps.t.ppf(0.975, n - 1) * sd / math.sqrt(n)

    assert res.n == 7
    assert res.mean_diff == pytest.approx(mean)
    assert res.sd_diff == pytest.approx(sd)
    assert res.t == pytest.approx(ref.statistic)
    assert res.p_value == pytest.approx(ref.pvalue)
    assert (res.ci_low, res.ci_high) == pytest.approx((mean - half, mean + half))
    assert res.p_permutation == pytest.approx(brute_force_sign_flip(list(diffs), alternative))
    assert res.d_z == pytest.approx(mean / sd)
    assert res.wins == int((diffs > 0).sum()) and res.losses == int((diffs < 0).sum())
    assert res.testable


def test_interval_at_another_level_and_one_sample():
    res = one_sample([0.9, 0.95, 1.0, 0.97], 1.0, alternative="two-sided")
    ref = sps.ttest_1samp([0.9, 0.95, 1.0, 0.97], 1.0)
    assert res.p_value == pytest.approx(ref.pvalue)
    low, high = res.interval(0.99)
    ci = ref.confidence_interval(0.99)
    assert (low, high) == pytest.approx((ci.low - 1.0, ci.high - 1.0))


def test_no_spread_and_too_few_pairs_are_not_testable():
    flat = paired_comparison([1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5])
    assert not flat.testable and math.isnan(flat.p_value)
    assert (flat.ci_low, flat.ci_high) == (0.5, 0.5)  # the difference is known exactly
    assert flat.p_permutation == pytest.approx(1 / 16)  # only the all-positive pattern
    single = paired_comparison([1.0], [0.0])
    assert not single.testable and single.n == 1 and math.isnan(single.ci_low)
    empty = paired_comparison([], [])
    assert empty.n == 0 and math.isnan(empty.mean_diff)


def test_bad_inputs_name_the_problem():
    with pytest.raises(HarnessError, match="equally long"):
        paired_comparison([1.0, 2.0], [1.0])
    with pytest.raises(HarnessError, match="valid: two-sided, greater, less"):
        paired_comparison([1.0, 2.0], [1.0, 1.0], alternative="bigger")


def test_monte_carlo_sign_flip_above_exact_limit_matches_a_convolution():
    rng = np.random.default_rng(5)
    diffs = rng.integers(-3, 9, size=23)  # integers: the exact null is a convolution
    # Distribution of sum(s_i * |d_i|) by dynamic programming over reachable sums.
    counts = {0: 1}
    for d in np.abs(diffs):
        nxt: dict[int, int] = {}
        for total, c in counts.items():
            for step in (int(d), -int(d)):
                nxt[total + step] = nxt.get(total + step, 0) + c
        counts = nxt
    exact = sum(c for total, c in counts.items() if total >= diffs.sum()) / 2 ** len(diffs)
    assert sign_flip_p(diffs, "greater") == pytest.approx(exact, abs=0.005)


def test_sign_flip_tolerance_is_scale_free_and_nan_gives_no_p():
    diffs = [0.1, 0.2, -0.3, 0.4, 0.1, -0.1, 0.2]  # ties in |d|: equal sums from float sums
    for alternative in ("greater", "less", "two-sided"):
        fraction = sign_flip_p(diffs, alternative)
        assert sign_flip_p([d * 100 for d in diffs], alternative) == fraction
        assert sign_flip_p([d / 1000 for d in diffs], alternative) == fraction
        assert fraction == pytest.approx(brute_force_sign_flip(diffs, alternative))
    assert math.isnan(sign_flip_p([0.1, float("nan"), 0.2]))
    assert math.isnan(sign_flip_p([0.1, float("inf")]))


def _frame(rows):
    return pd.DataFrame(rows, columns=["job_id", "dataset", "model", "seed", "split_seed",
                                       "top1", "ece"])  # fmt: skip


def test_paired_cell_matches_on_seed_and_split_and_orients():
    rows = [
        (1, "svhn", "resnet18", 0, 0, 0.90, 0.10),
        (2, "svhn", "resnet18", 1, 0, 0.92, 0.08),
        (3, "svhn", "resnet18", 2, 0, 0.91, 0.09),
        (4, "svhn", "gradattn_rope", 2, 0, 0.95, 0.05),  # listed out of order on purpose
        (5, "svhn", "gradattn_rope", 0, 0, 0.93, 0.07),
        (6, "svhn", "gradattn_rope", 1, 1, 0.99, 0.01),  # other split: no partner
        (7, "svhn", "gradattn_rope", 0, 0, 0.94, 0.06),  # re-run of seed 0: the later job counts
        (8, "cifar10", "gradattn_rope", 1, 0, 0.50, 0.50),
    ]
    df = _frame(rows)
    res = paired_cell(df, "top1", "svhn", "gradattn_rope", "resnet18")
    assert res.n == 2 and res.diffs == pytest.approx((0.94 - 0.90, 0.95 - 0.91))
    assert res.job_ids == ((7, 1), (4, 3))
    # ECE: lower is better, so "candidate better" = baseline - candidate > 0.
    ece = paired_cell(df, "ece", "svhn", "gradattn_rope", "resnet18")
    assert ece.diffs == pytest.approx((0.10 - 0.06, 0.09 - 0.05))
    raw = paired_cell(df, "ece", "svhn", "gradattn_rope", "resnet18", oriented=False)
    assert raw.diffs == pytest.approx((0.06 - 0.10, 0.05 - 0.09))
    logged = paired_cell(df, "ece", "svhn", "gradattn_rope", "resnet18", oriented=False,
                         scale="log")  # fmt: skip
    assert logged.diffs == pytest.approx((math.log(0.6), math.log(0.05 / 0.09)))
    with pytest.raises(HarnessError, match="no column 'f1'"):
        paired_cell(df, "f1", "svhn", "gradattn_rope", "resnet18")
    assert METRIC_DIRECTIONS["ece"] == "lower" and METRIC_DIRECTIONS["top1"] == "higher"


def test_log_ratio_helpers():
    assert log_ratio([0.65], [1.0]) == pytest.approx([math.log(0.65)])
    assert log_to_rel(rel_to_log(-0.35)) == pytest.approx(-0.35)
    with pytest.raises(ValueError, match="positive"):
        log_ratio([0.1, -0.02], [0.2, 0.3])


def test_compare_cells_one_family_per_table():
    rng = np.random.default_rng(1)
    rows, job = [], 0
    for dataset in ("svhn", "cifar10"):
        for seed in range(8):
            for model, effect in (("resnet18", 0.0), ("gradattn_rope", 0.02),
                                  ("gradattn_nope", 0.0)):  # fmt: skip
                job += 1
                rows.append((job, dataset, model, seed, 0, 0.8 + effect + rng.normal(0, 0.01),
                             0.1))  # fmt: skip
    rows.append((job + 1, "pcam", "resnet18", 0, 0, 0.8, 0.1))  # a dataset without partners
    table = compare_cells(_frame(rows), "top1", "resnet18", ["gradattn_rope", "gradattn_nope"])
    assert len(table) == 6 and set(table["m"]) == {4}  # cells without pairs are not tested
    assert table.loc[table["dataset"] == "pcam", "n"].tolist() == [0, 0]
    assert all(len(r.diffs) == 8 for r in table["result"] if r.n)
