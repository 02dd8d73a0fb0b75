"""Hand-checked verdicts: one row per case, the interval worked out by hand.

With n = 6 pairs and m = 1 (or n = 7 and m = 2, n = 10 and m = 24) only the most extreme count
of Walsh averages reaches alpha (2 / 2^6 = 0.031 <= 0.05 < 4 / 2^6), so the exact interval is
[min, max] of the differences: every row below can be checked with a pencil.
Differences are in percentage points (pp), SESOI 0.5 pp; the decision sees fractions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.report.decision import decide
from harness.report.verdicts import (
    EXACT_COUNT,
    REASON_CODES,
    SHORT_REASON,
    VERDICT_OF,
    VERDICTS,
    directional_region,
    not_worse_region,
    point_region,
    range_region,
)

DELTA = 0.005
PP = 0.01
POINT2, NEG2 = point_region(2 * PP, DELTA), point_region(-2 * PP, DELTA)
SMALL = point_region(0.26 * PP, DELTA)  # C5's +0.26 pp, itself below the SESOI
MATCH = point_region(0.0, DELTA)
RANGE = range_region(-5.61 * PP, -2.94 * PP)  # C7
BETTER = directional_region(1.0, DELTA)
NOT_SLOWER = not_worse_region(DELTA)
UP = [1.5, 2, 2.5, 1.8, 2.2, 3]
BIG = [1, 2, 1.5, 1.2, 1.8, 1.1]

CASES = [
    # (id, diffs in pp, m, region, verdict, reason code)
    ("effect inside claim", UP, 1, POINT2, "SUPPORTED", "effect"),
    ("opposite sign", [-x for x in UP], 1, POINT2, "CONTRADICTED", "opposite"),
    ("short of claim", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 1, POINT2, "CONTRADICTED", "smaller"),
    ("negligible", [0.1, 0.2, 0.3, 0.4, 0.45, -0.2], 1, POINT2, "CONTRADICTED",
     "no meaningful effect"),
    ("beyond claim", [5, 6, 7, 5.5, 4.5, 6], 1, POINT2, "CONTRADICTED", "larger"),
    ("holds 0 and claim", [-1, 2, 3, 1, 2, 0], 1, POINT2, "INCONCLUSIVE", "open effect"),
    ("closed at 0", [0, 1, 2, 3, 0.5, 1], 1, POINT2, "INCONCLUSIVE", "open effect"),
    ("at the claim's lower edge", [1] * 6, 1, POINT2, "SUPPORTED", "effect"),
    ("at the claim's upper edge", [4] * 6, 1, POINT2, "SUPPORTED", "effect"),
    ("just short, above SESOI", [0.9] * 6, 1, POINT2, "CONTRADICTED", "smaller"),
    ("n = 5 too small", [2] * 5, 1, POINT2, "UNTESTABLE", "n too small"),
    ("no pairs", [], 1, POINT2, "UNTESTABLE", "no data"),
    ("a NaN", [2, math.nan, 2, 2, 2, 2], 1, POINT2, "UNTESTABLE", "not finite"),
    ("an inf", [2, math.inf, 2, 2, 2, 2], 1, POINT2, "UNTESTABLE", "not finite"),
    ("negative claim held", [-x for x in UP], 1, NEG2, "SUPPORTED", "effect"),
    ("negative claim, positive data", UP, 1, NEG2, "CONTRADICTED", "opposite"),
    ("negative claim exceeded", [-5, -6, -7, -5.5, -4.5, -6], 1, NEG2, "CONTRADICTED",
     "larger"),
    ("negative claim negligible", [-0.1, -0.2, -0.3, -0.4, -0.45, 0.2], 1, NEG2,
     "CONTRADICTED", "no meaningful effect"),
    ("C5: stated value inside the interval", [0.1, 0.2, 0.3, 0.4, 0.45, -0.2], 1, SMALL,
     "INCONCLUSIVE", "open effect"),
    ("C5: small effect shown", [0.2, 0.3, 0.25, 0.35, 0.3, 0.28], 1, SMALL, "SUPPORTED",
     "effect"),
    ("matches: inside +-SESOI", [0.1, -0.1, 0.2, -0.2, 0.3, 0], 1, MATCH, "SUPPORTED",
     "inside"),
    ("matches: clearly above", BIG, 1, MATCH, "CONTRADICTED", "above"),
    ("matches: clearly below", [-x for x in BIG], 1, MATCH, "CONTRADICTED", "below"),
    ("matches: crosses the edge", [0.1, 0.2, 0.6, 0, 0.3, -0.1], 1, MATCH, "INCONCLUSIVE",
     "open edge"),
    ("C7 range held", [-3, -4, -5, -3.5, -4.5, -4], 1, RANGE, "SUPPORTED", "effect"),
    ("C7 range: smaller loss", [-1, -1.5, -2, -1.2, -1.8, -1.1], 1, RANGE, "CONTRADICTED",
     "smaller"),
    ("C7 range: larger loss", [-7, -8, -6, -7.5, -6.5, -7], 1, RANGE, "CONTRADICTED",
     "larger"),
    ("better: meaningful", BIG, 1, BETTER, "SUPPORTED", "effect"),
    ("better: significant but negligible", [0.1, 0.2, 0.3, 0.15, 0.25, 0.2], 1, BETTER,
     "CONTRADICTED", "no meaningful effect"),
    ("better: undecided", [-0.5, 1, 2, 0.3, 0.8, 1], 1, BETTER, "INCONCLUSIVE",
     "open effect"),
    ("not slower: shown", [-1, 0, 0.2, -0.5, 0.4, 0.1], 1, NOT_SLOWER, "SUPPORTED", "inside"),
    ("not slower: slower", BIG, 1, NOT_SLOWER, "CONTRADICTED", "above"),
    ("not slower: undecided", [0, 0.2, 0.8, 0.1, 0.3, 0.4], 1, NOT_SLOWER, "INCONCLUSIVE",
     "open edge"),
    ("m = 2 needs 7 pairs", [5] * 6, 2, POINT2, "UNTESTABLE", "n too small"),
    ("m = 2 with 7 pairs", [*UP, 2], 2, POINT2, "SUPPORTED", "effect"),
    ("m = 24 with 9 pairs", [2] * 9, 24, POINT2, "UNTESTABLE", "n too small"),
    ("m = 24 with 10 pairs", [2] * 10, 24, POINT2, "SUPPORTED", "effect"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "diffs_pp", "m", "region", "verdict", "code"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_hand_checked_case(label, diffs_pp, m, region, verdict, code):
    diffs = np.asarray(diffs_pp, dtype=float) * PP
    dec = decide(diffs, m, region, DELTA)
    assert (dec.verdict, dec.code) == (verdict, code), dec.reason
    if verdict != "UNTESTABLE":
        # The minimal-count cases: interval = [min, max], adjusted p = m * 2 / 2^n when all
        # differences share a sign.
        assert (dec.ci_low, dec.ci_high) == pytest.approx((diffs.min(), diffs.max()))
        if (diffs > 0).all() or (diffs < 0).all():
            assert dec.p_adjusted == pytest.approx(min(1.0, m * 2 / 2 ** diffs.size))
        assert (dec.p_adjusted <= 0.05) == (dec.ci_low > 0 or dec.ci_high < 0)
    elif code == "n too small":  # a p exists but cannot reach alpha; the interval is unbounded
        assert dec.p_adjusted > 0.05 and math.isinf(dec.ci_low) and dec.seeds_needed > len(diffs)
    else:
        assert math.isnan(dec.p_adjusted)
    # The same case in percent units (SESOI 0.5) gives the same verdict.
    scaled = type(region)(region.low * 100, region.high * 100, region.target * 100,
                          region.bounded)  # fmt: skip
    assert decide(diffs * 100, m, scaled, DELTA * 100).verdict == verdict


def test_the_cases_are_enough():
    assert len(CASES) >= 30


def test_every_reason_code_has_one_verdict_and_a_short_reason():
    assert set(VERDICT_OF) == set(REASON_CODES) == set(SHORT_REASON) - {EXACT_COUNT}
    assert set(VERDICT_OF.values()) == set(VERDICTS)
