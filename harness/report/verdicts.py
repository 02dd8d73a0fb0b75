"""The one rule that turns a comparison into a verdict, and the regions claims are tested against.

Everything here works on one scale per comparison: raw differences candidate - baseline in the
database's units (scale "diff"), log-ratios log(candidate / baseline) (scale "log", for relative
claims), or a model's own level minus a stated value (scale "level"). `decide` applies
VERDICT_RULE to one comparison; `combine_every` and `combine_any` combine parts of a claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.report.stats import PairedResult, min_exact_p, min_seeds_exact, seeds_needed

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
model's own value with the paper's figure) on one dataset and metric, runs paired by
(seed, split_seed). Differences are candidate - baseline in database units, or
log(candidate / baseline) per pair for relative claims (shown back as %).

Tests. Each part is tested two-sided with the paired t-test and the exact sign-flip test (all
2^n sign patterns). The larger of the two p-values is Holm-corrected across the m cells of its
table: every dataset x GradAttn variant against the same baseline and metric (for a model's own
level: the claim's datasets). The interval is the simultaneous (1 - alpha/m) t-interval,
alpha = {ALPHA}.

Claimed region R. Point claim of size v: [v/2, 2v] (the stated size within a factor of two).
Range claim: its range. Directional claim: > 0 (or < 0). "Matches" or a stated level: +-SESOI
around it. "Not consistently slower": < +SESOI. SESOI, the smallest effect of interest: 0.5 pp
for accuracies, 0.005 for F1 / ECE / gaps, 0.025 for GHS, 1 epoch, 10% on log-ratios.

Rule, first match wins:
 1. No paired runs: UNTESTABLE (no data).
 2. m x 2/2^n > alpha (the exact test cannot reach alpha after Holm with n pairs):
    UNTESTABLE, with the seeds needed.
 3. R contains 0 (matches / a level / not slower): interval inside R: SUPPORTED; interval
    entirely outside R: CONTRADICTED (smaller / larger than claimed; opposite for a one-sided
    R); otherwise INCONCLUSIVE.
 4. R excludes 0 (an effect):
    a. Holm p <= alpha against the claimed sign, or interval entirely across 0:
       CONTRADICTED (opposite).
    b. Interval entirely nearer 0 than R: CONTRADICTED (smaller than claimed; no meaningful
       effect if the interval lies within +-SESOI).
    c. Interval entirely beyond R: CONTRADICTED (larger than claimed).
    d. Holm p <= alpha with the claimed sign: SUPPORTED.
    e. Interval within +-SESOI while R reaches beyond it: CONTRADICTED (no meaningful effect).
    f. Otherwise INCONCLUSIVE, with the seeds a paired t-test needs for the claimed effect
       (80% power, alpha/m, the observed SD of the differences).
 Parameter counts are deterministic: compared exactly with R, no test.

Combining parts. "Every" / "each variant": CONTRADICTED if any part is, else UNTESTABLE if any
is, else INCONCLUSIVE if any is, else SUPPORTED. "Not consistently slower": SUPPORTED if any
part is, CONTRADICTED if all are. "k of N datasets": SUPPORTED when at least k parts are,
CONTRADICTED when fewer than k parts are not contradicted; a sign test over datasets is shown
beside it. "Best GradAttn variant" is the variant with the best mean on these same runs, an
optimistic choice: its p is Holm-adjusted in a family holding all three variants."""


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

    `target` is the effect to plan seeds for (the stated size, the range's bound nearest 0, or
    the SESOI); `bounded` is False for a one-sided region such as "< SESOI".
    """

    low: float
    high: float
    target: float
    bounded: bool = True

    @property
    def contains_zero(self) -> bool:
        """True for "no effect" regions (matches, a level, non-inferiority), not "> 0"."""
        return self.low < 0 < self.high

    @property
    def sign(self) -> float:
        """+1 for a region above 0, -1 below (effect regions only)."""
        return 1.0 if self.high > 0 else -1.0


def point_region(value: float, delta: float) -> Region:
    """A stated size v: [v/2, 2v]; a stated 0 ("matches"): [-SESOI, +SESOI]."""
    if value == 0:
        return Region(-delta, delta, delta)
    low, high = sorted((value / 2, value * 2))
    return Region(low, high, value)


def range_region(low: float, high: float) -> Region:
    low, high = sorted((low, high))
    target = low if low > 0 else high  # the bound nearest 0: the smallest claimed effect
    return Region(low, high, target)


def directional_region(sign: float, delta: float) -> Region:
    return Region(0.0, math.inf, delta) if sign > 0 else Region(-math.inf, 0.0, -delta)


def level_region(delta: float) -> Region:
    """A model's own value equals the stated one (scale "level": value - stated)."""
    return Region(-delta, delta, delta)


