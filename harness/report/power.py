"""Power and sample size for paired comparisons: what n can show, and what n is needed.

Re-exported by harness.report.stats (the report's single statistics module).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
from scipy import stats as sps

from harness.errors import HarnessError

ALTERNATIVES = ("two-sided", "greater", "less")


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise HarnessError(f"unknown alternative {alternative!r}; valid: {', '.join(ALTERNATIVES)}")


def min_exact_p(n: int, alternative: str = "two-sided") -> float:
    """Smallest p-value the exact sign-flip test can give with n pairs."""
    _check_alternative(alternative)
    if n <= 0:
        return 1.0
    sides = 2.0 if alternative == "two-sided" else 1.0
    return min(1.0, sides / 2.0**n)


def min_seeds_exact(m: int, alpha: float = 0.05, alternative: str = "two-sided") -> int:
    """Fewest pairs with which the exact sign-flip test can reach alpha after Holm over m cells.

    Every Holm-adjusted p of a family of m is at least m times the smallest raw p.
    """
    n = 1
    while max(1, m) * min_exact_p(n, alternative) > alpha:
        n += 1
    return n


def _power_alternative(alternative: str) -> str:
    return "two-sided" if alternative == "two-sided" else "larger"


def seeds_needed(
    effect: float,
    sd_diff: float | None,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: str = "two-sided",
) -> int | None:
    """Pairs needed for a paired t-test to detect `effect` with `power` (statsmodels TTestPower).

    `effect` and `sd_diff` are in the same units (the sd observed over our pairs). None when
    there is no spread to plan with (sd missing, zero or NaN) or no effect to detect.
    """
    from statsmodels.stats.power import TTestPower
    from statsmodels.tools.sm_exceptions import ConvergenceWarning  # registers its filters now

    _check_alternative(alternative)
    if sd_diff is None or not math.isfinite(sd_diff) or sd_diff <= 0:
        return None
    if not math.isfinite(effect) or effect == 0:
        return None
    d = abs(effect) / sd_diff
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # handled below
            n = float(
                TTestPower().solve_power(
                    effect_size=d, alpha=alpha, power=power,
                    alternative=_power_alternative(alternative),
                )
            )  # fmt: skip
    except (ValueError, RuntimeError, ArithmeticError):
        n = math.nan
    if not math.isfinite(n):
        # Solver failure (extreme d): the normal approximation is close enough to plan with.
        z_alpha = sps.norm.ppf(1 - (alpha / 2 if alternative == "two-sided" else alpha))
        n = ((z_alpha + sps.norm.ppf(power)) / d) ** 2 + 1
    return max(2, math.ceil(n - 1e-9))


def minimum_detectable_effect(
    n: int, sd_diff: float, alpha: float = 0.05, power: float = 0.8, alternative: str = "greater"
) -> float:
    """Smallest true mean difference detected with `power` at this n (metric units)."""
    if n < 2 or not math.isfinite(sd_diff) or sd_diff <= 0:
        return math.nan
    return _detectable_d(n, alpha, power, _power_alternative(alternative)) * sd_diff


@functools.lru_cache(maxsize=256)
def _detectable_d(n: int, alpha: float, power: float, alternative: str) -> float:
    """Standardised detectable effect (d_z): depends on n, not on the data, so it is cached."""
    from statsmodels.stats.power import TTestPower
    from statsmodels.tools.sm_exceptions import ConvergenceWarning  # registers its filters now

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # NaN is reported as such
            d = TTestPower().solve_power(nobs=n, alpha=alpha, power=power, alternative=alternative)
    except (ValueError, RuntimeError, ArithmeticError):
        return math.nan
    return float(np.asarray(d).item())
