"""Claim parts: one comparison per (dataset, baseline, candidate), with its verdict.

`Context` holds one protocol's results and the families (one per metric, baseline and scale:
every dataset the baseline ran x every candidate the claims name against it) whose size m sets
each part's Bonferroni level. The builders turn a claim (claims.yaml or a user's file) into
parts, each decided by harness.report.decision.decide; harness.report.claims combines them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pandas as pd

from harness.report.decision import Decision, decide
from harness.report.sequential import decide_sequential
from harness.report.stats import (
    CellRuns,
    PairedResult,
    cell_runs,
    compare_cells,
    direction,
    family_size,
    log_to_rel,
    one_sample,
    rel_to_log,
)
from harness.report.verdicts import (
    CONTRADICTED,
    EXACT_COUNT,
    SESOI_LOG,
    SHORT_REASON,
    SUPPORTED,
    UNTESTABLE,
    Region,
    directional_region,
    level_region,
    not_worse_region,
    point_region,
    range_region,
    sesoi,
)

GRADATTN_VARIANTS = ("gradattn_nope", "gradattn_learnable", "gradattn_rope")
# Metrics the paper prints in percent (claims about them are in percentage points).
PERCENT_METRICS = ("top1", "top3", "top5", "gen_gap", "gen_gap_best", "gen_gap_last")
PARAMS_TOLERANCE = 0.10  # "about +14.3%": the stated relative increase +-10% of itself


SPECIAL_CANDIDATES = ("best_gradattn_variant", "each_gradattn_variant")


def named_candidates(claims: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(metric, baseline) -> the candidate models the claims compare with that baseline."""
    named: dict[tuple[str, str], set[str]] = {}
    for claim in claims:
        specs = [{**claim, **pair} for pair in claim.get("pairs", [])] or [claim]
        for spec in specs:
            if "baseline" not in spec or "candidate" not in spec:
                continue
            baselines = spec["baseline"] if isinstance(spec["baseline"], list) else [
                spec["baseline"]]  # fmt: skip
            models = GRADATTN_VARIANTS if spec["candidate"] in SPECIAL_CANDIDATES else (
                spec["candidate"],)  # fmt: skip
            for baseline in baselines:
                named.setdefault((spec["metric"], baseline), set()).update(models)
    return named


class Context:
    """One protocol's results and the claim families computed from them (cached)."""

    def __init__(
        self,
        df: pd.DataFrame,
        alpha: float,
        claims: list[dict[str, Any]] | None = None,
        comparisons: Any = None,
    ) -> None:
        self.df = df
        # The section's shared comparisons (harness.report.comparisons), if the caller has them.
        self.comparisons = comparisons
        self.alpha = alpha
        # What these runs changed from their protocol (harness.report.protocol_gate), if any.
        self.departures: Any = None
        # A sequential design (harness.report.sequential.Design) for audits; None: fixed n.
        self.design: Any = None
        self._named = named_candidates(claims or [])
        self._families: dict[tuple[str, str, str], pd.DataFrame] = {}
        self._cells: dict[tuple[str, str, str], dict[tuple[str, str], tuple]] = {}
        self._runs: dict[str, CellRuns] = {}

    def has(self, metric: str) -> bool:
        return metric in self.df.columns and not self.df.empty

    def family(self, metric: str, baseline: str, scale: str) -> pd.DataFrame:
        """Every dataset the baseline ran x every candidate named against it (at least the
        three GradAttn variants, the paper's table family)."""
        key = (metric, baseline, scale)
        if key not in self._families:
            if not self.has(metric):
                self._families[key] = pd.DataFrame()
            else:
                datasets = sorted(self.df.loc[self.df["model"] == baseline, "dataset"].unique())
                candidates = sorted(set(GRADATTN_VARIANTS) | self._named.get((metric, baseline),
                                                                            set()))  # fmt: skip
                present = set(self.df["model"])
                candidates = [c for c in candidates if c in present]
                self._families[key] = compare_cells(
                    self.df, metric, baseline, candidates, datasets, scale=scale,
                    comparisons=self.comparisons,
                )
        return self._families[key]

    def cell(
        self, metric: str, baseline: str, candidate: str, dataset: str, scale: str
    ) -> tuple[PairedResult, int, str | None]:
        """A family member's differences, the family size m and the error that stopped it."""
        key = (metric, baseline, scale)
        if key not in self._cells:
            fam = self.family(metric, baseline, scale)
            self._cells[key] = {
                (row.dataset, row.candidate): (row.result, int(row.m), row.error)
                for row in fam.itertuples(index=False)
            } if not fam.empty else {}  # fmt: skip
        found = self._cells[key].get((dataset, candidate))
        return found if found else (one_sample([], 0.0), 0, None)

    def values(self, metric: str, dataset: str, model: str) -> pd.DataFrame:
        """The runs of one cell that have the metric (latest job per seed and split)."""
        if not self.has(metric):
            return pd.DataFrame({"job_id": [], metric: []})
        if metric not in self._runs:
            self._runs[metric] = (self.comparisons.runs(metric) if self.comparisons is not None
                                  else cell_runs(self.df, metric))  # fmt: skip
        runs = self._runs[metric].get((dataset, model), {})
        pairs = [runs[key] for key in sorted(runs)]
        return pd.DataFrame({"job_id": [j for j, _ in pairs], metric: [v for _, v in pairs]})

    def best_variant(self, metric: str, dataset: str) -> str | None:
        means = {v: self.values(metric, dataset, v)[metric].mean() for v in GRADATTN_VARIANTS}
        means = {v: m for v, m in means.items() if math.isfinite(m)}
        if not means:
            return None
        pick = max if direction(metric) == "higher" else min
        return pick(means, key=means.get)


