"""'Protocol differences': per dataset, paper vs reference-code side by side, and which switch
moves which number.

Runs of one model are paired across the two arms on (seed, split_seed) and compared with
harness.report.stats (paired t-interval, t-test and exact sign-flip test); without a pair the
difference of means is shown and said to be unpaired. A quirk's effect comes, in this order of
preference, from single-switch runs (paper + that quirk on, or reference-code with it off),
from the stored gradient rows (report-time quirks), or -- when it is the only training switch
that applies to a (dataset, model) -- from the whole reference-code - paper difference.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness.experiment.config import QUIRKS, REPORT_TIME_QUIRKS, quirk_applies
from harness.models import MODEL_LABELS
from harness.report import stats
from harness.report.arms import Arm
from harness.report.audit_table import AuditTable, cell, delta, estimate_text, value
from harness.report.load import PRIMARY_GHS
from harness.report.tables import DATASET_LABELS, TABLE9_MODELS, label

PAPER, REFERENCE = "paper", "reference-code"
DIFF_METRICS = ("top1", "ece", "epochs_run", PRIMARY_GHS)
TRAINING_QUIRKS = tuple(q for q in QUIRKS if q not in REPORT_TIME_QUIRKS)


def _runs(frame: pd.DataFrame, metric: str, dataset: str, model: str) -> dict[tuple, tuple]:
    if frame is None or frame.empty:
        return {}
    return stats.cell_runs(frame, metric).get((dataset, model), {})


def paired_between(
    a: pd.DataFrame | None, b: pd.DataFrame | None, metric: str, dataset: str, model: str
) -> dict[str, Any]:
    """b - a for one (dataset, model): runs paired on (seed, split_seed), two-sided.

    Where no run pairs, `delta` is the difference of the two means (n_pairs = 0, no CI)."""
    ra, rb = _runs(a, metric, dataset, model), _runs(b, metric, dataset, model)
    keys = sorted(set(ra) & set(rb))
    mean = lambda r: float(np.mean([v for _, v in r.values()])) if r else math.nan  # noqa: E731
    out: dict[str, Any] = {
        "metric": metric, "dataset": dataset, "model": model,
        "mean_a": mean(ra), "n_a": len(ra), "mean_b": mean(rb), "n_b": len(rb),
        "n_pairs": len(keys), "delta": mean(rb) - mean(ra), "ci_low": math.nan,
        "ci_high": math.nan, "p_value": math.nan, "p_permutation": math.nan,
        "job_ids": [[rb[k][0], ra[k][0]] for k in keys],
    }  # fmt: skip
    if keys:
        res = stats.paired_comparison(
            [rb[k][1] for k in keys], [ra[k][1] for k in keys], alternative="two-sided"
        )
        out.update(delta=res.mean_diff, ci_low=res.ci_low, ci_high=res.ci_high,
                   p_value=res.p_value, p_permutation=res.p_permutation)  # fmt: skip
    return out


def short_text(est: dict[str, Any]) -> str:
    """'+0.012 (3 pairs)': a difference without its interval (that goes in the tooltip)."""
    if not est["n_a"] or not est["n_b"]:
        return "–"
    pairs = est["n_pairs"]
    how = f"{pairs} pair{'s' if pairs != 1 else ''}" if pairs else "unpaired"
    return f"{delta(est['delta'], est['metric'])} ({how})"


def _silent_effect(frame: pd.DataFrame | None, dataset: str, model: str) -> dict[str, Any]:
    """ghs_count_silent on the stored gradient rows of the same runs: counted - ignored."""
    rows = pd.DataFrame() if frame is None else frame
    if not rows.empty:
        rows = rows[(rows.dataset == dataset) & (rows.model == model)]
        rows = rows.dropna(subset=["ghs_silent_counted", "ghs_silent_ignored"])
    out: dict[str, Any] = {
        "metric": PRIMARY_GHS, "dataset": dataset, "model": model, "n_a": len(rows),
        "n_b": len(rows), "n_pairs": len(rows), "delta": math.nan, "ci_low": math.nan,
        "ci_high": math.nan, "p_value": math.nan, "p_permutation": math.nan,
        "job_ids": [int(j) for j in rows.get("job_id", [])],
        "runs_with_silent": int((rows.get("n_silent", pd.Series(dtype=float)) > 0).sum()),
    }  # fmt: skip
    if len(rows):
        res = stats.paired_comparison(
            rows["ghs_silent_counted"].to_numpy(float),
            rows["ghs_silent_ignored"].to_numpy(float),
            alternative="two-sided",
        )
        out.update(delta=res.mean_diff, ci_low=res.ci_low, ci_high=res.ci_high,
                   p_value=res.p_value, p_permutation=res.p_permutation)  # fmt: skip
    return out


def _hint(paper: pd.DataFrame, dataset: str, model: str, quirk: str) -> str:
    """The enqueue command that would separate `quirk`, paired with the paper runs we have."""
    rows = paper[(paper.dataset == dataset) & (paper.model == model)] if len(paper) else paper
    grids = sorted(set(rows.get("grid", [])))
    grid = grids[0] if len(grids) == 1 and grids[0] in ("paper", "demo") else "GRID"
    seeds = sorted({int(s) for s in rows.get("seed", [])})
    cmd = f"harness enqueue --grid {grid} --protocol paper --datasets {dataset} --models {model}"
    if seeds:
        cmd += f" --seed-list {','.join(map(str, seeds))}"
    splits = {int(s) for s in rows.get("split_seed", [])}
    if len(splits) > 1 and all(rows["seed"] == rows["split_seed"]):
        cmd += " --vary-split"
    elif len(splits) == 1 and splits != {42}:
        cmd += f" --split-seed {splits.pop()}"
    return f"not separated: run `{cmd} --set quirk.{quirk}=true`"


def switch_effects(
    dataset: str,
    model: str,
    arms: dict[Arm, pd.DataFrame],
    protocol_delta: dict[str, Any],
) -> list[dict[str, Any]]:
    """One record per quirk for (dataset, model): applies?, measured effect and its source."""
    paper = arms.get(Arm(PAPER), pd.DataFrame())
    ref = arms.get(Arm(REFERENCE), pd.DataFrame())
    applicable = [q for q in TRAINING_QUIRKS if quirk_applies(q, dataset, model)]
    records = []
    for quirk in QUIRKS:
        applies = quirk_applies(quirk, dataset, model)
        kind = "report-time" if quirk in REPORT_TIME_QUIRKS else "training"
        estimates: list[tuple[str, dict[str, Any]]] = []
        for arm, frame in arms.items():
            switch = arm.single_switch()
            if switch == (quirk, True) and arm.protocol == PAPER:
                est = paired_between(paper, frame, "top1", dataset, model)
                source = f"single-switch runs: paper + quirk.{quirk}=true − paper"
            elif switch == (quirk, False) and arm.protocol == REFERENCE:
                est = paired_between(frame, ref, "top1", dataset, model)
                source = (
                    f"single-switch runs: reference-code − reference-code with quirk.{quirk}=false"
                )
            else:
                continue
            if est["n_a"] and est["n_b"]:
                estimates.append((source, est))
        if kind == "report-time" and applies:
            for name, frame in ((PAPER, paper), (REFERENCE, ref)):
                est = _silent_effect(frame, dataset, model)
                if est["n_pairs"]:
                    source = (f"from the stored gradient rows of the {name} runs: GHS counting "
                              f"silent layers − ignoring them ({est['runs_with_silent']} of "
                              f"{est['n_pairs']} runs have silent layers)")  # fmt: skip
                    estimates.append((source, est))
        status = "measured" if estimates else ""
        if (
            not estimates
            and applies
            and applicable == [quirk]
            and protocol_delta["n_a"]
            and (protocol_delta["n_b"])
        ):
            estimates.append((
                "attributed: the only training switch that applies here, so the whole "
                "reference-code − paper top-1 difference is its effect", protocol_delta,
            ))  # fmt: skip
            status = "attributed"
        if not estimates:
            status = _hint(paper, dataset, model, quirk) if applies else "does not apply"
        records.append({"quirk": quirk, "kind": kind, "applies": applies, "status": status,
                        "estimates": [{"source": s, **e} for s, e in estimates]})  # fmt: skip
    return records


def models_in(*frames: pd.DataFrame, dataset: str) -> list[str]:
    present = set()
    for frame in frames:
        if len(frame):
            present |= set(frame.loc[frame.dataset == dataset, "model"])
    ordered = [m for m in TABLE9_MODELS if m in present]
    return ordered + sorted(present - set(ordered))


def dataset_differences(arms: dict[Arm, pd.DataFrame]) -> list[AuditTable]:
    """Two tables per dataset with base runs under both protocols: side by side, switches."""
    paper, ref = arms.get(Arm(PAPER)), arms.get(Arm(REFERENCE))
    if paper is None or ref is None:
        return []
    tables = []
    for dataset in sorted(set(paper.dataset) & set(ref.dataset)):
        side = AuditTable(
            id=f"diff-{len(tables)}",
            title=f"{label(dataset, DATASET_LABELS)}: paper vs reference-code",
            header=["Model", "Paper top-1 (n)", "Reference-code top-1 (n)",
                    "Δ top-1 (ref − paper)", "Δ ECE", "Δ epochs run", "Δ GHS [1e-6, 1e1]"],
        )  # fmt: skip
        switches = AuditTable(
            id=f"diff-{len(tables) + 1}",
            title=f"{label(dataset, DATASET_LABELS)}: which switch moves which number",
            header=["Quirk", "Kind", "Model", "Applies", "Effect", "Source"],
            notes=["Training switches are measured on top-1; ghs_count_silent on GHS [1e-6, 1e1]."],
        )
        for model in models_in(paper, ref, dataset=dataset):
            ests = {m: paired_between(paper, ref, m, dataset, model) for m in DIFF_METRICS}
            top = ests["top1"]
            side.rows.append(
                [cell(label(model, MODEL_LABELS)),
                 cell(f"{value(top['mean_a'], 'top1')} ({top['n_a']})", top["mean_a"]),
                 cell(f"{value(top['mean_b'], 'top1')} ({top['n_b']})", top["mean_b"])]
                + [cell(estimate_text(top), top["delta"])]
                # The secondary metrics show the mean difference; the interval in the tooltip.
                + [cell(short_text(ests[m]), ests[m]["delta"], title=estimate_text(ests[m]))
                   for m in DIFF_METRICS[1:]]
            )  # fmt: skip
            side.records.append({"dataset": dataset, "model": model, **ests})
            for rec in switch_effects(dataset, model, arms, top):
                switches.records.append({"dataset": dataset, "model": model, **rec})
                effect = "; ".join(estimate_text(e) for e in rec["estimates"]) or "–"
                source = "; ".join(e["source"] for e in rec["estimates"]) or rec["status"]
                first = rec["estimates"][0]["delta"] if rec["estimates"] else None
                switches.rows.append(
                    [cell(rec["quirk"]), cell(rec["kind"]), cell(label(model, MODEL_LABELS)),
                     cell("yes" if rec["applies"] else "no"), cell(effect, first), cell(source)]
                )  # fmt: skip
        side.notes.append(
            "Δ = reference-code − paper, runs paired on (seed, split seed): mean difference, "
            "95% t-interval, p of the paired t-test and of the exact sign-flip test "
            "(two-sided, unadjusted). The reference-code GHS counts silent layers "
            "(quirk ghs_count_silent), the paper's does not."
        )
        tables += [side, switches]
    return tables
