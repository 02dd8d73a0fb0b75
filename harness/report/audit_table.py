"""A small table type for the audit sections, rendered alike in HTML, Markdown and JSON.

Each cell is display text plus an optional numeric sort key, link and tooltip; `records` keeps
the raw numbers (database units) for the JSON export. Strings are escaped by the renderers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.report.claim_parts import PERCENT_METRICS


@dataclass
class AuditTable:
    id: str  # HTML id, unique in the page
    title: str
    header: list[str]
    rows: list[list[dict[str, str]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    def plain_rows(self) -> list[list[str]]:
        return [[c["text"] for c in row] for row in self.rows]


def cell(text: Any, sort: float | None = None, href: str = "", title: str = "") -> dict[str, str]:
    sort_key = repr(float(sort)) if sort is not None and math.isfinite(sort) else ""
    return {"text": str(text), "sort": sort_key, "href": href, "title": title}


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def value(x: float, metric: str) -> str:
    """A level in display units: '91.23%' for accuracies, '0.046' else, '12.0' epochs."""
    if not finite(x):
        return "–"
    if metric in PERCENT_METRICS:
        return f"{x * 100:.2f}%"
    if metric in ("epochs_run", "best_epoch"):
        return f"{x:.1f}"
    return f"{x:.3f}"


def delta(x: float, metric: str) -> str:
    """A difference in display units: '+1.23 pp', '-0.004', '+2.0 epochs'."""
    if not finite(x):
        return "–"
    if metric in PERCENT_METRICS:
        return f"{x * 100:+.2f} pp"
    if metric in ("epochs_run", "best_epoch"):
        return f"{x:+.1f} epochs"
    return f"{x:+.3f}"


def estimate_text(est: dict[str, Any]) -> str:
    """'+1.23 pp (95% CI -0.50 pp to +2.96 pp; 3 pairs; p 0.12 / 0.25)', or unpaired means."""
    metric = est["metric"]
    if not est["n_a"] or not est["n_b"]:
        return "–"
    if not est["n_pairs"]:
        return (
            f"{delta(est['delta'], metric)} (difference of means; no run pairs on seed and split)"
        )
    text = delta(est["delta"], metric)
    if finite(est["ci_low"]):
        text += f" (95% CI {delta(est['ci_low'], metric)} to {delta(est['ci_high'], metric)}; "
    else:
        text += " ("
    text += f"{est['n_pairs']} pair{'s' if est['n_pairs'] != 1 else ''}"
    if finite(est["p_value"]) or finite(est["p_permutation"]):
        text += f"; p {_p(est['p_value'])} t / {_p(est['p_permutation'])} sign-flip"
    return text + ")"


def _p(x: float) -> str:
    return f"{x:.2g}" if finite(x) else "–"
