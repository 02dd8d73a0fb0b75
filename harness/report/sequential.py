"""Sequential verdicts: a look after every seed, with the error controlled over all looks.

A fixed design tests once at n seeds. An audit (harness audit) looks after every seed and stops
a part as soon as it is decided; testing at every look with the fixed interval would inflate
the false-positive rate. This module gives the group-sequential version of the same procedure
(Jennison & Turnbull 1989, "repeated confidence intervals"; Lan & DeMets 1983, alpha spending):

- The design fixes a horizon N (the most seeds any part gets) and a spending function a(t):
  by look n the family-wise error spent is a(n / N), a(1) = alpha / m per part (Bonferroni over
  the m parts of a family, as in the fixed rule).
- Under H0 (differences symmetric about their centre) the path of the signed-rank count T+
  over looks n = 1..N is distribution-free: signs are fair coins and the ranks of |z| follow a
  uniform permutation. `null_counts` simulates that path (NULL_DRAWS paths, fixed seed);
  `boundaries` picks, look by look, the smallest critical count c_n whose cumulative crossing
  probability stays below the spent alpha, with a Monte-Carlo margin (the 99% upper bound of
  the simulated rate must stay below it), and never below the fixed test's count at alpha / m.
- At look n the interval is the Walsh-average interval of the fixed rule with c_n in place of
  the fixed critical count. The true centre lies inside every look's interval at once with
  probability >= 1 - alpha / m, so the verdict rule (harness.report.verdicts.classify) applied
  at the first look that decides is wrong with probability <= alpha / m, however the audit
  chose to stop.

The verdict is the one at the first deciding look; later pairs do not change it (the audit
stops there). Looks are the pairs in (seed, split_seed) order, which does not depend on results.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError
from harness.report.decision import Decision, reason_text, seeds_text
from harness.report.power import POWER
from harness.report.signed_rank import ROUND_DECIMALS, critical_count, normalise, walsh_averages
from harness.report.verdicts import (
    ALPHA,
    DECIDED,
    NO_DATA,
    NOT_FINITE,
    TOO_FEW,
    UNTESTABLE,
    VERDICT_OF,
    Region,
    classify,
)

NULL_DRAWS = 200_000
NULL_SEED = 20261
MC_MARGIN_Z = 2.326  # one-sided 99%: the simulated crossing rate's upper bound is what is held
MAX_HORIZON = 50  # the null simulation costs ~N^2 x NULL_DRAWS; 50 seeds is a large audit
PROJECTION_DRAWS = 1000
PROJECTION_SEED = 20262


def obrien_fleming(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending: little alpha early, nearly all at the end."""
    from scipy.stats import norm  # late: `harness --help` should not load scipy

    return float(2 * (1 - norm.cdf(norm.ppf(1 - alpha / 2) / math.sqrt(t))))


def pocock(t: float, alpha: float) -> float:
    """Lan-DeMets Pocock-type spending: alpha spread evenly, earlier stops, wider last look."""
    return float(alpha * math.log(1 + (math.e - 1) * t))


SPENDING: dict[str, Callable[[float, float], float]] = {
    "obrien-fleming": obrien_fleming,
    "pocock": pocock,
}


@dataclass(frozen=True)
class Design:
    """A sequential design: looks after every seed up to `horizon`, alpha spent by `spending`."""

    horizon: int
    spending: str = "obrien-fleming"

    def __post_init__(self) -> None:
        if self.spending not in SPENDING:
            raise HarnessError(
                f"unknown spending function {self.spending!r}; valid: {', '.join(SPENDING)}"
            )
        if not 1 <= self.horizon <= MAX_HORIZON:
            raise HarnessError(
                f"the most seeds per part must be 1..{MAX_HORIZON} (got {self.horizon})"
            )

    def text(self) -> str:
        return f"looks after every seed up to {self.horizon}, {self.spending} alpha spending"


@functools.lru_cache(maxsize=4)
def null_counts(horizon: int) -> np.ndarray:
    """(NULL_DRAWS, horizon) simulated null paths of T+ (Walsh averages > 0) at looks 1..N."""
    rng = np.random.default_rng(NULL_SEED)
    size = rng.random((NULL_DRAWS, horizon))  # |z|: only their order matters
    positive = rng.random((NULL_DRAWS, horizon)) < 0.5
    counts = np.zeros((NULL_DRAWS, horizon), dtype=np.int32)
    t_plus = np.zeros(NULL_DRAWS, dtype=np.int64)
    for n in range(horizon):
        below = size[:, :n] < size[:, n : n + 1]
        # The new value's rank among the first n+1, and +1 for each positive value above it.
        t_plus += np.count_nonzero(positive[:, :n] & ~below, axis=1)
        t_plus += positive[:, n] * (1 + np.count_nonzero(below, axis=1))
        counts[:, n] = t_plus
    counts.setflags(write=False)
    return counts


@functools.lru_cache(maxsize=256)
def boundaries(horizon: int, m: int, alpha: float, spending: str) -> tuple[int | None, ...]:
    """Critical count c_n per look n = 1..horizon (None: no count can decide at that look)."""
    spend = SPENDING[spending]
    part_alpha = alpha / max(1, m)
    counts = null_counts(horizon)
    draws = counts.shape[0]
    crossed = np.zeros(draws, dtype=bool)
    result: list[int | None] = []
    for n in range(1, horizon + 1):
        total = n * (n + 1) // 2
        extreme = np.maximum(counts[:, n - 1], total - counts[:, n - 1])
        expected = spend(n / horizon, part_alpha) * draws
        allowed = math.floor(expected - MC_MARGIN_Z * math.sqrt(expected)) - int(crossed.sum())
        fixed = critical_count(n, 1, part_alpha)
        if fixed is None or allowed < 0:
            result.append(None)
            continue
        left = np.sort(extreme[~crossed])[::-1]
        c = int(left[allowed]) + 1 if allowed < left.size else 0
        c = max(c, fixed)
        if c > total:
            result.append(None)
            continue
        result.append(c)
        crossed |= extreme >= c
    return tuple(result)


