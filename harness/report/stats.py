"""Paired statistics over seeds: the numbers behind every table cell and claim verdict.

A cell compares a candidate model with a baseline on one dataset and one metric. Runs are
paired by (seed, split_seed): the same seed and data split for both models, so the difference
of a pair removes the split's own difficulty. A PairedResult describes a cell (mean and SD of
the differences, a 95% t-interval, a paired t-test, an exact sign-flip test, d_z, wins and
losses) for the descriptive sections; verdicts and table marks rest on one family-wise
procedure instead (harness.report.signed_rank, harness.report.decision).

Orientation: `paired_cell` by default orients the difference so that positive = candidate
better (METRIC_DIRECTIONS); pass ``oriented=False`` for the raw candidate - baseline.
Relative effects use log-ratios: log(candidate / baseline) per pair (``scale="log"``); convert
back to a percentage with `log_to_rel`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.errors import HarnessError
from harness.report.sign_flip import sign_flip

ALTERNATIVES = ("two-sided", "greater", "less")


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise HarnessError(f"unknown alternative {alternative!r}; valid: {', '.join(ALTERNATIVES)}")


__all__ = [
    "ALTERNATIVES",
    "METRIC_DIRECTIONS",
    "CellRuns",
    "PairedResult",
    "cell_runs",
    "compare_cells",
    "direction",
    "family_size",
    "log_ratio",
    "log_to_rel",
    "one_sample",
    "paired_cell",
    "paired_comparison",
    "rel_to_log",
    "sign_flip_p",
    "t_interval",
]

_HIGHER = (
    "top1", "top3", "top5", "f1", "f1_macro", "f1_weighted", "precision_macro",
    "precision_weighted", "recall_macro", "recall_weighted",
    "ghs_1e-7_1e2", "ghs_1e-6_1e1", "ghs_1e-5_1e0", "param_ghs_1e-6_1e1",
)  # fmt: skip
_LOWER = (
    "ece", "nll", "gen_gap", "gen_gap_best", "gen_gap_last", "epoch_seconds", "train_seconds",
    "eval_seconds", "params", "best_epoch", "epochs_run", "n_vanishing", "n_silent",
)  # fmt: skip
# Declared once: which way is better for each metric ("higher" or "lower"). Metrics without
# a better direction (gradient-norm summaries) are absent on purpose.
METRIC_DIRECTIONS: dict[str, str] = {
    **{name: "higher" for name in _HIGHER},
    **{name: "lower" for name in _LOWER},
}


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of n (candidate, baseline) pairs; differences are candidate - baseline
    (or their oriented / log-ratio version, see `orientation`)."""

    n: int
    mean_diff: float
    sd_diff: float
    ci_low: float  # two-sided t-interval at `level`
    ci_high: float
    t: float
    p_value: float  # paired t-test under `alternative`
    p_permutation: float  # sign-flip test under `alternative` (harness.report.sign_flip)
    d_z: float  # mean / sd of the differences
    wins: int  # pairs with a positive difference
    losses: int  # pairs with a negative difference
    testable: bool  # False where n < 2 or the differences have no spread
    alternative: str = "greater"
    level: float = 0.95
    diffs: tuple[float, ...] = ()
    orientation: str = "a - b"
    job_ids: tuple[tuple[int, int], ...] = field(default=())  # (candidate, baseline) per pair

    def interval(self, level: float) -> tuple[float, float]:
        """Two-sided t-interval at another level (e.g. 1 - alpha/m for a family of m cells)."""
        return t_interval(self.n, self.mean_diff, self.sd_diff, level)


def t_interval(n: int, mean: float, sd: float, level: float) -> tuple[float, float]:
    """Two-sided Student-t interval for a mean; a point when sd is 0; NaN when n < 2."""
    if n < 2 or not math.isfinite(sd):
        return (math.nan, math.nan)
    if sd == 0:
        return (mean, mean)
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def sign_flip_p(diffs: Sequence[float], alternative: str = "greater") -> float:
    """p-value of the sign-flip test of mean(diffs) = 0, statistic = sum of the differences:
    by enumeration up to 20 pairs, exactly on the data's own grid beyond, else a conservative
    bound within about 0.002 (harness.report.sign_flip). NaN for no or non-finite values."""
    _check_alternative(alternative)
    d = np.asarray(diffs, dtype=float)
    if d.size == 0 or not np.isfinite(d).all():
        return math.nan  # no test on non-finite differences
    return sign_flip(d, alternative).p