# ---------------------------------------------------------------- formatting


def fmt_value(x: float, metric: str, scale: str, offset: float = 0.0) -> str:
    if not math.isfinite(x):
        return "inf" if x > 0 else "-inf" if x < 0 else "n/a"
    if scale == "log":
        return f"{log_to_rel(x) * 100:+.1f}%"
    if scale == "level":
        return f"{offset + x:.3f}"
    if metric in PERCENT_METRICS:
        return f"{x * 100:+.2f} pp"
    if metric == "best_epoch":
        return f"{x:+.1f} epochs"
    return f"{x:+.3g}"


def region_text(region: Region, metric: str, scale: str, offset: float = 0.0) -> str:
    fmt = lambda x: fmt_value(x, metric, scale, offset)  # noqa: E731
    if math.isinf(region.high):
        return f">= {fmt(region.low)} (candidate higher)"
    if math.isinf(region.low):
        return f"< {fmt(region.high)}" if not region.bounded else (
            f"<= {fmt(region.high)} (candidate lower)")  # fmt: skip
    return f"{fmt(region.low)} to {fmt(region.high)}"


def value_text(x: float, metric: str) -> str:
    if not math.isfinite(x):
        return "n/a"
    if metric in PERCENT_METRICS:
        return f"{x * 100:.2f}%"
    if metric == "params":
        return f"{x / 1e6:.2f}M"
    if metric == "epoch_seconds":
        return f"{x:.2f} s"
    return f"{x:.3f}"


def mean_sd_text(mean: float, sd: float, metric: str) -> str:
    if metric in PERCENT_METRICS:
        return f"{mean * 100:.2f} +- {sd * 100:.2f}%"
    if metric == "params":
        return f"{mean / 1e6:.2f} +- {sd / 1e6:.2f}M"
    if metric == "epoch_seconds":
        return f"{mean:.2f} +- {sd:.2f} s"
    return f"{mean:.3f} +- {sd:.3f}"


# ---------------------------------------------------------------- parts