def intervals(z: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """The Walsh-average interval with critical count c for each row of z (draws, n)."""
    n = z.shape[-1]
    total = n * (n + 1) // 2
    k = total - c + 1
    ordered = np.partition(walsh_averages(z), sorted({k - 1, total - k}), axis=-1)
    return ordered[..., k - 1], ordered[..., total - k]


def first_decision(
    z: np.ndarray, cuts: tuple[int | None, ...], region: Region
) -> tuple[int | None, str, float, float]:
    """Scan the looks of one part's z (SESOI units, seed order): (deciding look or None, code,
    interval) at the first look that decides, else at the last look that had a boundary."""
    code, low, high = TOO_FEW, -math.inf, math.inf
    for n in range(1, min(z.size, len(cuts)) + 1):
        c = cuts[n - 1]
        if c is None:
            continue
        lo, hi = intervals(z[None, :n], c)
        low, high = float(lo[0]), float(hi[0])
        code = str(classify(low, high, region))
        if code in DECIDED:
            return n, code, low, high
    return None, code, low, high


def projected_seeds(
    z: np.ndarray, cuts: tuple[int | None, ...], region: Region, effect: float, sd: float
) -> int | None:
    """Fewest total pairs by which the design decides the part with POWER, keeping the
    observed pairs and drawing the rest from N(effect, sd) (SESOI units); None beyond the
    horizon or without a spread to plan with."""
    if not (math.isfinite(sd) and sd > 0 and math.isfinite(effect)):
        return None
    horizon = len(cuts)
    extra = horizon - z.size
    if extra <= 0:
        return None
    rng = np.random.default_rng(PROJECTION_SEED)
    future = np.round(effect + sd * rng.standard_normal((PROJECTION_DRAWS, extra)), ROUND_DECIMALS)
    paths = np.concatenate([np.broadcast_to(z, (PROJECTION_DRAWS, z.size)), future + 0.0], axis=1)
    decided = np.zeros(PROJECTION_DRAWS, dtype=bool)
    for n in range(z.size + 1, horizon + 1):
        c = cuts[n - 1]
        if c is not None:
            low, high = intervals(paths[:, :n], c)
            decided |= np.isin(classify(low, high, region), DECIDED)
        if decided.mean() >= POWER:
            return n
    return None


def decide_sequential(
    diffs: np.ndarray | list[float],
    m: int,
    region: Region,
    delta: float,
    design: Design,
    alpha: float = ALPHA,
    *,
    fmt: Callable[[float], str],
    claimed: str,
    error: str | None = None,
) -> Decision:
    """The verdict rule under `design` for one part; `diffs` in (seed, split_seed) order."""
    d = np.asarray(diffs, dtype=float)
    m = max(1, int(m))
    level = 1 - alpha / m
    nan = math.nan
    used = d[: design.horizon]
    n = int(used.size)

    def untestable(code: str, reason: str) -> Decision:
        mean = float(used.mean()) if n and np.isfinite(used).all() else nan
        return Decision(UNTESTABLE, code, reason, n, m, mean, nan, nan, nan, nan, None, nan,
                        level, horizon=design.horizon)  # fmt: skip

    if error:
        return untestable(NOT_FINITE, error)
    if n == 0:
        return untestable(NO_DATA, "no paired runs")
    if not np.isfinite(used).all():
        return untestable(NOT_FINITE, "some differences are not finite (NaN or inf): no test "
                          "was run; fix or drop those runs")  # fmt: skip
    z = normalise(used, delta)
    unit_region = region.in_units(delta)
    cuts = boundaries(design.horizon, m, alpha, design.spending)
    look, code, low, high = first_decision(z, cuts, unit_region)
    upto = look or n
    sd_z = float(z[:upto].std(ddof=1)) if upto > 1 else nan
    seeds = None
    if look is None and n < design.horizon:
        seeds = projected_seeds(z, cuts, unit_region, unit_region.target, sd_z)
    interval = (f"sequential {level * 100:.4g}% interval {fmt(low * delta)} to "
                f"{fmt(high * delta)} at n={upto}")  # fmt: skip
    reason = _sequential_reason(code, interval, claimed, fmt(delta), look, n, design, m, seeds)
    return Decision(
        VERDICT_OF[code], code, reason, n, m, float(used[:upto].mean()), sd_z * delta,
        low * delta, high * delta, nan, seeds, nan, level, decided_at=look,
        horizon=design.horizon,
    )  # fmt: skip


def _sequential_reason(
    code: str,
    interval: str,
    claimed: str,
    sesoi: str,
    look: int | None,
    n: int,
    design: Design,
    m: int,
    seeds: int | None,
) -> str:
    if code == TOO_FEW:
        text = (f"n={n} pairs: no look up to here can decide over m={m} parts under "
                f"{design.spending} spending")  # fmt: skip
    else:
        text = f"{reason_text(code, interval, claimed, sesoi)} (m={m})"
    if look is not None:
        return f"{text}; decided at look {look} of at most {design.horizon}"
    if n >= design.horizon:
        return f"{text}; horizon of {design.horizon} seeds reached undecided"
    return f"{text}; {seeds_text(seeds, design.horizon)}"