def paired_comparison(
    a: Sequence[float],
    b: Sequence[float],
    alternative: str = "greater",
    level: float = 0.95,
) -> PairedResult:
    """Compare a (candidate) with b (baseline), pair by pair: differences a - b.

    `alternative` refers to mean(a - b): "greater" tests a > b. Where the differences have
    no spread the t-test is undefined (t and p_value NaN) but the interval is the point itself
    and the sign-flip test is still exact.
    """
    _check_alternative(alternative)
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise HarnessError(
            f"paired_comparison needs two equally long 1-D sequences (got {a_arr.shape} and "
            f"{b_arr.shape}); match the runs by seed first"
        )
    d = a_arr - b_arr
    if np.isnan(d).any():
        raise HarnessError("paired_comparison got NaN values; drop runs without the metric first")
    return _from_diffs(d, alternative, level)


def _from_diffs(d: np.ndarray, alternative: str, level: float, **extra) -> PairedResult:
    n = int(d.size)
    nan = math.nan
    if n == 0:
        return PairedResult(0, nan, nan, nan, nan, nan, nan, nan, nan, 0, 0, False,
                            alternative, level, **extra)  # fmt: skip
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else nan
    # Spread below float noise of the values counts as none (identical runs, exact quantities).
    spread = n > 1 and sd > 1e-12 * max(1.0, float(np.abs(d).max()))
    t_stat = p_value = d_z = nan
    if spread:
        t_stat = mean / (sd / math.sqrt(n))
        if alternative == "greater":
            p_value = float(sps.t.sf(t_stat, n - 1))
        elif alternative == "less":
            p_value = float(sps.t.cdf(t_stat, n - 1))
        else:
            p_value = float(2 * sps.t.sf(abs(t_stat), n - 1))
        d_z = mean / sd
    elif n > 1:
        sd = 0.0
    ci_low, ci_high = t_interval(n, mean, sd, level)
    return PairedResult(
        n=n,
        mean_diff=mean,
        sd_diff=sd,
        ci_low=ci_low,
        ci_high=ci_high,
        t=t_stat,
        p_value=p_value,
        p_permutation=sign_flip_p(d, alternative),
        d_z=d_z,
        wins=int(np.count_nonzero(d > 0)),
        losses=int(np.count_nonzero(d < 0)),
        testable=bool(spread),
        alternative=alternative,
        level=level,
        diffs=tuple(float(x) for x in d),
        **extra,
    )


def one_sample(
    x: Sequence[float], value: float, alternative: str = "two-sided", level: float = 0.95
) -> PairedResult:
    """A model's own level against a stated value: the differences x - value."""
    values = np.asarray(x, dtype=float)
    return paired_comparison(values, np.full(values.shape, float(value)), alternative, level)


def log_ratio(candidate: Sequence[float], baseline: Sequence[float]) -> np.ndarray:
    """log(candidate / baseline) per pair; ValueError if a value is not positive."""
    c, b = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    if (c <= 0).any() or (b <= 0).any():
        raise ValueError(
            "log-ratio needs positive values; a run has a value <= 0 (relative change undefined)"
        )
    return np.log(c) - np.log(b)  # exactly antisymmetric: swapping the two negates it


def rel_to_log(rel_change: float) -> float:
    """A relative change (-0.35 = 35% lower) on the log-ratio scale."""
    return math.log1p(rel_change)


def log_to_rel(log_value: float) -> float:
    """A log-ratio back to a relative change (0.2 -> +22.1%, as the fraction 0.221)."""
    return math.expm1(log_value)


def direction(metric: str) -> str:
    """Which way is better for `metric` ("higher" or "lower"); HarnessError if it has none."""
    try:
        return METRIC_DIRECTIONS[metric]
    except KeyError:
        raise HarnessError(
            f"metric {metric!r} has no better direction; known: {', '.join(METRIC_DIRECTIONS)}"
        ) from None


# (dataset, model) -> {(seed, split_seed): (job_id, value)}: one metric's runs, indexed once.
CellRuns = dict[tuple[str, str], dict[tuple[int, int], tuple[int, float]]]


