"""The power simulation's shortcut decides exactly what the rule decides: `power.decided`
(two counts of Walsh averages per draw) against classify(batch_interval(...)) row by row,
with data on a coarse grid so that averages fall exactly on the region's edges, 0 and +-1."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.report.power import decided, decision_power
from harness.report.signed_rank import batch_interval, walsh_averages
from harness.report.verdicts import DECIDED, Region, classify

REGIONS = [
    Region(-1.0, 1.0, 0.0),  # matches within the SESOI
    Region(-0.5, 1.5, 0.0),  # a level, asymmetric
    Region(-math.inf, 1.0, 0.0, bounded=False),  # not worse
    Region(1.0, math.inf, 1.0, bounded=False),  # better by at least the SESOI
    Region(0.5, 1.5, 1.0),  # a stated range
    Region(0.0, math.inf, 1.0, bounded=False),
    Region(-math.inf, -1.0, -1.0, bounded=False),  # mirrored: worse by the SESOI
    Region(-2.0, -0.5, -1.0),
    Region(-math.inf, 0.0, -1.0, bounded=False),
]


def _by_classify(z: np.ndarray, m: int, alpha: float, region: Region) -> np.ndarray:
    low, high = batch_interval(z, m, alpha)
    return np.isin(classify(low, high, region), DECIDED)


@pytest.mark.parametrize("region", REGIONS, ids=lambda r: f"{r.low:g}..{r.high:g}")
@pytest.mark.parametrize("grid", [0.5, 0.25, None], ids=["grid0.5", "grid0.25", "continuous"])
def test_decided_equals_the_rule_row_by_row(region: Region, grid: float | None) -> None:
    rng = np.random.default_rng(11)
    checked = decisions = 0
    for n in (1, 3, 5, 6, 9, 12, 20, 33):
        for m in (1, 3, 8):
            z = rng.normal(region.target, 1.2, (400, n))
            z = np.round(z / grid) * grid + 0.0 if grid else np.round(z, 6) + 0.0
            expected = _by_classify(z, m, 0.05, region)
            assert np.array_equal(decided(z, m, 0.05, region), expected), (n, m)
            checked += z.shape[0]
            decisions += int(expected.sum())
    assert decisions > checked // 10  # the cases decide often enough to test both outcomes
    assert decisions < checked


def test_ties_on_the_edges_are_counted_as_the_interval_does() -> None:
    # Walsh averages exactly at the edge: with k = 1 (n = 6, m = 1) low is the smallest
    # average, so an interval ending on the edge is inside (>=) but not above (>).
    z = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.5]])
    for region in (Region(-1.0, 1.0, 0.0), Region(1.0, 2.0, 1.5), Region(0.0, 1.0, 0.5)):
        assert np.array_equal(decided(z, 1, 0.05, region), _by_classify(z, 1, 0.05, region))


def test_decision_power_uses_the_rule() -> None:
    # Clear effect of 3 SESOI with small noise: decided nearly always at 12 pairs, never below
    # the fewest pairs the family allows.
    region = Region(1.0, math.inf, 1.0, bounded=False)
    assert decision_power(np.array([3.0]), 12, 3.0, 0.3, region, 1, 0.05) > 0.99
    assert decision_power(np.array([3.0]), 3, 3.0, 0.3, region, 8, 0.05) == 0.0


def test_walsh_averages_keep_triu_order() -> None:
    z = np.random.default_rng(3).normal(size=(7, 9))
    i, j = np.triu_indices(9)
    assert np.array_equal(walsh_averages(z), (z[:, i] + z[:, j]) / 2.0)
    assert np.array_equal(walsh_averages(z[0]), (z[0, i] + z[0, j]) / 2.0)
    assert walsh_averages(np.empty(0)).shape == (0,)