def _part(
    ctx: Context,
    res: PairedResult,
    m: int,
    region: Region,
    *,
    metric: str,
    scale: str,
    dataset: str,
    baseline: str | None,
    candidate: str | None,
    error: str | None = None,
    offset: float = 0.0,
    selection: str | None = None,
) -> dict[str, Any]:
    delta = sesoi(metric, scale)
    fmt = lambda x: fmt_value(x, metric, scale, offset)  # noqa: E731
    claimed = region_text(region, metric, scale, offset)
    if ctx.design is not None:
        dec: Decision = decide_sequential(res.diffs, m, region, delta, ctx.design, ctx.alpha,
                                          fmt=fmt, claimed=claimed, error=error)  # fmt: skip
    else:
        dec = decide(res.diffs, m, region, delta, ctx.alpha, fmt=fmt, claimed=claimed,
                     error=error)  # fmt: skip
    estimate = "no data"
    if dec.n and math.isfinite(dec.ci_low):
        kind = "sequential " if ctx.design is not None else ""
        at = dec.decided_at or dec.n
        estimate = (f"{fmt(dec.mean_diff)} ({kind}{dec.level * 100:.4g}% interval "
                    f"{fmt(dec.ci_low)} to {fmt(dec.ci_high)}, n={at})")  # fmt: skip
    elif dec.n:
        estimate = f"{fmt(dec.mean_diff)} (interval unbounded at n={dec.n})"
    jobs = sorted({j for pair in res.job_ids for j in pair})
    return {
        "dataset": dataset, "baseline": baseline, "candidate": candidate, "metric": metric,
        "scale": scale, "n": dec.n, "mean_diff": dec.mean_diff, "sd": dec.sd_diff,
        "ci_low": dec.ci_low, "ci_high": dec.ci_high, "level": dec.level,
        "p_adjusted": dec.p_adjusted, "m": dec.m, "verdict": dec.verdict, "code": dec.code,
        "reason": dec.reason, "short": SHORT_REASON[dec.code], "seeds_needed": dec.seeds_needed, "mde": dec.mde,
        "region_low": region.low, "region_high": region.high, "stated": region.target,
        "sesoi": delta, "offset": offset, "job_ids": jobs, "estimate": estimate,
        "claimed": claimed, "selection": selection, "decided_at": dec.decided_at,
        "horizon": dec.horizon,
    }  # fmt: skip


def _scale_and_region(
    spec: dict[str, Any], metric: str, delta_for: Callable[[str], float]
) -> tuple[str, Region]:
    """The claim's region on the comparison's scale, from its value / low-high / direction."""
    unit = spec.get("unit")
    if unit == "rel":
        # A stated relative change of a lower-is-better metric is a reduction.
        sign = -1.0 if spec.get("direction") == "lower" else 1.0
        scale, convert = "log", lambda v: rel_to_log(sign * float(v))
    elif unit == "pp":
        scale, convert = "diff", lambda v: float(v) / 100
    else:
        scale, convert = "diff", float
    delta = delta_for(scale)
    if "value" in spec:
        return scale, point_region(convert(spec["value"]), delta)
    if "low" in spec and "high" in spec:
        return scale, range_region(convert(spec["low"]), convert(spec["high"]))
    better = 1.0 if direction(metric) == "higher" else -1.0
    return scale, directional_region(better, delta)


def _candidates(ctx: Context, spec: str, metric: str, dataset: str) -> list[tuple[str, str | None]]:
    """(candidate, selection note) pairs for a claim's candidate field on one dataset."""
    if spec == "best_gradattn_variant":
        best = ctx.best_variant(metric, dataset)
        if best is None:
            return [(spec, "no GradAttn runs to select from")]
        return [(best, f"best mean of {len(GRADATTN_VARIANTS)} variants: {best}")]
    if spec == "each_gradattn_variant":
        return [(v, None) for v in GRADATTN_VARIANTS]
    return [(spec, None)]


def comparison_parts(ctx: Context, claim: dict[str, Any]) -> list[dict[str, Any]]:
    metric = claim["metric"]
    if "pairs" in claim:
        specs = [{**claim, **pair} for pair in claim["pairs"]]
    else:
        datasets = claim.get("datasets") or [claim["dataset"]]
        baselines = claim["baseline"]
        baselines = baselines if isinstance(baselines, list) else [baselines]
        specs = [{**claim, "dataset": d, "baseline": b} for d in datasets for b in baselines]
    parts = []
    for spec in specs:
        scale, region = _scale_and_region(spec, metric, lambda s: sesoi(metric, s))
        for candidate, selection in _candidates(ctx, spec["candidate"], metric, spec["dataset"]):
            res, m, error = ctx.cell(metric, spec["baseline"], candidate, spec["dataset"], scale)
            parts.append(_part(ctx, res, m, region, metric=metric, scale=scale,
                               dataset=spec["dataset"], baseline=spec["baseline"],
                               candidate=candidate, error=error, selection=selection))  # fmt: skip
    return parts


