"""The paper's claims (harness/paperdata/claims.yaml), one verdict each, from our own runs.

`evaluate_claims(results, protocol)` splits every claim into parts (one comparison per
dataset, baseline and candidate), computes each part's statistics with harness.report.stats,
applies VERDICT_RULE (harness.report.verdicts) and combines the parts. Nothing is typed in:
every number in a verdict is computed from `results` (the frame of harness.report.load) or read
from the paper's tables.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.experiment.paper import find_paper_value, paper_claims
from harness.report.claim_parts import (
    GRADATTN_VARIANTS,
    PERCENT_METRICS,
    Context,
    comparison_parts,
    fmt_value,
    level_parts,
    mean_sd_text,
    not_slower_parts,
    params_parts,
    value_text,
)
from harness.report.protocol_gate import Departures, baseline_word, gate
from harness.report.stats import t_interval
from harness.report.verdicts import (
    ALPHA,
    CONTRADICTED,
    INCONCLUSIVE,
    SESOI_DIFF,
    SUPPORTED,
    UNTESTABLE,
    VERDICT_RULE,
    combine_any,
    combine_every,
)

__all__ = [
    "GRADATTN_VARIANTS",
    "PERCENT_METRICS",
    "VERDICT_RULE",
    "ClaimVerdict",
    "evaluate_claims",
]

SELECTION_NOTE = (
    "'best GradAttn variant' = the variant with the best mean on these same runs, chosen after "
    "seeing the data (optimistic); its p is Holm-adjusted in a family holding all three variants"
)


@dataclass
class ClaimVerdict:
    """One claim's verdict; `parts` holds one dict per (dataset, baseline, candidate)."""

    id: str
    text: str
    source: str
    kind: str
    verdict: str
    reason: str
    baseline_check: str
    claimed: str
    parts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_claims(
    results: pd.DataFrame,
    protocol: str,
    *,
    alpha: float = ALPHA,
    claims: list[dict[str, Any]] | None = None,
    departures: Departures | None = None,
    design: Any = None,
    comparisons: Any = None,
) -> list[ClaimVerdict]:
    """A verdict for every claim (claims.yaml unless `claims` is given) from one protocol's runs.

    With `departures` (what these runs changed from their protocol), the baseline checks say
    so instead of "(not) reproduced"; the paper's claims become UNTESTABLE with the reason
    (harness.report.protocol_gate), a user's claims keep their verdicts and carry the label.
    With `design` (harness.report.sequential.Design) every part is decided sequentially."""
    frame = results
    if "protocol" in frame.columns:
        frame = frame[frame["protocol"] == protocol]
    paper = claims is None
    claims = claims if claims is not None else paper_claims()
    # Shared comparisons index the caller's frame; only valid when no protocol filter applied.
    shared = comparisons if comparisons is not None and len(frame) == len(results) else None
    ctx = Context(frame.reset_index(drop=True), alpha, claims, shared)
    ctx.departures = departures if departures is not None and departures.departs else None
    ctx.design = design
    verdicts = [_evaluate(ctx, claim) for claim in claims]
    if ctx.departures is None:
        return verdicts
    return [_off_protocol(v, c, ctx.departures, paper) for v, c in zip(verdicts, claims, strict=True)]


def _off_protocol(
    verdict: ClaimVerdict, claim: dict[str, Any], departures: Departures, paper: bool
) -> ClaimVerdict:
    if claim["metric"] == "params" and not departures.changes_architecture:
        return verdict  # training settings do not change a model's parameter count
    if not paper:
        verdict.notes.append(f"{departures.title}: these runs changed {departures.detail}.")
        return verdict
    return gate(verdict, departures, level="model" in claim)


def _devices(ctx: Context, metric: str) -> str:
    """Where the runs of `metric` were measured: devices and jobs sharing a device."""
    rows = ctx.df[ctx.df[metric].notna()] if ctx.has(metric) else ctx.df
    devices = sorted({str(d) for d in rows.get("device", pd.Series(dtype=str)).dropna()})
    slots = sorted({int(s) for s in rows.get("slots", pd.Series(dtype=float)).dropna()})
    return (
        f"measured on {', '.join(devices) or 'unknown devices'} with "
        f"{', '.join(map(str, slots)) or '?'} job(s) per device"
    )


# ---------------------------------------------------------------- claims


