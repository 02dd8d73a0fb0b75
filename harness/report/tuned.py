"""'Tuned vs paper hyper-parameters': does GradAttn's gain over ResNet-18 survive tuning both?

Per protocol with a base arm and a tuned arm: every (dataset, model) with runs in both (top-1
mean ± SD, the paired difference, the tuned lr / weight decay / dropout read from the job
configs), then the reviewer's figure -- each GradAttn variant's top-1 minus ResNet-18's under
paper hyper-parameters and under tuned ones -- and, when the database holds Optuna studies,
harness.tuning.results.study_summaries with a computed equal-budget check.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness.experiment.config import PROTOCOLS
from harness.models import MODEL_LABELS
from harness.report import stats
from harness.report.arms import Arm
from harness.report.audit_table import AuditTable, cell, delta, estimate_text, finite, value
from harness.report.claim_parts import GRADATTN_VARIANTS
from harness.report.differences import models_in, paired_between
from harness.report.tables import BASELINE, DATASET_LABELS, label


def _hp_text(frame: pd.DataFrame, name: str) -> str:
    values = sorted({float(v) for v in frame[name].dropna()}) if name in frame.columns else []
    if not values:
        return "model default" if name == "dropout" else "–"
    return ", ".join(f"{v:.3g}" for v in values)


def _mean_sd(frame: pd.DataFrame, dataset: str, model: str) -> tuple[str, float]:
    values = frame.loc[(frame.dataset == dataset) & (frame.model == model), "top1"].dropna()
    if values.empty:
        return "–", math.nan
    mean = float(values.mean())
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    sd_text = f"{sd * 100:.2f}" if finite(sd) else "–"
    return f"{mean * 100:.2f} ± {sd_text} (n={len(values)})", mean


def _gap(frame: pd.DataFrame, dataset: str, variant: str) -> stats.PairedResult:
    """variant - ResNet-18 top-1 within one arm, paired on (seed, split_seed), two-sided."""
    rows = frame[(frame.dataset == dataset) & frame.model.isin((variant, BASELINE))]
    return stats.paired_cell(rows, "top1", dataset, variant, BASELINE, alternative="two-sided")


def _gap_text(res: stats.PairedResult) -> str:
    if not res.n:
        return "no pairs"
    inner = [f"n={res.n}"]
    if finite(res.ci_low):
        inner.insert(0, f"95% CI {delta(res.ci_low, 'top1')} to {delta(res.ci_high, 'top1')}")
    return f"{delta(res.mean_diff, 'top1')} ({'; '.join(inner)})"


def survives(paper: stats.PairedResult, tuned: stats.PairedResult) -> str:
    """A computed one-liner: what the tuned arm's interval says about the gain."""
    if tuned.n < 2 or not finite(tuned.ci_low):
        return f"untestable after tuning (n={tuned.n} pairs)"
    before = "gain" if paper.n and paper.mean_diff > 0 else "difference"
    if tuned.ci_low > 0:
        return f"{before} holds with tuned hyper-parameters (interval above 0)"
    if tuned.ci_high < 0:
        return "ResNet-18 better with tuned hyper-parameters (interval below 0)"
    return f"{before} not shown with tuned hyper-parameters (interval includes 0)"


