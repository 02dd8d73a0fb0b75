"""Seeds needed and detectable effects, by simulating the decision procedure itself.

Both quantities are computed with the same test, interval and rule that give the verdict
(harness.report.signed_rank, harness.report.verdicts.classify), never with a t-test formula
standing in for them. Simulations use a fixed seed and common random numbers (the first n
draws are the same for every n), so the figures are reproducible and monotone in practice.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from harness.report.signed_rank import (
    ROUND_DECIMALS,
    batch_interval,
    critical_count,
    min_pairs,
    walsh_averages,
)
from harness.report.verdicts import Region

POWER = 0.8
DRAWS = 1000
MAX_SEEDS = 100  # beyond this a paired design over seeds is not a plan anyone would run
SIMULATION_SEED = 20260
_CHUNK_ELEMENTS = 4_000_000  # Walsh averages held at once (32 MB)


def _noise(rows: int, draws: int) -> np.ndarray:
    """(draws, rows) standard normals whose first r columns are the same for every rows >= r."""
    if rows <= 0:
        return np.empty((draws, 0))
    return np.random.default_rng(SIMULATION_SEED).standard_normal((rows, draws)).T


def _rows_per_chunk(n: int) -> int:
    """Draws whose Walsh averages fit in _CHUNK_ELEMENTS at n pairs."""
    return max(1, _CHUNK_ELEMENTS // max(1, n * (n + 1) // 2))


def _intervals(z: np.ndarray, m: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    step = _rows_per_chunk(z.shape[1])
    lows, highs = [], []
    for start in range(0, z.shape[0], step):
        low, high = batch_interval(z[start : start + step], m, alpha)
        lows.append(low)
        highs.append(high)
    return np.concatenate(lows), np.concatenate(highs)


def decision_power(
    observed: np.ndarray,
    total: int,
    effect: float,
    sd: float,
    region: Region,
    m: int,
    alpha: float,
    draws: int = DRAWS,
) -> float:
    """P(the rule decides, SUPPORTED or CONTRADICTED) with `total` pairs: the observed ones
    kept, the rest drawn from N(effect, sd). All values in SESOI units."""
    observed = np.asarray(observed, dtype=float)
    extra = total - observed.size
    if extra < 0:
        raise ValueError(f"total {total} is below the {observed.size} pairs observed")
    future = np.round(effect + sd * _noise(extra, draws), ROUND_DECIMALS) + 0.0
    z = np.concatenate([np.broadcast_to(observed, (draws, observed.size)), future], axis=1)
    return float(decided(z, m, alpha, region).mean())


def decided(z: np.ndarray, m: int, alpha: float, region: Region) -> np.ndarray:
    """For each row of z (draws, n): whether the rule decides it, i.e. whether
    classify(batch_interval(z, m, alpha), region) is a SUPPORTED or CONTRADICTED code.

    The rule only compares the interval's ends with the region's edges, 0 and +-1. With W the
    Walsh averages and k the interval's order statistic (low is the k-th smallest, high the
    k-th largest), low > b exactly when fewer than k of W are <= b, and high < a exactly when
    fewer than k are >= a. So two counts per row decide it, with the same floating-point
    averages the interval uses; no order statistics (the partial sort was most of a power
    simulation). tests/unit/test_power.py checks it against classify row by row.
    """
    rows, n = z.shape
    c = critical_count(n, m, alpha)
    if c is None:
        return np.zeros(rows, dtype=bool)  # TOO_FEW: never decided
    total = n * (n + 1) // 2
    k = total - c + 1
    step = _rows_per_chunk(n)
    out = np.empty(rows, dtype=bool)
    for start in range(0, rows, step):
        walsh = walsh_averages(z[start : start + step])
        if region.contains_zero:
            # inside: low >= low edge and high <= high edge; below: high < low edge; above:
            # low > high edge. #{W >= e} = total - #{W < e}, and alike for the high edge.
            under = np.count_nonzero(walsh < region.low, axis=1)
            over = np.count_nonzero(walsh > region.high, axis=1)
            out[start : start + step] = ((under < k) & (over < k)) | (total - under < k) | (
                total - over < k
            )
        else:
            # Decided unless open. For a positive claim high < max(0, low edge) covers
            # opposite, negligible and smaller, and low > min(0, high edge) = 0 larger and
            # effect; for a negative claim (classify mirrors it) the same two tests are
            # high < 0 and low > high edge, so no mirroring is needed.
            high_below = np.count_nonzero(walsh >= max(0.0, region.low), axis=1) < k
            low_above = np.count_nonzero(walsh <= min(0.0, region.high), axis=1) < k
            out[start : start + step] = high_below | low_above
    return out


def seeds_needed(
    observed: np.ndarray,
    effect: float,
    sd: float,
    region: Region,
    m: int,
    alpha: float,
    power: float = POWER,
    max_seeds: int = MAX_SEEDS,
) -> int | None:
    """Smallest total number of pairs, above the n observed, at which the part is decided with
    `power` (decision_power); None when there is no spread to plan with or when more than
    `max_seeds` would be needed. The caller passes an undecided part (power 0 at n)."""
    observed = np.asarray(observed, dtype=float)
    n = observed.size
    if not (math.isfinite(sd) and sd > 0 and math.isfinite(effect)):
        return None

    def enough(total: int) -> bool:
        return decision_power(observed, total, effect, sd, region, m, alpha) >= power

    failing, step = n, 1  # power at n is 0: the observed pairs alone are undecided
    while True:
        trial = min(n + step, max_seeds)
        if trial <= failing:
            return None
        if enough(trial):
            passing = trial
            break
        failing = trial
        if trial == max_seeds:
            return None
        step *= 2
    while passing - failing > 1:  # invariant: power(failing) < power <= power(passing)
        middle = (failing + passing) // 2
        failing, passing = (failing, middle) if enough(middle) else (middle, passing)
    return passing


def min_seeds(m: int, alpha: float) -> int:
    """Fewest pairs with which a part of a family of m can be decided at all."""
    return min_pairs(m, alpha)


@functools.lru_cache(maxsize=512)
def detectable_effect_sd(n: int, m: int, alpha: float, power: float = POWER) -> float:
    """Smallest true effect, in SDs of the differences, that the family-wise interval excludes
    from 0 with `power` using n normal pairs; inf where n is too small.

    The Walsh-average interval moves with a shift of the data, so its lower bound at effect mu
    is L0 + mu, and the detectable mu is minus the (1 - power) quantile of L0 at effect 0.
    """
    if n < 1:
        return math.inf
    low, _ = _intervals(_noise(n, DRAWS), m, alpha)
    if not np.isfinite(low).all():
        return math.inf
    return float(-np.quantile(low, 1 - power))