def _summarise(parts: list[dict[str, Any]], verdict: str) -> str:
    """Reason of a multi-part claim: the parts that decided the verdict, grouped by reason."""
    if not parts:
        return "no data"
    chosen = [p for p in parts if p["verdict"] == verdict] or parts
    groups: dict[str, list[str]] = {}
    shown = 6  # name at most this many parts per reason; the parts table lists them all
    for p in chosen:
        label = "/".join(str(x) for x in (p["dataset"], p.get("candidate")) if x)
        if p.get("baseline") and len({q.get("baseline") for q in parts}) > 1:
            label += f" vs {p['baseline']}"
        groups.setdefault(p["short"], []).append(label)
    texts = []
    for reason, labels in groups.items():
        more = f", +{len(labels) - shown} more" if len(labels) > shown else ""
        texts.append(f"{reason} ({', '.join(labels[:shown])}{more})")
    text = "; ".join(texts)
    if len(parts) == 1:
        return chosen[0]["reason"]
    return f"{len(chosen)} of {len(parts)} parts: {text}"


def _count_verdict(parts: list[dict[str, Any]], at_least: int, total: int) -> tuple[str, str]:
    if not any(p["n"] for p in parts):
        return UNTESTABLE, "no data"
    supported = sum(p["verdict"] == SUPPORTED for p in parts)
    possible = total - sum(p["verdict"] == CONTRADICTED for p in parts)
    if supported >= at_least:
        return SUPPORTED, (
            f"{supported} of {total} datasets shown better (claimed >= {at_least})"
        )
    if possible < at_least:
        return CONTRADICTED, (
            f"smaller than claimed: at most {possible} of {total} datasets can be better "
            f"(claimed >= {at_least})"
        )
    untestable = [p for p in parts if p["verdict"] == UNTESTABLE]
    if untestable:
        no_data = sum(p.get("code") == "no data" for p in untestable)
        why = [f"{no_data} without data"] if no_data else []
        if len(untestable) > no_data:
            why.append(f"{len(untestable) - no_data} untestable at this n")
        return UNTESTABLE, f"{supported} of {total} shown better; {', '.join(why)}"
    return INCONCLUSIVE, f"{supported} of {total} shown better; {possible} still possible"


def _sign_test(parts: list[dict[str, Any]]) -> dict[str, Any]:
    means = [p["mean_diff"] for p in parts if p["n"] and math.isfinite(p["mean_diff"])]
    wins, nonzero = sum(m > 0 for m in means), sum(m != 0 for m in means)
    p_value = float(sps.binomtest(wins, nonzero, 0.5, "greater").pvalue) if nonzero else math.nan
    return {"datasets_better": wins, "datasets_compared": nonzero, "p_value": p_value,
            "note": "one-sided sign test over datasets of the best variant's mean difference; "
                    "picking the best of three variants per dataset biases it upwards"}  # fmt: skip


def _evaluate(ctx: Context, claim: dict[str, Any]) -> ClaimVerdict:
    kind, metric = claim["kind"], claim["metric"]
    notes: list[str] = []
    extra: dict[str, Any] = {}
    if metric == "params":
        parts = params_parts(ctx, claim)
    elif kind == "directional" and metric == "epoch_seconds":
        parts = not_slower_parts(ctx, claim)
        notes.append(
            f"{metric} depends on the device and on how many jobs shared it: "
            f"{_devices(ctx, metric)}; the paper's times come from another machine"
        )
        notes.append("'not consistently slower' holds if at least one (dataset, variant) is shown "
                     "not meaningfully slower (per-epoch time below +10%)")  # fmt: skip
    elif "model" in claim:
        parts = level_parts(ctx, claim)
    else:
        parts = comparison_parts(ctx, claim)
    if claim.get("candidate") == "best_gradattn_variant":
        notes.append(SELECTION_NOTE)

    verdicts = [p["verdict"] for p in parts]
    if kind == "count":
        total = len(claim["datasets"])
        verdict, reason = _count_verdict(parts, int(claim["at_least"]), total)
        sign = extra["sign_test"] = _sign_test(parts)
        if sign["datasets_compared"]:
            better, compared = sign["datasets_better"], sign["datasets_compared"]
            reason += f"; sign test over datasets: {better} of {compared} better, "
            reason += f"p = {sign['p_value']:.3g}"
    elif kind == "directional" and metric == "epoch_seconds":
        verdict = combine_any(verdicts)
        reason = f"{_summarise(parts, verdict)}; device-dependent ({_devices(ctx, metric)})"
    else:
        verdict = combine_every(verdicts)
        reason = _summarise(parts, verdict)
    claimed = _claimed_text(parts)
    if claim.get("candidate") == "best_gradattn_variant":
        claimed += " for the best of 3 variants, chosen on these runs (optimistic)"
    return ClaimVerdict(
        id=str(claim["id"]), text=str(claim["text"]), source=str(claim.get("source", "")),
        kind=kind, verdict=verdict, reason=reason, baseline_check=_baseline_check(ctx, claim),
        claimed=claimed, parts=parts, notes=notes, extra=extra,
    )  # fmt: skip


