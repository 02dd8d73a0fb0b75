"""The sign-flip test for any n (harness.report.sign_flip) against brute-force enumeration."""

from __future__ import annotations

import numpy as np
import pytest

from harness.report.sign_flip import sign_flip
from harness.report.stats import sign_flip_p


def brute(d: np.ndarray, alternative: str) -> float:
    observed, tol = d.sum(), 1e-9 * np.abs(d).sum()
    # Every pattern as a row of +-1 (from the bits of 0 .. 2^n - 1): the definition itself.
    bits = (np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1
    sums = (1 - 2 * bits) @ np.abs(d)
    if alternative == "greater":
        return float(np.mean(sums >= observed - tol))
    if alternative == "less":
        return float(np.mean(sums <= observed + tol))
    return float(np.mean(np.abs(sums) >= abs(observed) - tol))


def without_enumeration(d: np.ndarray, alternative: str):
    """sign_flip with enumeration switched off, to compare the grid methods on small n."""
    from harness.report import sign_flip as module

    limit = module.ENUMERATION_MAX_N
    try:
        module.ENUMERATION_MAX_N = 0
        return sign_flip(d, alternative)
    finally:
        module.ENUMERATION_MAX_N = limit


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
@pytest.mark.parametrize("n", [1, 5, 12, 17])
def test_enumeration_equals_brute_force(n: int, alternative: str) -> None:
    d = np.random.default_rng(n).normal(0.3, 1.0, n)
    assert sign_flip(d, alternative).p == pytest.approx(brute(d, alternative), abs=1e-12)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
@pytest.mark.parametrize("seed", range(4))
def test_the_exact_grid_equals_enumeration_where_both_apply(seed: int, alternative: str) -> None:
    # Accuracy differences on a 360-image test set: multiples of 1/360, zeros and ties included.
    # The grid method is forced (enumeration switched off) to compare the two on one input.
    rng = np.random.default_rng(seed)
    d = rng.integers(-12, 15, 16) / 360
    grid = without_enumeration(d, alternative)
    assert grid.method == "exact grid 1/360" and grid.error == 0.0
    assert grid.p == pytest.approx(brute(d, alternative), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("alternative", ["greater", "two-sided"])
def test_continuous_data_get_a_conservative_bound_within_its_stated_error(alternative) -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(0.4, 1.0, 16)
    bound = without_enumeration(d, alternative)
    exact = brute(d, alternative)
    assert bound.method == "rounded grid" and 0 < bound.error < 0.01
    assert exact - 1e-12 <= bound.p <= exact + bound.error + 1e-12


def test_large_n_is_exact_on_a_grid_and_fast_enough_to_use_per_cell() -> None:
    # 125 pairs (4,000 runs over 32 cells): far past enumeration; differences on a 10,000-image
    # test set. Cross-checked against the normal approximation of the same randomisation law.
    rng = np.random.default_rng(9)
    d = rng.integers(-150, 200, 125) / 10_000
    res = sign_flip(d, "greater")
    assert res.method == "exact grid 1/10000" and res.error == 0.0
    z = d.sum() / np.sqrt((d**2).sum())
    from scipy.stats import norm

    assert res.p == pytest.approx(norm.sf(z), abs=0.01)
    assert sign_flip_p(d, "greater") == res.p