def not_worse_region(delta: float) -> Region:
    """Candidate not meaningfully larger (slower): difference < SESOI."""
    return Region(-math.inf, delta, delta, bounded=False)


@dataclass(frozen=True)
class Decision:
    verdict: str
    reason: str
    ci_family: tuple[float, float]
    seeds_needed: int | None


def decide(
    res: PairedResult,
    p_adjusted: float,
    m: int,
    region: Region,
    delta: float,
    alpha: float = ALPHA,
    error: str | None = None,
) -> Decision:
    """VERDICT_RULE for one part; `res` holds two-sided statistics on the region's scale."""
    nan2 = (math.nan, math.nan)
    if error:
        return Decision(UNTESTABLE, error, nan2, None)
    if res.n == 0:
        return Decision(UNTESTABLE, "no data", nan2, None)
    m = max(1, m)
    needed_exact = min_seeds_exact(m, alpha)
    seeds = seeds_needed(region.target, res.sd_diff, alpha / m)
    seeds = max(seeds, needed_exact) if seeds is not None else None
    smallest = m * min_exact_p(res.n)
    if smallest > alpha:
        return Decision(
            UNTESTABLE,
            f"n={res.n}: exact sign-flip test cannot reach alpha={alpha} after Holm over m={m} "
            f"(smallest p {smallest:.3g}); needs >= {needed_exact} seeds",
            nan2,
            seeds if seeds is not None else needed_exact,
        )
    low, high = res.interval(1 - alpha / m)
    ci = (low, high)
    if region.contains_zero:
        if region.low <= low and high <= region.high:
            return Decision(SUPPORTED, "interval inside the claimed region", ci, None)
        if high < region.low or low > region.high:
            if not region.bounded:
                reason = "opposite"
            else:
                reason = "smaller than claimed" if high < region.low else "larger than claimed"
            return Decision(CONTRADICTED, reason, ci, None)
        return Decision(INCONCLUSIVE, "interval overlaps the claimed region's edge", ci, seeds)

    s = region.sign  # mirror a negative claim so that the claimed effect is positive
    r_low, r_high = sorted((s * region.low, s * region.high))
    c_low, c_high = sorted((s * low, s * high))
    mean = s * res.mean_diff
    significant = math.isfinite(p_adjusted) and p_adjusted <= alpha
    negligible = -delta < c_low and c_high < delta
    if (significant and mean < 0) or c_high < 0:
        return Decision(CONTRADICTED, "opposite", ci, None)
    if c_high < r_low:
        reason = "no meaningful effect" if negligible else "smaller than claimed"
        return Decision(CONTRADICTED, reason, ci, None)
    if c_low > r_high:
        return Decision(CONTRADICTED, "larger than claimed", ci, None)
    if significant and mean > 0:
        return Decision(SUPPORTED, "significant in the claimed direction, size consistent", ci,
                        None)  # fmt: skip
    if negligible and r_high > delta:
        return Decision(CONTRADICTED, "no meaningful effect", ci, None)
    return Decision(
        INCONCLUSIVE, "interval includes both the claimed region and no effect", ci, seeds
    )


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