def _claimed_text(parts: list[dict[str, Any]]) -> str:
    regions = list(dict.fromkeys(p["claimed"] for p in parts))
    if len(regions) == 1:
        return regions[0]
    return "; ".join(f"{p['dataset']}/{p.get('candidate')}: {p['claimed']}" for p in parts)


def _baseline_check(ctx: Context, claim: dict[str, Any]) -> str:
    """One line: does our reference model reproduce the paper's value of it?"""
    metric = claim["metric"]
    if "model" in claim:
        models = [claim["model"]]
    elif "pairs" in claim:
        models = list(dict.fromkeys(p["baseline"] for p in claim["pairs"]))
    else:
        models = claim["baseline"] if isinstance(claim["baseline"], list) else [claim["baseline"]]
    if "pairs" in claim:
        datasets = list(dict.fromkeys(p["dataset"] for p in claim["pairs"]))
    elif claim.get("datasets") or claim.get("dataset"):
        datasets = claim.get("datasets") or [claim["dataset"]]
    else:
        datasets = sorted(ctx.df.loc[ctx.df["model"].isin(models), "dataset"].unique()) if len(
            ctx.df) else []  # fmt: skip
    # A level claim (C14, C15) states the paper's value itself where no table gives it.
    stated = ("the claim", float(claim["value"])) if "model" in claim else None
    items, missing = [], []
    for model in models:
        for dataset in datasets:
            text = _baseline_item(ctx, metric, dataset, model, stated)
            if text is None:
                missing.append(dataset if len(models) == 1 else f"{dataset}/{model}")
            else:
                items.append(text)
    if missing:
        items.append(f"no runs for {', '.join(missing)}")
    return f"{', '.join(models)} {metric} vs paper: " + ("; ".join(items) or "no runs")


def _baseline_item(
    ctx: Context, metric: str, dataset: str, model: str, stated: tuple[str, float] | None
) -> str | None:
    """Paper value vs our mean +- SD and 95% interval for one cell; None without runs."""
    paper = find_paper_value(dataset, model, metric) or stated
    values = ctx.values(metric, dataset, model)[metric].to_numpy(float) if ctx.has(metric) else []
    source = paper[0].split(":")[0] if paper else ""
    paper_text = f"paper {value_text(paper[1], metric)} ({source})" if paper else "paper: n/a"
    if len(values) == 0:
        return None
    mean = float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    low, high = t_interval(len(values), mean, sd, 0.95)
    ours = f"ours {value_text(mean, metric)}"
    if math.isfinite(sd):
        ours = f"ours {mean_sd_text(mean, sd, metric)}"
    ours += f" (n={len(values)}"
    ours += f", 95% CI {value_text(low, metric)} to {value_text(high, metric)})" if math.isfinite(
        low) else ")"  # fmt: skip
    if paper is None:
        return f"{dataset} {paper_text}; {ours}"
    gap = mean - paper[1]
    if metric == "params":
        same = abs(gap) <= 0.01 * paper[1]  # "~11.2M": the paper rounds to 0.1M
    else:
        inside = math.isfinite(low) and low <= paper[1] <= high
        # Within the smallest effect of interest; 10% for quantities without one (seconds).
        tolerance = SESOI_DIFF.get(metric, 0.10 * abs(paper[1]))
        same = inside or abs(gap) <= tolerance
    departed = ctx.departures
    if metric == "params" and departed is not None and not departed.changes_architecture:
        departed = None  # a parameter count is the paper's whatever the training settings
    word = baseline_word(departed, same, fmt_value(gap, metric, "diff"))
    return f"{dataset} {paper_text} vs {ours}: {word}"
