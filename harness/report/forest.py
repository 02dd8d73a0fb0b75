"""The claims forest plot: every claim part's interval against what was claimed.

Parts of different metrics share one axis by being drawn in units of their own smallest effect
of interest (SESOI): the shaded band is +-1 SESOI ("no meaningful effect"), the bar is the
interval the verdict rule used, the dot the mean difference, the hollow diamond the stated
value (the claimed region as a thin line where it is a range or open-ended).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.report.figures import DPI, TITLE_Y, Figure, plt, safe_name

VERDICT_COLORS = {"SUPPORTED": "#1b7837", "CONTRADICTED": "#b2182b",
                  "INCONCLUSIVE": "#d8a200", "UNTESTABLE": "0.55"}  # fmt: skip
CLIP = 12.0  # SESOI units; longer intervals are drawn to the edge with an arrow-like cap


def _units(part: dict[str, Any], key: str) -> float:
    value, sesoi = part.get(key), part.get("sesoi")
    if value is None or not sesoi or not isinstance(value, int | float):
        return math.nan
    return float(value) / float(sesoi)


def forest_plot(claims: list[Any], protocol: str, out_dir: Path) -> list[Figure]:
    """One figure with a row per tested claim part (parameter counts have no interval)."""
    rows = [(claim, part) for claim in claims for part in claim.parts
            if part.get("sesoi") and part.get("n")]  # fmt: skip
    title = f"Claims forest plot ({protocol})"
    if not rows:
        return [Figure("forest", title, skipped="no claim part has paired runs")]
    height = 1.2 + 0.32 * len(rows)
    fig, ax = plt.subplots(figsize=(7.5, height))
    ax.axvspan(-1, 1, color="0.9", zorder=0, label="+-1 SESOI (no meaningful effect)")
    ax.axvline(0, color="0.4", lw=0.8, zorder=1)
    labels = []
    for y, (claim, part) in enumerate(rows):
        low, high = _units(part, "ci_low"), _units(part, "ci_high")
        color = VERDICT_COLORS.get(part["verdict"], "0.3")
        shown_low = max(low, -CLIP) if math.isfinite(low) else -CLIP
        shown_high = min(high, CLIP) if math.isfinite(high) else CLIP
        ax.plot([shown_low, shown_high], [y, y], color=color, lw=2.5, solid_capstyle="butt")
        r_low, r_high = _units(part, "region_low"), _units(part, "region_high")
        r_low = max(r_low, -CLIP) if not math.isnan(r_low) else -CLIP
        r_high = min(r_high, CLIP) if not math.isnan(r_high) else CLIP
        ax.plot([r_low, r_high], [y + 0.22, y + 0.22], color="0.25", lw=0.8)
        stated = _units(part, "stated")
        if math.isfinite(stated):
            ax.plot(np.clip(stated, -CLIP, CLIP), y + 0.22, marker="D", mfc="white",
                    mec="0.1", ms=5)  # fmt: skip
        mean = _units(part, "mean_diff")
        if math.isfinite(mean):
            ax.plot(np.clip(mean, -CLIP, CLIP), y, "o", color=color, ms=4)
        who = "/".join(str(x) for x in (part.get("dataset"), part.get("candidate")) if x)
        labels.append(f"{claim.id} {who} [{part['verdict'][:5].lower()}]")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.set_xlim(-CLIP - 0.5, CLIP + 0.5)
    ax.set_xlabel("difference in SESOI units (candidate - baseline; level - stated)")
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(title, fontsize=9, y=TITLE_Y)
    fig.subplots_adjust(left=0.34, right=0.98, top=1 - 0.4 / height, bottom=0.7 / height)
    name = safe_name("forest", protocol)
    fig.savefig(out_dir / name, dpi=DPI)
    plt.close(fig)
    caption = (
        "Bar: the interval each verdict used (exact signed-rank, Bonferroni over its family); "
        "dot: mean difference; thin line and diamond: the claimed region and stated value; "
        f"grey band: +-1 SESOI. Axis clipped at +-{CLIP:g} SESOI."
    )
    return [Figure("forest", title, file=name, caption=caption)]
