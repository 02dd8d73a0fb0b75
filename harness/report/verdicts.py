"""The rule that turns one comparison's interval into a verdict, and the regions claims state.

Everything here works in units of the comparison's smallest effect of interest (SESOI), on one
scale per comparison: raw differences candidate - baseline ("diff"), log-ratios
log(candidate) - log(baseline) ("log", relative claims) or a model's own level minus a stated
value ("level"). `classify` is the rule, written once over arrays of interval bounds so that the
same code decides a part and the simulations that plan seeds for it (harness.report.power);
harness.report.decision applies it to data. The rule is argued in docs/STATISTICS.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError
from harness.report.signed_rank import ROUND_DECIMALS

ALPHA = 0.05
SUPPORTED, CONTRADICTED, INCONCLUSIVE, UNTESTABLE = (
    "SUPPORTED", "CONTRADICTED", "INCONCLUSIVE", "UNTESTABLE",
)  # fmt: skip
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, UNTESTABLE)

# Smallest effect of interest (SESOI) on the raw scale, in database units. A difference smaller
# than this is "no meaningful effect": 0.5 pp of accuracy is below what Table 3's two-decimal
# figures are used to argue; 0.025 GHS is less than one layer of a 35-layer model.
SESOI_DIFF: dict[str, float] = {
    **dict.fromkeys(("top1", "top3", "top5", "precision_macro", "recall_macro", "f1_macro",
                     "precision_weighted", "recall_weighted", "f1_weighted", "f1"), 0.005),
    "ece": 0.005,
    "nll": 0.01,
    **dict.fromkeys(("gen_gap", "gen_gap_best", "gen_gap_last"), 0.005),
    **dict.fromkeys(("ghs_1e-7_1e2", "ghs_1e-6_1e1", "ghs_1e-5_1e0", "param_ghs_1e-6_1e1"), 0.025),
    **dict.fromkeys(("best_epoch", "epochs_run", "n_vanishing"), 1.0),
}  # fmt: skip
# On the log-ratio scale: a 10% relative change, for every metric.
SESOI_LOG = math.log(1.10)

VERDICT_RULE = f"""\
Parts. A claim is split into parts: one comparison of a candidate with a baseline (or of a
model's own value with a stated one) on one dataset and metric, runs paired by
(seed, split_seed). Differences are candidate - baseline in database units, or
log(candidate) - log(baseline) per pair for relative claims (shown back as %).

One procedure for test and interval. Each part is one of the m parts of its family (every
dataset x GradAttn variant against the same baseline and metric; for user claims, every part
of the claims file against that baseline and metric). Its interval is the exact Wilcoxon
signed-rank interval at level 1 - alpha/m (Bonferroni, alpha = {ALPHA}): the ordered Walsh
averages W_(k) to W_(N+1-k), N = n(n+1)/2. Its p_adjusted is min(1, m x the exact two-sided
signed-rank p). p_adjusted <= alpha exactly when the interval excludes 0: the two cannot
disagree. Verdicts read the interval only.

Claimed region R. Point claim of size v: [v/2, 2v] (the stated size within a factor of two);
stated 0 ("matches"): +-SESOI. Range claim: its range. Directional claim: at least +SESOI in
the claimed direction. A stated level: +-SESOI around it. "Not consistently slower": below
+SESOI. SESOI: 0.5 pp for accuracies, 0.005 for F1 / ECE / gaps, 0.01 NLL, 0.025 GHS, 1 epoch,
10% on log-ratios.

Rule for interval I = [L, U], first match wins:
 1. No pairs, or a non-finite difference: UNTESTABLE (no test is run, no p is shown).
 2. No count of n pairs reaches alpha/m (n too small: I is unbounded whatever the data):
    UNTESTABLE, with the seeds needed.
 3. R contains 0 (matches, a level, not slower): I inside R: SUPPORTED; I and R disjoint:
    CONTRADICTED; otherwise INCONCLUSIVE.
 4. R excludes 0 (an effect; mirrored so that the claim is positive):
    a. U < 0: CONTRADICTED (opposite).
    b. U below R: CONTRADICTED (smaller than claimed; "no meaningful effect" when I lies
       within +-SESOI).
    c. L above R: CONTRADICTED (larger than claimed).
    d. L > 0: SUPPORTED (an effect on the claimed side, of a size R allows).
    e. Otherwise (I holds 0 and part of R): INCONCLUSIVE, with the seeds that would decide it.
 Seeds needed: the smallest total n at which a simulation (1,000 draws, fixed seed) decides the
 part (SUPPORTED or CONTRADICTED) with 80% probability, keeping the observed pairs and drawing
 the new ones from a normal with the claimed effect and the observed SD.
 Parameter counts are deterministic: compared exactly with R, no test.

Combining parts. "Every" / "each variant": CONTRADICTED if any part is, else UNTESTABLE if any
is, else INCONCLUSIVE if any is, else SUPPORTED. "Not consistently slower": SUPPORTED if any
part is, CONTRADICTED if all are. "k of N datasets": SUPPORTED when at least k parts are,
CONTRADICTED when fewer than k parts are not contradicted; a sign test over datasets is shown
beside it. "Best GradAttn variant" is the variant with the best mean on these same runs, an
optimistic choice: its family holds all three variants."""


def sesoi(metric: str, scale: str) -> float:
    """Smallest effect of interest for `metric` on `scale` ("diff", "level" or "log")."""
    if scale == "log":
        return SESOI_LOG
    try:
        return SESOI_DIFF[metric]
    except KeyError:
        raise HarnessError(
            f"no smallest effect of interest for metric {metric!r} on the {scale} scale; "
            f"known: {', '.join(SESOI_DIFF)} (or use a relative claim)"
        ) from None


@dataclass(frozen=True)
class Region:
    """What a claim says about one comparison, on that comparison's scale.

    `target` is the effect to plan seeds with (the stated size, the middle of a range, the
    SESOI of a directional claim, 0 for "no difference" regions); `bounded` is False for a
    one-sided region such as "< SESOI".
    """

    low: float
    high: float
    target: float
    bounded: bool = True

    @property
    def contains_zero(self) -> bool:
        """True for "no effect" regions (matches, a level, non-inferiority), not effects."""
        return self.low < 0 < self.high

    @property
    def sign(self) -> float:
        """+1 for a region at or above 0, -1 below (effect regions only)."""
        return 1.0 if self.high > 0 else -1.0

    def in_units(self, unit: float) -> Region:
        """The region in units of `unit` (the SESOI), rounded like the differences."""
        def conv(x: float) -> float:
            return x / unit if math.isinf(x) else round(x / unit, ROUND_DECIMALS) + 0.0

        return Region(conv(self.low), conv(self.high), conv(self.target), self.bounded)

    def mirrored(self) -> Region:
        """The same claim about baseline - candidate."""
        return Region(-self.high, -self.low, -self.target, self.bounded)


def point_region(value: float, delta: float) -> Region:
    """A stated size v: [v/2, 2v]; a stated 0 ("matches"): [-SESOI, +SESOI]."""
    if value == 0:
        return Region(-delta, delta, 0.0)
    low, high = sorted((value / 2, value * 2))
    return Region(low, high, value)


def range_region(low: float, high: float) -> Region:
    low, high = sorted((low, high))
    return Region(low, high, (low + high) / 2)


def directional_region(sign: float, delta: float) -> Region:
    """"Better": at least one SESOI in the claimed direction."""
    return Region(delta, math.inf, delta) if sign > 0 else Region(-math.inf, -delta, -delta)


def level_region(delta: float) -> Region:
    """A model's own value equals the stated one (scale "level": value - stated)."""
    return Region(-delta, delta, 0.0)


def not_worse_region(delta: float) -> Region:
    """Candidate not meaningfully larger (slower): difference < SESOI."""
    return Region(-math.inf, delta, 0.0, bounded=False)


# Reason codes of the rule; each has one verdict.
NO_DATA, NOT_FINITE, TOO_FEW = "no data", "not finite", "n too small"
OPPOSITE, SMALLER, NEGLIGIBLE, LARGER = "opposite", "smaller", "no meaningful effect", "larger"
EFFECT, OPEN_EFFECT = "effect", "open effect"
INSIDE, BELOW, ABOVE, OPEN_EDGE = "inside", "below", "above", "open edge"
EXACT_COUNT = "exact"  # a parameter count compared as it is (no seeds, no test): no VERDICT_OF
REASON_CODES = (NO_DATA, NOT_FINITE, TOO_FEW, OPPOSITE, SMALLER, NEGLIGIBLE, LARGER, EFFECT,
                OPEN_EFFECT, INSIDE, BELOW, ABOVE, OPEN_EDGE)  # fmt: skip
VERDICT_OF = {
    NO_DATA: UNTESTABLE, NOT_FINITE: UNTESTABLE, TOO_FEW: UNTESTABLE,
    OPPOSITE: CONTRADICTED, SMALLER: CONTRADICTED, NEGLIGIBLE: CONTRADICTED,
    LARGER: CONTRADICTED, EFFECT: SUPPORTED, OPEN_EFFECT: INCONCLUSIVE, INSIDE: SUPPORTED,
    BELOW: CONTRADICTED, ABOVE: CONTRADICTED, OPEN_EDGE: INCONCLUSIVE,
}  # fmt: skip
# The reason in a few words, for summaries and the scorecard (the full reason has the numbers).
SHORT_REASON = {
    NO_DATA: "no data", NOT_FINITE: "non-finite values", TOO_FEW: "n too small",
    OPPOSITE: "opposite of the claim", SMALLER: "smaller than claimed",
    NEGLIGIBLE: "no meaningful effect", LARGER: "larger than claimed",
    EFFECT: "effect as claimed", OPEN_EFFECT: "needs more seeds", INSIDE: "as claimed",
    BELOW: "below the claimed range", ABOVE: "above the claimed range",
    OPEN_EDGE: "needs more seeds", EXACT_COUNT: "exact count",
}  # fmt: skip
DECIDED = tuple(code for code, verdict in VERDICT_OF.items() if verdict in (SUPPORTED, CONTRADICTED))


def classify(low: np.ndarray | float, high: np.ndarray | float, region: Region) -> np.ndarray:
    """The rule (rules 2-4 of VERDICT_RULE) for intervals [low, high] in SESOI units.

    `region` is in the same units, so +-1 is the SESOI. Returns one reason code per interval.
    """
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    unbounded = ~(np.isfinite(low) & np.isfinite(high))
    if region.contains_zero:
        conditions = [unbounded, (low >= region.low) & (high <= region.high),
                      high < region.low, low > region.high]  # fmt: skip
        return np.select(conditions, [TOO_FEW, INSIDE, BELOW, ABOVE], OPEN_EDGE)
    if region.sign < 0:  # mirror: the claimed effect is positive from here on
        low, high, region = -high, -low, region.mirrored()
    within_sesoi = (low >= -1.0) & (high <= 1.0)
    conditions = [unbounded, high < 0, (high < region.low) & within_sesoi, high < region.low,
                  low > region.high, low > 0]  # fmt: skip
    return np.select(conditions, [TOO_FEW, OPPOSITE, NEGLIGIBLE, SMALLER, LARGER, EFFECT],
                     OPEN_EFFECT)  # fmt: skip


def combine_every(verdicts: list[str]) -> str:
    """All parts must hold: CONTRADICTED > UNTESTABLE > INCONCLUSIVE > SUPPORTED."""
    for verdict in (CONTRADICTED, UNTESTABLE, INCONCLUSIVE):
        if verdict in verdicts:
            return verdict
    return SUPPORTED if verdicts else UNTESTABLE


def combine_any(verdicts: list[str]) -> str:
    """At least one part must hold ("not consistently ..."): the mirror of combine_every."""
    if SUPPORTED in verdicts:
        return SUPPORTED
    if verdicts and all(v == CONTRADICTED for v in verdicts):
        return CONTRADICTED
    return UNTESTABLE if UNTESTABLE in verdicts or not verdicts else INCONCLUSIVE
