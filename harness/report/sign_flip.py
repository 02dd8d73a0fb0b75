"""The sign-flip (randomisation) test of mean(diffs) = 0 for any n, exact where the data allow.

Statistic T = sum of the differences; under H0 each difference's sign is a fair coin, so T is
distributed as sum of s_i |d_i| over the 2^n sign patterns. Three ways, chosen in order:

1. n <= ENUMERATION_MAX_N: every pattern enumerated (the definition itself).
2. The magnitudes are integer multiples of one unit 1/L (accuracies on a test set of N images
   differ by multiples of 1/N): the distribution of the sum of the positive magnitudes is
   computed exactly by dynamic programming over the integers 0..K (K = sum of k_i), as a
   subset-sum count. Exact, in floating-point probabilities.
3. Otherwise the magnitudes are rounded to a grid of step q (K cells in all): every pattern's
   sum moves by at most n q / 2, so the p-value lies between the grid's tail probabilities at
   t -+ n q / 2. The upper one is returned (conservative) and the bracket's width is the stated
   error; the grid is fine enough that the width stays near 0.002 (SignFlip.error).

No random draws: the same data give the same p on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import reduce

import numpy as np

ENUMERATION_MAX_N = 20
MAX_DENOMINATOR = 100_000  # the unit of an exact grid: 1/L with L up to this (test-set sizes)
MAX_EXACT_CELLS = 4_000_000  # K of an exact grid (memory: 8 bytes a cell)
GRID_CELLS_PER_N = 100  # rounded grid: K = 100 n^1.5 cells, a bracket of ~0.005 SD of T
ALTERNATIVES = ("greater", "less", "two-sided")


@dataclass(frozen=True)
class SignFlip:
    p: float
    method: str  # "enumeration", "exact grid 1/L", "rounded grid"
    error: float  # the p-value lies within [p - error, p]; 0 where exact


def _tail(pmf: np.ndarray, total: int, low: float, high: float, alternative: str) -> float:
    """P(T >= low) ("greater"), P(T <= high) ("less") or P(|T| >= low) for T = 2S - total,
    S ~ pmf on 0..total (grid units)."""
    s = np.arange(total + 1)
    t = 2 * s - total
    if alternative == "greater":
        return float(pmf[t >= low].sum())
    if alternative == "less":
        return float(pmf[t <= high].sum())
    return float(pmf[np.abs(t) >= low].sum())


def _subset_sum_pmf(ks: np.ndarray) -> np.ndarray:
    """P(sum of the k_i whose sign is + = s) for s = 0..sum(k), fair independent signs."""
    total = int(ks.sum())
    pmf = np.zeros(total + 1)
    pmf[0] = 1.0
    reach = 0
    for k in ks:
        k = int(k)
        # Only the reachable prefix moves; halves keep it a probability (no 2^n overflow).
        moved = pmf[: reach + 1].copy()
        pmf[: reach + 1] *= 0.5
        pmf[k : k + reach + 1] += 0.5 * moved
        reach += k
    return pmf


def _exact_grid(magnitudes: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(k_i, L) with magnitudes = k_i / L exactly (to 1e-9 relative), or None."""
    scale = float(magnitudes.max())
    fractions = [Fraction(float(a)).limit_denominator(MAX_DENOMINATOR) for a in magnitudes]
    if any(abs(float(f) - a) > 1e-9 * scale for f, a in zip(fractions, magnitudes, strict=True)):
        return None
    unit = reduce(math.lcm, (f.denominator for f in fractions), 1)
    if unit > MAX_DENOMINATOR:
        return None
    ks = np.array([int(f * unit) for f in fractions], dtype=np.int64)
    if int(ks.sum()) > MAX_EXACT_CELLS:
        return None
    return ks, unit


def _enumerate(d: np.ndarray, alternative: str) -> float:
    observed = float(d.sum())
    tol = 1e-9 * float(np.abs(d).sum())  # equal patterns' float sums differ in the last bits
    sums = np.zeros(1)
    for value in np.abs(d):  # each pair doubles the set of reachable sums: +|d| or -|d|
        sums = np.concatenate([sums + value, sums - value])
    if alternative == "greater":
        hits = np.count_nonzero(sums >= observed - tol)
    elif alternative == "less":
        hits = np.count_nonzero(sums <= observed + tol)
    else:
        hits = np.count_nonzero(np.abs(sums) >= abs(observed) - tol)
    return float(hits / sums.size)


def sign_flip(diffs: np.ndarray, alternative: str = "greater") -> SignFlip:
    """The test for finite differences (n >= 1); see the module docstring for the method."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}")
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n <= ENUMERATION_MAX_N:
        return SignFlip(_enumerate(d, alternative), "enumeration", 0.0)
    nonzero = d[d != 0]  # a zero flips to itself: it changes no pattern's sum
    if nonzero.size == 0:
        return SignFlip(1.0, "enumeration", 0.0)
    magnitudes = np.abs(nonzero)
    exact = _exact_grid(magnitudes)
    if exact is not None:
        ks, unit = exact
        signed = np.sign(nonzero).astype(np.int64) * ks
        observed = int(signed.sum())
        pmf = _subset_sum_pmf(ks)
        p = _tail(pmf, int(ks.sum()), abs(observed) if alternative == "two-sided" else observed,
                  observed, alternative)  # fmt: skip
        return SignFlip(min(1.0, p), f"exact grid 1/{unit}", 0.0)
    cells = max(1000, int(GRID_CELLS_PER_N * n**1.5))
    step = float(magnitudes.sum()) / cells
    ks = np.maximum(np.rint(magnitudes / step), 0).astype(np.int64)
    total = int(ks.sum())
    pmf = _subset_sum_pmf(ks)
    observed = float(nonzero.sum()) / step  # in grid units
    slack = nonzero.size / 2  # |T - step * T_grid| <= n step / 2 for every pattern
    if alternative == "greater":
        high = _tail(pmf, total, observed - slack, 0, alternative)
        low = _tail(pmf, total, observed + slack, 0, alternative)
    elif alternative == "less":
        high = _tail(pmf, total, 0, observed + slack, alternative)
        low = _tail(pmf, total, 0, observed - slack, alternative)
    else:
        high = _tail(pmf, total, max(0.0, abs(observed) - slack), 0, alternative)
        low = _tail(pmf, total, abs(observed) + slack, 0, alternative)
    return SignFlip(min(1.0, high), "rounded grid", max(0.0, high - low))
