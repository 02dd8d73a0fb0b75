"""One part's verdict from its paired differences: the test, the interval, the rule, the seeds.

`decide` is the only place a verdict is made from data. Differences are divided by the SESOI
and rounded (harness.report.signed_rank.normalise) before anything is computed, so a change of
units (fractions vs percent) or a swap of candidate and baseline with the claim mirrored gives
the same verdict bit for bit; the numbers shown are converted back to the scale's units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.report.power import (
    MAX_SEEDS,
    POWER,
    detectable_effect_sd,
    min_seeds,
    seeds_needed,
)
from harness.report.signed_rank import normalise, signed_rank
from harness.report.verdicts import (
    ABOVE,
    ALPHA,
    BELOW,
    EFFECT,
    INSIDE,
    LARGER,
    NEGLIGIBLE,
    NO_DATA,
    NOT_FINITE,
    OPEN_EDGE,
    OPEN_EFFECT,
    OPPOSITE,
    SMALLER,
    TOO_FEW,
    UNTESTABLE,
    VERDICT_OF,
    Region,
    classify,
)


@dataclass(frozen=True)
class Decision:
    """A part's verdict and every number its reason refers to (in the scale's units)."""

    verdict: str
    code: str  # harness.report.verdicts reason code
    reason: str
    n: int
    m: int
    mean_diff: float
    sd_diff: float
    ci_low: float  # the interval the rule used: exact signed-rank, level 1 - alpha/m
    ci_high: float
    p_adjusted: float  # NaN where no test was run
    seeds_needed: int | None
    mde: float  # smallest effect the interval excludes from 0 with 80% power at this n
    level: float
    # Sequential designs only (harness.report.sequential): the look that decided, the horizon.
    decided_at: int | None = None
    horizon: int | None = None


def _plain(x: float) -> str:
    return f"{x:+.4g}"


def decide(
    diffs: np.ndarray | list[float],
    m: int,
    region: Region,
    delta: float,
    alpha: float = ALPHA,
    *,
    fmt: Callable[[float], str] = _plain,
    claimed: str | None = None,
    error: str | None = None,
) -> Decision:
    """VERDICT_RULE for one part. `diffs` are on the region's scale, `delta` is its SESOI and
    `m` the number of parts in its family; `fmt` writes a value of the scale for the reason."""
    d = np.asarray(diffs, dtype=float)
    n, m = int(d.size), max(1, int(m))
    level = 1 - alpha / m
    claimed = claimed or f"{fmt(region.low)} to {fmt(region.high)}"
    nan = math.nan

    def untestable(code: str, reason: str, seeds: int | None = None) -> Decision:
        mean = float(d.mean()) if n and np.isfinite(d).all() else nan
        return Decision(UNTESTABLE, code, reason, n, m, mean, nan, nan, nan, nan, seeds, nan,
                        level)  # fmt: skip

    if error:
        return untestable(NOT_FINITE, error)
    if n == 0:
        return untestable(NO_DATA, "no paired runs")
    bad = int(np.count_nonzero(~np.isfinite(d)))
    if bad:
        return untestable(NOT_FINITE, f"{bad} of {n} differences are not finite (NaN or inf): "
                          "no test was run; fix or drop those runs")  # fmt: skip
    z = normalise(d, delta)
    unit_region = region.in_units(delta)
    test = signed_rank(z, m, alpha)
    code = str(classify(test.ci_low, test.ci_high, unit_region))
    sd_z = float(z.std(ddof=1)) if n > 1 else nan
    seeds = None
    if code in (TOO_FEW, OPEN_EFFECT, OPEN_EDGE):
        seeds = seeds_needed(z, unit_region.target, sd_z, unit_region, m, alpha)
        if seeds is None and code == TOO_FEW:
            seeds = min_seeds(m, alpha)
    low, high = test.ci_low * delta, test.ci_high * delta
    mde = detectable_effect_sd(n, m, alpha) * sd_z * delta if n > 1 else nan
    interval = f"{level * 100:.4g}% interval {fmt(low)} to {fmt(high)}"
    reason = _reason(code, interval, claimed, fmt(delta), n, m, alpha, test.p_adjusted, seeds)
    return Decision(
        VERDICT_OF[code], code, reason, n, m, float(d.mean()), sd_z * delta, low, high,
        test.p_adjusted, seeds, mde, level,
    )  # fmt: skip


def _reason(
    code: str,
    interval: str,
    claimed: str,
    sesoi: str,
    n: int,
    m: int,
    alpha: float,
    p_adjusted: float,
    seeds: int | None,
) -> str:
    """The reason, in words, stating only what the numbers beside it show."""
    if code == TOO_FEW:
        text = (f"n={n} pairs: the exact test cannot reach alpha={alpha} over m={m} parts "
                f"(smallest adjusted p {min(1.0, m * 2.0 / 2.0 ** n):.3g}), so no outcome "
                "at this n decides")  # fmt: skip
    else:
        text = f"{reason_text(code, interval, claimed, sesoi)}; adjusted p = {p_adjusted:.3g} (m={m})"
    if code == TOO_FEW:
        text += f"; needs about {seeds} seeds"
    elif code in (OPEN_EFFECT, OPEN_EDGE):
        text += f"; {seeds_text(seeds, MAX_SEEDS)}"
    return text


def seeds_text(seeds: int | None, limit: int) -> str:
    """The seeds that would decide an open part, or that none within `limit` would."""
    if seeds is None:
        return f"{POWER:.0%} power to decide is out of reach within {limit} seeds"
    return f"about {seeds} seeds would decide it with {POWER:.0%} power if the claimed effect is true"


def reason_text(code: str, interval: str, claimed: str, sesoi: str) -> str:
    """What the interval shows against the claimed region, in words (rules 3-4)."""
    texts = {
        OPPOSITE: f"{interval} lies on the other side of 0 from the claim ({claimed})",
        SMALLER: f"{interval} falls short of the claimed {claimed}",
        NEGLIGIBLE: f"{interval} falls short of the claimed {claimed} and lies within "
                    f"+-SESOI ({sesoi}): no meaningful effect",
        LARGER: f"{interval} lies beyond the claimed {claimed}",
        EFFECT: f"{interval} excludes 0 on the claimed side and reaches the claimed {claimed}",
        OPEN_EFFECT: f"{interval} holds both 0 and part of the claimed {claimed}",
        INSIDE: f"{interval} lies inside the claimed {claimed}",
        BELOW: f"{interval} lies below the claimed {claimed}",
        ABOVE: f"{interval} lies above the claimed {claimed}",
        OPEN_EDGE: f"{interval} crosses an edge of the claimed {claimed}",
    }  # fmt: skip
    return texts[code]