def level_parts(ctx: Context, claim: dict[str, Any]) -> list[dict[str, Any]]:
    """A model's own value against the stated one, per dataset; the claim's datasets are the family."""
    metric, model, value = claim["metric"], claim["model"], float(claim["value"])
    datasets = claim.get("datasets") or [claim["dataset"]]
    region = level_region(sesoi(metric, "level"))
    results = []
    for dataset in datasets:
        runs = ctx.values(metric, dataset, model)
        res = one_sample(runs[metric].to_numpy(float), value, "two-sided")
        ids = tuple((int(j), int(j)) for j in runs["job_id"]) if len(runs) else ()
        results.append(replace(res, job_ids=ids))
    m = family_size(results)
    return [
        _part(ctx, res, m, region, metric=metric, scale="level", dataset=dataset, baseline=None,
              candidate=model, offset=value)
        for dataset, res in zip(datasets, results, strict=True)
    ]  # fmt: skip


def params_parts(ctx: Context, claim: dict[str, Any]) -> list[dict[str, Any]]:
    """Parameter counts are deterministic: compare the relative increase exactly, no test."""
    stated = float(claim["value"])
    low, high = sorted((stated * (1 - PARAMS_TOLERANCE), stated * (1 + PARAMS_TOLERANCE)))
    baseline = claim["baseline"]
    datasets = sorted(ctx.df.loc[ctx.df["model"] == baseline, "dataset"].unique()) if ctx.has(
        "params") else []  # fmt: skip
    parts = []
    for dataset in datasets or ["(any)"]:
        base = ctx.values("params", dataset, baseline)
        for candidate, _ in _candidates(ctx, claim["candidate"], "params", dataset):
            cand = ctx.values("params", dataset, candidate)
            part = {"dataset": dataset, "baseline": baseline, "candidate": candidate,
                    "metric": "params", "scale": "exact", "n": min(len(base), len(cand)),
                    "claimed": f"{low * 100:+.1f}% to {high * 100:+.1f}%", "seeds_needed": None,
                    "p_adjusted": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                    "code": EXACT_COUNT, "m": None, "mde": math.nan,
                    "job_ids": sorted(int(j) for j in (*base["job_id"],
                                                       *cand["job_id"]))}  # fmt: skip
            if base.empty or cand.empty:
                parts.append({**part, "verdict": UNTESTABLE, "reason": "no data",
                              "short": "no data",
                              "estimate": "no data", "mean_diff": math.nan})  # fmt: skip
                continue
            rel = float(cand["params"].median() / base["params"].median() - 1)
            varies = cand["params"].nunique() > 1 or base["params"].nunique() > 1
            verdict, reason, short = SUPPORTED, "exact count within the stated increase", "as claimed"
            if not low <= rel <= high:
                verdict = CONTRADICTED
                short = "smaller than claimed" if rel < low else "larger than claimed"
                reason = f"exact count {rel * 100:+.2f}% is {short} ({part['claimed']})"
            estimate = (f"{rel * 100:+.2f}% ({value_text(cand['params'].median(), 'params')} vs "
                        f"{value_text(base['params'].median(), 'params')})")  # fmt: skip
            if varies:
                estimate += "; counts differ between runs (median used)"
            parts.append({**part, "verdict": verdict, "reason": reason, "short": short,
                          "estimate": estimate,
                          "mean_diff": rel, "ci_low": rel, "ci_high": rel})  # fmt: skip
    return parts


def not_slower_parts(ctx: Context, claim: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (dataset, variant): not meaningfully slower per epoch (log-ratio below +10%)."""
    metric, baseline = claim["metric"], claim["baseline"]
    datasets = sorted(ctx.df.loc[ctx.df["model"] == baseline, "dataset"].unique()) if ctx.has(
        metric) else []  # fmt: skip
    region = not_worse_region(SESOI_LOG)
    parts = []
    for dataset in datasets:
        for candidate, _ in _candidates(ctx, claim["candidate"], metric, dataset):
            res, m, error = ctx.cell(metric, baseline, candidate, dataset, "log")
            parts.append(_part(ctx, res, m, region, metric=metric, scale="log",
                               dataset=dataset, baseline=baseline, candidate=candidate,
                               error=error))  # fmt: skip
    return parts
