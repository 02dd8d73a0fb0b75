"""The exact Wilcoxon signed-rank test and the interval it inverts to: one procedure.

For n paired differences z the Walsh averages are (z_i + z_j) / 2 for i <= j; there are
N = n(n + 1) / 2 of them. Under H0 (differences symmetric about 0) the number of positive Walsh
averages, T+, has the signed-rank null distribution P(T+ = t) = #{subsets of {1..n} summing to
t} / 2^n. Inverting the test gives the interval [W_(k), W_(N+1-k)] of ordered Walsh averages
(Hodges & Lehmann 1963; Hollander, Wolfe & Chicken 2014, section 3.2).

Family-wise: a part is one of m tests (its table); Bonferroni gives each two-sided test the
level alpha / m. The critical count c is the smallest count whose adjusted p,
min(1, m * min(1, 2 * P0(T+ >= c))), is <= alpha -- the very expression `p_adjusted` uses -- and
k = N - c + 1. So "p_adjusted <= alpha" and "the interval excludes 0" are the same event, for
every n, m and data set, ties and zeros included (a zero Walsh average counts on neither side,
which can only make the test more conservative, never less).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

ROUND_DECIMALS = 9  # differences are compared in units of the SESOI, rounded here (see decide)


@functools.lru_cache(maxsize=1024)
def upper_tail(n: int) -> np.ndarray:
    """tail[c] = P0(T+ >= c) for c = 0 .. N + 1 (exact counts by dynamic programming)."""
    total = n * (n + 1) // 2
    counts = np.zeros(total + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):  # each rank is in the positive set or not
        shifted = np.zeros_like(counts)
        shifted[rank:] = counts[: total + 1 - rank]
        counts = counts + shifted
    tail = np.append(np.cumsum(counts[::-1])[::-1], 0.0) / 2.0**n
    tail.setflags(write=False)
    return tail


def adjusted_p(n: int, m: int, count: int) -> float:
    """Bonferroni-adjusted two-sided p of a count of `count` Walsh averages on one side."""
    if n <= 0:
        return 1.0
    return min(1.0, max(1, m) * min(1.0, 2.0 * float(upper_tail(n)[count])))


@functools.lru_cache(maxsize=4096)
def critical_count(n: int, m: int, alpha: float) -> int | None:
    """Smallest count c with adjusted_p(n, m, c) <= alpha; None when no count reaches alpha."""
    if n <= 0:
        return None
    total = n * (n + 1) // 2
    tail = upper_tail(n)
    ok = np.flatnonzero(np.minimum(1.0, max(1, m) * np.minimum(1.0, 2.0 * tail[: total + 1]))
                        <= alpha)  # fmt: skip
    return int(ok[0]) if ok.size else None


def min_pairs(m: int, alpha: float) -> int:
    """Fewest pairs with which the exact test can reach alpha in a family of m (all one sign)."""
    n = 1
    while critical_count(n, m, alpha) is None:
        n += 1
    return n


def walsh_averages(z: np.ndarray) -> np.ndarray:
    """(z_i + z_j) / 2 for i <= j along the last axis (batched: shape (..., N)), in the order
    of np.triu_indices(N). Built one i at a time from slices, which is faster than gathering
    both operands through index arrays (bit-identical: the same additions)."""
    z = np.asarray(z, dtype=float)
    n = z.shape[-1]
    out = np.empty((*z.shape[:-1], n * (n + 1) // 2))
    start = 0
    for i in range(n):
        stop = start + n - i
        np.add(z[..., i : i + 1], z[..., i:], out=out[..., start:stop])
        start = stop
    out /= 2.0
    return out


def batch_interval(z: np.ndarray, m: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The family-wise interval for each row of z (shape (draws, n)); +-inf where n is too small."""
    n = z.shape[-1]
    c = critical_count(n, m, alpha)
    rows = z.shape[0]
    if c is None:
        return np.full(rows, -np.inf), np.full(rows, np.inf)
    total = n * (n + 1) // 2
    k = total - c + 1  # 1-based order statistic
    walsh = walsh_averages(z)
    ordered = np.partition(walsh, sorted({k - 1, total - k}), axis=-1)
    return ordered[..., k - 1], ordered[..., total - k]


@dataclass(frozen=True)
class SignedRank:
    """One part's test and interval, in the units of the differences given to `signed_rank`."""

    n: int
    m: int
    alpha: float
    t_plus: int  # Walsh averages > 0
    t_minus: int  # Walsh averages < 0
    p_greater: float
    p_less: float
    p_two: float
    p_adjusted: float  # Bonferroni over the family: min(1, m * p_two)
    ci_low: float  # simultaneous (1 - alpha) over the family; -inf when n is too small
    ci_high: float
    hodges_lehmann: float  # median of the Walsh averages

    @property
    def testable(self) -> bool:
        return math.isfinite(self.ci_low) and math.isfinite(self.ci_high)

    @property
    def level(self) -> float:
        """Per-part confidence level of the interval (1 - alpha / m)."""
        return 1 - self.alpha / max(1, self.m)


def signed_rank(z: np.ndarray, m: int, alpha: float) -> SignedRank:
    """Exact two-sided test of z's centre = 0 and its inverted interval (z finite, n >= 1)."""
    z = np.asarray(z, dtype=float)
    n = int(z.size)
    walsh = walsh_averages(z)
    t_plus, t_minus = int(np.count_nonzero(walsh > 0)), int(np.count_nonzero(walsh < 0))
    tail = upper_tail(n)
    p_greater, p_less = float(tail[t_plus]), float(tail[t_minus])
    p_two = min(1.0, 2.0 * min(p_greater, p_less))
    low, high = batch_interval(z[None, :], m, alpha)
    return SignedRank(
        n=n, m=max(1, m), alpha=alpha, t_plus=t_plus, t_minus=t_minus,
        p_greater=p_greater, p_less=p_less, p_two=p_two,
        p_adjusted=adjusted_p(n, m, max(t_plus, t_minus)),
        ci_low=float(low[0]), ci_high=float(high[0]),
        hodges_lehmann=float(np.median(walsh)),
    )  # fmt: skip


def normalise(values: np.ndarray, unit: float) -> np.ndarray:
    """Values in units of `unit` (the SESOI), rounded so that a change of units (x100) or a
    swap of sign gives bit-identical inputs to the test and the rule."""
    return np.round(np.asarray(values, dtype=float) / unit, ROUND_DECIMALS) + 0.0