def tuned_tables(
    arms: dict[Arm, pd.DataFrame], budget: dict[tuple[str, str], str] | None = None
) -> list[AuditTable]:
    """The tuned-vs-paper tables; `budget` maps (protocol, dataset) to the equal-budget check
    of the tuning studies (tuning_table), shown beside each gap."""
    budget = budget or {}
    tables: list[AuditTable] = []
    for protocol in PROTOCOLS:
        paper, tuned = arms.get(Arm(protocol)), arms.get(Arm(protocol, "tuned"))
        if paper is None or tuned is None:
            continue
        cells = AuditTable(
            id=f"tuned-{protocol}-cells",
            title=f"Protocol {protocol}: top-1 with paper vs tuned hyper-parameters",
            header=["Dataset", "Model", "Paper hparams top-1 (%)", "Tuned top-1 (%)",
                    "Δ (tuned − paper)", "Tuned lr", "Tuned weight decay", "Tuned dropout",
                    "Paper lr / wd / dropout"],
        )  # fmt: skip
        gaps = AuditTable(
            id=f"tuned-{protocol}-gaps",
            title=f"Protocol {protocol}: GradAttn variant − ResNet-18 top-1, paper vs tuned "
            "hyper-parameters",
            header=["Dataset", "Variant", "Gap, paper hparams", "Gap, tuned hparams",
                    "Change of the gap", "Reading of the tuned gap", "Equal tuning budget"],
            notes=["Gaps pair the variant's and ResNet-18's runs on (seed, split seed) within "
                   "one arm (two-sided 95% t-interval, unadjusted)."],
        )  # fmt: skip
        for dataset in sorted(set(paper.dataset) & set(tuned.dataset)):
            for model in models_in(paper, tuned, dataset=dataset):
                both = [f[(f.dataset == dataset) & (f.model == model)] for f in (paper, tuned)]
                if any(part.empty for part in both):
                    continue
                p_text, p_mean = _mean_sd(paper, dataset, model)
                t_text, t_mean = _mean_sd(tuned, dataset, model)
                est = paired_between(paper, tuned, "top1", dataset, model)
                hp = {name: _hp_text(both[1], name) for name in ("lr", "weight_decay", "dropout")}
                base_hp = " / ".join(
                    _hp_text(both[0], n) for n in ("lr", "weight_decay", "dropout")
                )
                cells.rows.append(
                    [cell(label(dataset, DATASET_LABELS)), cell(label(model, MODEL_LABELS)),
                     cell(p_text, p_mean), cell(t_text, t_mean),
                     cell(estimate_text(est), est["delta"]), cell(hp["lr"]),
                     cell(hp["weight_decay"]), cell(hp["dropout"]), cell(base_hp)]
                )  # fmt: skip
                cells.records.append({"dataset": dataset, "model": model, "delta": est, **hp,
                                      "paper_hparams": base_hp})  # fmt: skip
            for variant in GRADATTN_VARIANTS:
                before, after = _gap(paper, dataset, variant), _gap(tuned, dataset, variant)
                if not before.n and not after.n:
                    continue
                change = after.mean_diff - before.mean_diff
                verdict = survives(before, after)
                check = budget.get((protocol, dataset), "no tuning study in this database")
                gaps.rows.append(
                    [cell(label(dataset, DATASET_LABELS)), cell(label(variant, MODEL_LABELS)),
                     cell(_gap_text(before), before.mean_diff),
                     cell(_gap_text(after), after.mean_diff), cell(delta(change, "top1"), change),
                     cell(verdict), cell(check)]
                )  # fmt: skip
                gaps.records.append({
                    "dataset": dataset, "variant": variant, "gap_paper": before.mean_diff,
                    "gap_paper_ci": [before.ci_low, before.ci_high], "n_paper": before.n,
                    "gap_tuned": after.mean_diff, "gap_tuned_ci": [after.ci_low, after.ci_high],
                    "n_tuned": after.n, "change": change, "verdict": verdict,
                    "equal_budget": check,
                })  # fmt: skip
        tables += [t for t in (cells, gaps) if t.rows]
    return tables


def study_frame(engine: Any) -> tuple[pd.DataFrame | None, str]:
    """harness.tuning.results.study_summaries(engine) as a frame, or (None, why not)."""
    try:
        from harness.tuning.results import study_summaries
    except ImportError:  # the tuning module is optional for reporting
        return None, "harness.tuning.tune is not available: no tuning summary"
    try:
        summaries = study_summaries(engine)
    except Exception as exc:  # no Optuna tables in this database, or an unreadable study
        return (
            None,
            f"no tuning summary: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
        )
    frame = pd.DataFrame(summaries)
    return (frame, "") if not frame.empty else (None, "")


def tuning_table(engine: Any) -> tuple[AuditTable | None, str]:
    """The Optuna studies in the database, with the equal-budget check per (protocol, dataset)."""
    frame, why = study_frame(engine)
    if frame is None:
        return None, why
    table = AuditTable(
        id="tuning-summary",
        title="Tuning studies (Optuna) and the equal-budget check",
        header=["Protocol", "Dataset", "Model", "Study", "Trials complete", "Trials pruned",
                "Best val acc", "Epochs", "Best params", "Equal budget in this cell"],
    )  # fmt: skip
    get = lambda row, name: row.get(name, "")  # noqa: E731
    budget: dict[tuple[str, str], str] = {}
    for (protocol, dataset), group in frame.groupby(["protocol", "dataset"], sort=True):
        per_model = {
            str(m): (int(g["trials_complete"].sum() + g["trials_pruned"].sum()),
                     tuple(sorted({str(e) for e in g["epochs"]})))
            for m, g in group.groupby("model")
        }  # fmt: skip
        equal = len(set(per_model.values())) == 1
        budget[(protocol, dataset)] = (
            "yes"
            if equal
            else "no: "
            + "; ".join(
                f"{m} {t} trials, {'/'.join(e)} epochs" for m, (t, e) in sorted(per_model.items())
            )
        )
    for row in frame.to_dict("records"):
        best = get(row, "best_value")
        check = budget[(row["protocol"], row["dataset"])]
        table.rows.append([cell(get(row, "protocol")), cell(get(row, "dataset")),
                           cell(get(row, "model")), cell(get(row, "study")),
                           cell(get(row, "trials_complete"), _num(row.get("trials_complete"))),
                           cell(get(row, "trials_pruned"), _num(row.get("trials_pruned"))),
                           cell(value(_num(best), "top1"), _num(best)),
                           cell(get(row, "epochs")), cell(get(row, "best_params")), cell(check)])  # fmt: skip
        table.records.append({**row, "equal_budget": check})
    table.notes.append(
        "Equal budget: every model of a (protocol, dataset) had the same number of trials "
        "(complete + pruned) and the same epochs per trial; computed from the studies."
    )
    return table, ""


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan
