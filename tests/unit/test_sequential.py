"""The sequential procedure (harness.report.sequential): error over all looks, and its cost.

The simulated audits draw their differences with their own seeds, apart from the null paths
the boundaries come from, and decide every look with the module's own `intervals`, `classify`
and boundaries: the code under test, batched over audits. `decide_sequential` is checked to
give the same first look and verdict on a sample of the same audits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.report.power import decision_power
from harness.report.sequential import (
    Design,
    boundaries,
    decide_sequential,
    first_decision,
    intervals,
)
from harness.report.signed_rank import critical_count
from harness.report.verdicts import (
    ALPHA,
    CONTRADICTED,
    DECIDED,
    INCONCLUSIVE,
    SUPPORTED,
    classify,
    directional_region,
)

AUDITS = 2000
HORIZON = 20
PARTS = 4  # one family: every part at alpha / 4
REGION = directional_region(1.0, 1.0)  # "better by at least one SESOI", SESOI units


def simulate(z: np.ndarray, cuts: tuple[int | None, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(first deciding look or horizon + 1, code there) for each row of z (audits x parts, N)."""
    rows, horizon = z.shape[0], z.shape[1]
    look = np.full(rows, horizon + 1)
    code = np.full(rows, "", dtype=object)
    for n in range(1, horizon + 1):
        c = cuts[n - 1]
        if c is None:
            continue
        open_rows = look > horizon
        low, high = intervals(z[open_rows, :n], c)
        codes = classify(low, high, REGION)
        hit = np.isin(codes, DECIDED)
        idx = np.flatnonzero(open_rows)[hit]
        look[idx], code[idx] = n, codes[hit]
    return look, code


def null_audits(seed: int, ties: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((AUDITS * PARTS, HORIZON)) * 3.0
    if ties:  # differences of accuracies on a small test set: a coarse grid with many zeros
        z = np.round(z / 1.5) * 1.5 + 0.0
    return z


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
@pytest.mark.parametrize("ties", [False, True])
def test_family_wise_false_positives_at_most_alpha_over_all_looks(spending: str, ties: bool) -> None:
    cuts = boundaries(HORIZON, PARTS, ALPHA, spending)
    look, code = simulate(null_audits(11 if ties else 12, ties), cuts)
    # True effect 0: SUPPORTED ("better") is a false positive; a family errs if any part does.
    false = (code == "effect").reshape(AUDITS, PARTS).any(axis=1)
    rate = false.mean()
    mc_error = 3 * math.sqrt(ALPHA * (1 - ALPHA) / AUDITS)
    assert rate <= ALPHA + mc_error, f"{spending}: family-wise FPR {rate:.4f}"
    # The interval misses the true centre 0 at the stopping look no more often either.
    assert np.isin(code, ["effect", "opposite"]).reshape(AUDITS, PARTS).any(axis=1).mean() <= (
        ALPHA + mc_error)  # fmt: skip


def test_the_naive_design_that_peeks_with_the_fixed_interval_inflates_errors() -> None:
    # The control that shows the check can fail: the fixed alpha/m interval at every look.
    fixed = tuple(critical_count(n, PARTS, ALPHA) for n in range(1, HORIZON + 1))
    _, code = simulate(null_audits(13), fixed)
    rate = np.isin(code, ["effect", "opposite"]).reshape(AUDITS, PARTS).any(axis=1).mean()
    assert rate > ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / AUDITS), rate  # 0.097 here


def fixed_n_for_power(effect: float, sd: float, power: float) -> int:
    for n in range(1, 200):
        if critical_count(n, 1, ALPHA) is None:
            continue
        if decision_power(np.empty(0), n, effect, sd, REGION, 1, ALPHA, draws=4000) >= power:
            return n
    raise AssertionError("no fixed n reaches that power")