def cell_runs(df: pd.DataFrame, metric: str) -> CellRuns:
    """Index a results frame's runs of `metric` by cell and (seed, split_seed).

    A run without the metric is dropped; where one (seed, split_seed) has several runs, the
    latest job (highest job_id) counts.
    """
    if metric not in df.columns:
        raise HarnessError(f"results have no column {metric!r}; columns: {', '.join(df.columns)}")
    sub = df.loc[df[metric].notna(), ["job_id", "dataset", "model", "seed", "split_seed", metric]]
    index: CellRuns = {}
    for job, dataset, model, seed, split, value in sorted(sub.itertuples(index=False, name=None)):
        index.setdefault((dataset, model), {})[(int(seed), int(split))] = (int(job), float(value))
    return index


def paired_cell(
    df: pd.DataFrame | CellRuns,
    metric: str,
    dataset: str,
    model: str,
    baseline: str,
    *,
    alternative: str = "greater",
    level: float = 0.95,
    oriented: bool = True,
    scale: str = "diff",
) -> PairedResult:
    """Compare `model` with `baseline` on `dataset`, runs matched on (seed, split_seed).

    `df` is a results frame or its `cell_runs(df, metric)` index (faster for many cells).
    oriented=True: positive = candidate better (candidate - baseline for higher-is-better
    metrics, baseline - candidate for lower-is-better). scale="log": log-ratios
    log(candidate / baseline) (sign-flipped likewise when oriented). A run without the metric is
    dropped; if one (seed, split_seed) has several runs, the latest job (highest job_id) counts.
    """
    if scale not in ("diff", "log"):
        raise HarnessError(f"unknown scale {scale!r}; valid: diff, log")
    runs = cell_runs(df, metric) if isinstance(df, pd.DataFrame) else df
    sign = 1.0
    if oriented and direction(metric) == "lower":
        sign = -1.0
    cand = runs.get((dataset, model), {})
    base = runs.get((dataset, baseline), {})
    keys = sorted(set(cand) & set(base))
    c_val = np.array([cand[k][1] for k in keys], dtype=float)
    b_val = np.array([base[k][1] for k in keys], dtype=float)
    raw = log_ratio(c_val, b_val) if scale == "log" else c_val - b_val
    jobs = tuple((cand[k][0], base[k][0]) for k in keys)
    what = "log(candidate/baseline)" if scale == "log" else "candidate - baseline"
    orientation = f"-({what})" if sign < 0 else what
    return _from_diffs(sign * raw, alternative, level, orientation=orientation, job_ids=jobs)


def compare_cells(
    df: pd.DataFrame,
    metric: str,
    baseline: str,
    candidates: Sequence[str],
    datasets: Sequence[str] | None = None,
    *,
    scale: str = "diff",
    oriented: bool = False,
    level: float = 0.95,
    comparisons: Any = None,
) -> pd.DataFrame:
    """Every (dataset, candidate) cell of one table against `baseline`: one family.

    With `comparisons` (harness.report.comparisons.Comparisons of the same frame, level 0.95)
    each cell is taken from the section's shared results instead of computed again.

    Columns: dataset, candidate, baseline, metric, scale, result (PairedResult, two-sided, its
    `diffs` are what harness.report.decision tests), n, mean_diff, error (why a cell has no
    differences, e.g. a log-ratio of a value <= 0), and m: the cells with finite differences,
    the family size every cell's Bonferroni level uses.
    """
    if datasets is None:
        datasets = sorted(df.loc[df["model"] == baseline, "dataset"].unique())
    runs = comparisons.runs(metric) if comparisons is not None else cell_runs(df, metric)
    rows = []
    for dataset in datasets:
        for candidate in candidates:
            if candidate == baseline:
                continue
            try:
                if comparisons is not None and level == 0.95:
                    res = comparisons.paired(metric, dataset, candidate, baseline, scale=scale,
                                             oriented=oriented)  # fmt: skip
                else:
                    res = paired_cell(runs, metric, dataset, candidate, baseline,
                                      alternative="two-sided", level=level, oriented=oriented,
                                      scale=scale)  # fmt: skip
                error = None
            except ValueError as exc:  # log-ratio of a non-positive value
                res, error = _from_diffs(np.empty(0), "two-sided", level), str(exc)
            rows.append({"dataset": dataset, "candidate": candidate, "baseline": baseline,
                         "metric": metric, "scale": scale, "result": res, "n": res.n,
                         "mean_diff": res.mean_diff, "error": error})  # fmt: skip
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["m"] = family_size(frame["result"])
    return frame


def family_size(results: Sequence[PairedResult]) -> int:
    """Cells of a family that are tested: at least one pair, all differences finite."""
    return sum(1 for r in results if r.n and all(math.isfinite(x) for x in r.diffs))
