"""Invariants of the decision procedure over random per-seed data (hypothesis).

Each property is what a verdict's reason promises a reader about the numbers printed beside it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from harness.report.decision import decide
from harness.report.signed_rank import adjusted_p, critical_count, signed_rank, upper_tail
from harness.report.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    NEGLIGIBLE,
    SUPPORTED,
    TOO_FEW,
    UNTESTABLE,
    VERDICT_OF,
    classify,
    directional_region,
    level_region,
    not_worse_region,
    point_region,
    range_region,
)

DELTA = {"diff": 0.005, "log": math.log(1.1)}
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def parts(draw):
    """(diffs, m, region, delta, stated): one part of a family, raw or log scale."""
    scale = draw(st.sampled_from(["diff", "log"]))
    delta = DELTA[scale]
    n = draw(st.integers(1, 14))
    m = draw(st.integers(1, 30))
    centre = draw(st.floats(-6, 6)) * delta
    spread = draw(st.floats(0.01, 4)) * delta
    seed = draw(st.integers(0, 2**31))
    diffs = np.random.default_rng(seed).normal(centre, spread, n)
    if draw(st.booleans()):  # ties and exact zeros, as accuracies on a fixed test set give
        diffs = np.round(diffs / delta * 2) * delta / 2
    kind = draw(st.sampled_from(["point", "zero", "range", "directional", "level", "not_worse"]))
    value = draw(st.floats(-8, 8).filter(lambda v: abs(v) > 0.05)) * delta
    if kind == "point":
        region, stated = point_region(value, delta), (value, value)
    elif kind == "zero":
        region, stated = point_region(0.0, delta), (0.0, 0.0)
    elif kind == "range":
        other = value + draw(st.floats(0.2, 6)) * delta * np.sign(value)
        region = range_region(value, other)
        stated = (region.low, region.high)
    elif kind == "directional":
        region, stated = directional_region(np.sign(value), delta), None
    elif kind == "level":
        region, stated = level_region(delta), (0.0, 0.0)
    else:
        region, stated = not_worse_region(delta), None
    return diffs, m, region, delta, stated


@FAST
@given(parts())
def test_supported_effect_excludes_zero_on_the_claimed_side(part):
    diffs, m, region, delta, _ = part
    dec = decide(diffs, m, region, delta)
    if dec.verdict == SUPPORTED and not region.contains_zero:
        assert (dec.ci_low > 0) if region.sign > 0 else (dec.ci_high < 0)
        assert dec.p_adjusted <= 0.05


@FAST
@given(parts())
def test_contradicted_puts_the_stated_value_outside_the_interval(part):
    diffs, m, region, delta, stated = part
    dec = decide(diffs, m, region, delta)
    if dec.verdict == CONTRADICTED and stated is not None:
        low, high = stated
        assert high < dec.ci_low or low > dec.ci_high
    if dec.code == NEGLIGIBLE:
        assert -delta <= dec.ci_low and dec.ci_high <= delta * (1 + 1e-9)


@FAST
@given(parts())
def test_interval_and_adjusted_p_never_disagree(part):
    diffs, m, region, delta, _ = part
    dec = decide(diffs, m, region, delta)
    if dec.verdict != UNTESTABLE:
        excludes = dec.ci_low > 0 or dec.ci_high < 0
        assert excludes == (dec.p_adjusted <= 0.05)


@FAST
@given(parts(), st.integers(0, 2**31))
def test_n_too_small_means_no_outcome_could_decide(part, seed):
    diffs, m, region, delta, _ = part
    dec = decide(diffs, m, region, delta)
    if dec.code == TOO_FEW:
        # The most extreme outcomes at this n: every pair far on one side, or at random.
        rng = np.random.default_rng(seed)
        for other in (np.full(diffs.size, 50 * delta), np.full(diffs.size, -50 * delta),
                      rng.normal(0, 10 * delta, diffs.size)):  # fmt: skip
            assert decide(other, m, region, delta).code == TOO_FEW
        assert dec.seeds_needed is not None and dec.seeds_needed > diffs.size


@FAST
@given(parts(), st.sampled_from([100.0, 0.01, 1000.0]))
def test_units_and_mirroring_never_change_a_verdict(part, factor):
    diffs, m, region, delta, _ = part
    dec = decide(diffs, m, region, delta)
    scaled = type(region)(region.low * factor, region.high * factor, region.target * factor,
                          region.bounded)  # fmt: skip
    assert decide(diffs * factor, m, scaled, delta * factor).verdict == dec.verdict
    mirrored = decide(-diffs, m, region.mirrored(), delta)
    swapped = {"above": "below", "below": "above"}  # the only codes that name a side
    assert (mirrored.verdict, swapped.get(mirrored.code, mirrored.code)) == (dec.verdict, dec.code)
    if dec.verdict != UNTESTABLE:
        assert mirrored.ci_low == pytest.approx(-dec.ci_high)
        assert mirrored.p_adjusted == pytest.approx(dec.p_adjusted)


@FAST
@given(parts(), st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(0, 13))
def test_non_finite_values_are_untestable_without_a_p(part, bad, where):
    diffs, m, region, delta, _ = part
    diffs = diffs.copy()
    diffs[where % diffs.size] = bad
    dec = decide(diffs, m, region, delta)
    assert dec.verdict == UNTESTABLE and "not finite" in dec.reason
    assert math.isnan(dec.p_adjusted) and math.isnan(dec.ci_low)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=11),
       st.integers(1, 12))  # fmt: skip
def test_exact_null_and_interval_match_brute_force(values, m):
    z = np.round(np.asarray(values), 3)
    n = z.size
    # Null distribution of the number of positive Walsh averages: all 2^n sign patterns of
    # the ranks 1..n (the signed-rank statistic W+ equals that count without ties).
    sums = [sum(r for r, s in zip(range(1, n + 1), signs, strict=True) if s)
            for signs in itertools.product((0, 1), repeat=n)]  # fmt: skip
    tail = upper_tail(n)
    for c in range(n * (n + 1) // 2 + 1):
        assert tail[c] == pytest.approx(np.mean(np.asarray(sums) >= c))
    test = signed_rank(z, m, 0.05)
    walsh = sorted((z[i] + z[j]) / 2 for i in range(n) for j in range(i, n))
    assert test.t_plus == sum(w > 0 for w in walsh)
    assert test.p_adjusted == adjusted_p(n, m, max(test.t_plus, test.t_minus))
    c = critical_count(n, m, 0.05)
    if c is not None:  # the interval is the order statistics the critical count names
        k = len(walsh) - c + 1
        assert (test.ci_low, test.ci_high) == (walsh[k - 1], walsh[len(walsh) - k])
    if len(set(np.abs(z))) == n and (z != 0).all() and n >= 2:
        ref = sps.wilcoxon(z, method="exact").pvalue  # no ties: scipy's exact p
        assert test.p_two == pytest.approx(ref)


def _independent_power(observed, total, effect, sd, region, m, draws=1000, seed=99):
    """Decision probability with another RNG and a plain loop: an independent check."""
    rng = np.random.default_rng(seed)
    decided = 0
    for _ in range(draws):
        z = np.concatenate([observed, rng.normal(effect, sd, total - observed.size)])
        walsh = np.sort([(z[i] + z[j]) / 2 for i in range(z.size) for j in range(i, z.size)])
        c = critical_count(z.size, m, 0.05)
        k = walsh.size - c + 1
        code = str(classify(walsh[k - 1], walsh[walsh.size - k], region))
        decided += VERDICT_OF[code] in (SUPPORTED, CONTRADICTED)
    return decided / draws


@pytest.mark.parametrize(
    ("centre", "spread", "n", "m", "claim"),
    [
        (1.5, 2.0, 8, 1, 2.0),  # a smaller effect, little evidence
        (1.0, 2.5, 10, 3, 2.0),  # noisy, a family of 3
        (0.3, 0.8, 12, 8, 1.0),  # log-scale-sized effect in a family of 8
    ],
)
def test_inconclusive_asks_for_seeds_that_decide_with_80_percent_power(
    centre, spread, n, m, claim
):
    delta = 0.005
    diffs = (centre + spread * np.random.default_rng(n).standard_normal(n)) * delta
    region = point_region(claim * delta, delta)
    dec = decide(diffs, m, region, delta)
    assert dec.verdict == INCONCLUSIVE and dec.seeds_needed is not None
    needed = dec.seeds_needed
    assert needed > n
    z = np.round(diffs / delta, 9)
    unit = region.in_units(delta)
    sd = float(z.std(ddof=1))
    se = 3 * math.sqrt(0.8 * 0.2 / 1000) + 0.02  # Monte Carlo error of both simulations
    assert _independent_power(z, needed, unit.target, sd, unit, m) >= 0.8 - se
    if needed - 1 > n:
        assert _independent_power(z, needed - 1, unit.target, sd, unit, m) < 0.8 + se