@pytest.mark.parametrize(("effect", "spending", "horizon"), [
    (3.0, "obrien-fleming", 20), (3.0, "pocock", 20), (2.0, "obrien-fleming", 30),
])  # fmt: skip
def test_expected_seeds_below_a_fixed_design_of_the_same_power(
    effect: float, spending: str, horizon: int
) -> None:
    # Differences with SD 3 SESOI and a true effect of `effect` SESOI (1 SD, 2/3 SD), m = 1.
    rng = np.random.default_rng(21)
    z = np.round(effect + 3.0 * rng.standard_normal((AUDITS, horizon)), 9) + 0.0
    cuts = boundaries(horizon, 1, ALPHA, spending)
    look, code = simulate(z, cuts)
    decided = look <= horizon
    power = float(decided.mean())
    expected_seeds = float(np.minimum(look, horizon).mean())
    n_fixed = fixed_n_for_power(effect, 3.0, power)
    assert expected_seeds < n_fixed, (power, expected_seeds, n_fixed)


def test_boundaries_are_never_looser_than_the_fixed_test() -> None:
    for spending in ("obrien-fleming", "pocock"):
        cuts = boundaries(HORIZON, PARTS, ALPHA, spending)
        for n, c in enumerate(cuts, start=1):
            fixed = critical_count(n, PARTS, ALPHA)
            assert c is None or (fixed is not None and c >= fixed)
        assert cuts[0] is None and cuts[-1] is not None
    # One look is the fixed design: the same count at the horizon.
    assert boundaries(12, 3, ALPHA, "obrien-fleming")[-1] == critical_count(12, 3, ALPHA) or (
        boundaries(1, 3, ALPHA, "obrien-fleming") == (None,))  # fmt: skip


def test_decide_sequential_matches_the_batched_scan() -> None:
    z = null_audits(14)[:40] + 2.0
    cuts = boundaries(HORIZON, PARTS, ALPHA, "obrien-fleming")
    looks, _ = simulate(z, cuts)
    design = Design(HORIZON)
    for row, look in zip(z, looks, strict=True):
        dec = decide_sequential(row, PARTS, REGION, 1.0, design, fmt=str, claimed="c")
        assert (dec.decided_at or HORIZON + 1) == look
        assert first_decision(row, cuts, REGION)[0] == dec.decided_at


def test_a_decided_part_keeps_its_verdict_and_look_when_more_seeds_arrive() -> None:
    rng = np.random.default_rng(5)
    z = 4.0 + rng.standard_normal(HORIZON)
    design = Design(HORIZON)
    first = decide_sequential(z[:12], 1, REGION, 1.0, design, fmt=str, claimed="c")
    later = decide_sequential(z, 1, REGION, 1.0, design, fmt=str, claimed="c")
    assert first.verdict == SUPPORTED and first.decided_at is not None
    assert (later.verdict, later.decided_at, later.ci_low) == (first.verdict, first.decided_at,
                                                               first.ci_low)  # fmt: skip
    assert f"decided at look {first.decided_at} of at most {HORIZON}" in first.reason


def test_undecided_part_says_how_many_seeds_and_the_horizon() -> None:
    z = np.array([0.5, -0.3, 1.1, 0.2, -0.6, 0.9])
    dec = decide_sequential(z, 1, REGION, 1.0, Design(HORIZON), fmt=str, claimed="c")
    assert dec.verdict in (INCONCLUSIVE, "UNTESTABLE") and dec.decided_at is None
    full = decide_sequential(np.tile(z, 4), 1, REGION, 1.0, Design(len(z) * 2), fmt=str,
                             claimed="c")  # fmt: skip
    assert full.n == len(z) * 2  # pairs beyond the horizon are not used
    assert full.verdict in (CONTRADICTED, INCONCLUSIVE, SUPPORTED)


def test_bad_designs_are_refused() -> None:
    with pytest.raises(HarnessError, match="unknown spending function 'linear'; valid"):
        Design(10, "linear")
    with pytest.raises(HarnessError, match="must be 1..50"):
        Design(0)
