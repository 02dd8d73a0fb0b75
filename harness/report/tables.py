"""Tables 3-9 of the paper rebuilt from the results frame (harness.report.load.load_results).

Each table is a `ReportTable`: a long frame of cells (one per row x column, with mean, SD, n,
the per-seed values, the paper's value, ours - paper, and the significance marks against the
baseline(s)), plus the paper's layout. Values are in the paper's units (percent for accuracies
and gaps), converted from the database's fractions here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.datasets import DATASET_NAMES, get_source
from harness.experiment.paper import paper_values
from harness.report import stats
from harness.report.comparisons import Comparisons
from harness.report.signed_rank import normalise, signed_rank
from harness.report.variance import cell_sources, sources_text

BASELINE = "resnet18"
MAIN_MODELS = ("resnet18", "gradattn_nope", "gradattn_learnable", "gradattn_rope")
TABLE9_MODELS = (*MAIN_MODELS[:1], "se_resnet18", "cbam_resnet18", *MAIN_MODELS[1:])
TABLE9_BASELINES = ("resnet18", "se_resnet18", "cbam_resnet18")
ALPHA = 0.05

BASELINE_SHORT = {"resnet18": "R", "se_resnet18": "SE", "cbam_resnet18": "CBAM"}
# Table 3 names, from each dataset's own module (Source.label).
DATASET_LABELS = {name: get_source(name).label for name in DATASET_NAMES}
METRIC_LABELS = {
    "top1": "Top-1 (%)",
    "top3": "Top-3 (%)",
    "top5": "Top-5 (%)",
    "f1": "F1 (macro)",
    "ece": "ECE",
    "precision_macro": "Precision (macro)",
    "recall_macro": "Recall (macro)",
    "f1_macro": "F1 (macro)",
    "precision_weighted": "Precision (weighted)",
    "recall_weighted": "Recall (weighted)",
    "f1_weighted": "F1 (weighted)",
    "gen_gap": "Gap (pp)",
    "ghs_1e-7_1e2": "GHS [1e-7, 1e2]",
    "ghs_1e-6_1e1": "GHS [1e-6, 1e1]",
    "ghs_1e-5_1e0": "GHS [1e-5, 1e0]",
    "param_ghs_1e-6_1e1": "GHS param-mode [1e-6, 1e1]",
    "n_vanishing": "Vanishing layers",
    "n_silent": "Silent layers",
    "grad_norm_avg": "Grad norm avg",
    "grad_norm_std": "Grad norm SD",
    "grad_norm_min": "Grad norm min",
    "grad_norm_max": "Grad norm max",
    "epoch_seconds": "Seconds / epoch",
}
# Display unit per metric: percent-like metrics are multiplied by 100 (the DB stores fractions).
PERCENT_METRICS = {"top1", "top3", "top5", "gen_gap"}
DECIMALS = {"percent": 2, "fraction": 3, "seconds": 2, "norm": 3, "layers": 1}


def metric_unit(metric: str) -> str:
    if metric in PERCENT_METRICS:
        return "percent"
    if metric == "epoch_seconds":
        return "seconds"
    if metric.startswith("grad_norm"):
        return "norm"
    if metric.startswith("n_"):
        return "layers"
    return "fraction"


def to_display(metric: str, value: float) -> float:
    """A database value (fraction) in the paper's printed unit."""
    return value * 100.0 if metric in PERCENT_METRICS else value


def fmt(value: float | None, metric: str, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    decimals = DECIMALS[metric_unit(metric)]
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def label(name: str, labels: dict[str, str]) -> str:
    return labels.get(name, name)


@dataclass(frozen=True)
class TableSpec:
    number: int
    title: str
    metrics: tuple[str, ...]
    models: tuple[str, ...]
    by_metric: bool  # True: rows (dataset, model), columns metrics; else rows dataset, cols model
    baselines: tuple[str, ...] = (BASELINE,)
    all_models_with_data: bool = False  # rows for every (dataset, model) with data
    note: str = ""


TABLE_SPECS: tuple[TableSpec, ...] = (
    TableSpec(3, "Top-1 accuracy (%)", ("top1",), MAIN_MODELS, False),
    TableSpec(
        4, "Top-3/Top-5 accuracy (%), F1 and ECE", ("top3", "top5", "f1", "ece"),
        MAIN_MODELS, True,
        note="The paper prints these for its representative pairs; F1 is the macro F1 "
        "(Section 4.3.1), although some of the paper's values equal the weighted F1.",
    ),
    TableSpec(
        5, "Precision, recall and F1 (macro and weighted)",
        ("precision_macro", "recall_macro", "f1_macro",
         "precision_weighted", "recall_weighted", "f1_weighted"),
        MAIN_MODELS, True,
    ),
    TableSpec(
        6, "Generalization gap (pp): train - validation accuracy at the evaluated epoch",
        ("gen_gap",), MAIN_MODELS, False,
    ),
    TableSpec(
        7, "Gradient health: GHS under three threshold ranges, norms, vanishing layers",
        ("ghs_1e-7_1e2", "ghs_1e-6_1e1", "ghs_1e-5_1e0", "param_ghs_1e-6_1e1", "n_vanishing",
         "n_silent", "grad_norm_avg", "grad_norm_std", "grad_norm_min", "grad_norm_max"),
        MAIN_MODELS, True, all_models_with_data=True,
        note="The paper reports Tiny ImageNet only; we compute every dataset with data. GHS "
        "columns and norms are the output-gradient (module hook) mode unless marked param-mode "
        "(per-parameter gradient norms); silent layers count only under quirk ghs_count_silent.",
    ),
    TableSpec(
        8, "Average seconds per epoch (training + validation pass)", ("epoch_seconds",),
        MAIN_MODELS, False,
        note="Each cell names the device and how many jobs shared it (slots); times from "
        "different devices or slot counts are not comparable with each other or the paper.",
    ),
    TableSpec(
        9, "Top-1 accuracy (%) against attention baselines", ("top1",), TABLE9_MODELS, False,
        baselines=TABLE9_BASELINES,
    ),
)  # fmt: skip


@dataclass
class ReportTable:
    """One rebuilt table: its layout and a long frame of cells (see CELL_COLUMNS)."""

    spec: TableSpec
    rows: list[tuple[str, ...]]  # (dataset,) or (dataset, model)
    columns: list[str]  # models or metrics
    cells: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    _index: dict[tuple[str, ...], dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def number(self) -> int:
        return self.spec.number

    @property
    def row_fields(self) -> tuple[str, ...]:
        return ("dataset", "model") if self.spec.by_metric else ("dataset",)

    @property
    def column_field(self) -> str:
        return "metric" if self.spec.by_metric else "model"

    def cell(self, row: tuple[str, ...], column: str) -> dict[str, Any]:
        """The cell's record ({} if the layout has no such cell)."""
        if self._index is None:
            self._index = {}
            for rec in self.cells.to_dict("records"):
                key = tuple(rec[name] for name in self.row_fields) + (rec[self.column_field],)
                self._index[key] = rec
        return self._index.get((*row, column), {})

    def display(self) -> pd.DataFrame:
        """The table as the paper lays it out, one formatted string per cell."""
        records = []
        for row in self.rows:
            rec = {name: value for name, value in zip(self.row_fields, row, strict=True)}
            for column in self.columns:
                rec[column] = cell_text(self.cell(row, column))
            records.append(rec)
        return pd.DataFrame.from_records(records, columns=[*self.row_fields, *self.columns])


CELL_COLUMNS = (
    "table", "dataset", "model", "metric", "unit", "n", "mean", "sd", "values", "seeds",
    "job_ids", "paper", "diff", "marks", "info", "variance",
)  # fmt: skip


def cell_text(cell: dict[str, Any]) -> str:
    """'mean ± SD (n=k) | paper P | Δ D marks' -- the plain-text cell of MD/LaTeX/CSV."""
    if not cell:
        return ""
    metric = cell["metric"]
    paper = cell.get("paper")
    has_paper = paper is not None and not math.isnan(paper)
    if not cell["n"]:
        return f"no data | paper {fmt(paper, metric)}" if has_paper else "no data"
    text = f"{fmt(cell['mean'], metric)} ± {fmt(cell['sd'], metric)} (n={cell['n']})"
    if has_paper:
        text += f" | paper {fmt(paper, metric)} | Δ {fmt(cell['diff'], metric, signed=True)}"
    if cell.get("marks"):
        text += " " + marks_text(cell["marks"])
    if cell.get("info"):
        text += f" [{cell['info']}]"
    return text


def marks_text(marks: list[dict[str, Any]]) -> str:
    return " ".join(
        f"{BASELINE_SHORT.get(m['baseline'], m['baseline'])}{m['symbol']}" for m in marks
    )


def dedupe(results: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep one result per (protocol, dataset, model, seed, split_seed): the newest job.

    Two grids may hold the same seed of a cell; pairing by seed needs one row each.
    """
    ident = ["protocol", "dataset", "model", "seed", "split_seed"]
    kept = results.sort_values("job_id").drop_duplicates(ident, keep="last")
    return kept.sort_index(), len(results) - len(kept)


def _has_direction(metric: str) -> bool:
    return metric in stats.METRIC_DIRECTIONS


def paper_layout(number: int) -> pd.DataFrame:
    frame = paper_values()
    return frame[frame["table"] == number]


def _paper_datasets() -> set[str]:
    return set(paper_values()["dataset"])


def _row_keys(spec: TableSpec, layout: pd.DataFrame, data: pd.DataFrame) -> list[tuple[str, ...]]:
    datasets = list(dict.fromkeys(layout["dataset"]))
    datasets += sorted(set(data["dataset"]) - set(datasets))
    if not spec.by_metric:
        return [(d,) for d in datasets]
    pairs = set(zip(layout["dataset"], layout["model"], strict=True))
    with_data = set(zip(data["dataset"], data["model"], strict=True))
    rows = []
    for dataset in datasets:
        for model in spec.models:
            in_paper = (dataset, model) in pairs
            # Table 7 and datasets the paper never ran (e.g. the demo's) show every model
            # with data; elsewhere the paper's own (dataset, model) pairs.
            free = spec.all_models_with_data or dataset not in _paper_datasets()
            if in_paper or (free and (dataset, model) in with_data):
                rows.append((dataset, model))
    return rows


def _device_text(device: Any, provenance: Any) -> str:
    """'cuda:0 (NVIDIA H100 80GB HBM3)': the job's device and, when recorded, its model."""
    name = provenance.get("device_name") if isinstance(provenance, dict) else None
    text = str(device) if device and not pd.isna(device) else "unknown device"
    return f"{text} ({name})" if name else text


def _info(group: pd.DataFrame) -> str:
    """Device and slots (jobs sharing it) of the runs behind a Table 8 cell."""
    keys = pd.DataFrame(
        {
            "device": [_device_text(d, p) for d, p in zip(group["device"], group["provenance"],
                                                           strict=True)],
            "slots": ["?" if pd.isna(s) else str(int(s)) for s in group["slots"]],
        }
    )  # fmt: skip
    counts = keys.value_counts(sort=False)
    return "; ".join(f"{dev}, {slots} slot(s), n={n}" for (dev, slots), n in counts.items())


def build_table(
    spec: TableSpec, results: pd.DataFrame, comparisons: Comparisons | None = None
) -> ReportTable:
    """One table from one protocol's results (never mix protocols in a cell); `comparisons`
    are the section's shared paired results (harness.report.comparisons) over `results`."""
    comparisons = comparisons if comparisons is not None else Comparisons(results)
    data = results[results["model"].isin(spec.models)]
    layout = paper_layout(spec.number)
    rows = _row_keys(spec, layout, data)
    columns = list(spec.metrics) if spec.by_metric else list(spec.models)
    paper = {(r.dataset, r.model, r.metric): float(r.value) for r in layout.itertuples(index=False)}
    records: list[dict[str, Any]] = []
    for row in rows:
        for column in columns:
            dataset = row[0]
            model, metric = (row[1], column) if spec.by_metric else (column, spec.metrics[0])
            group = data[(data.dataset == dataset) & (data.model == model)]
            values = group[metric].dropna()
            shown = [to_display(metric, float(v)) for v in values]
            n = len(shown)
            mean = float(np.mean(shown)) if n else float("nan")
            sd = float(np.std(shown, ddof=1)) if n >= 2 else float("nan")
            published = paper.get((dataset, model, metric), float("nan"))
            records.append(
                {
                    "table": spec.number, "dataset": dataset, "model": model, "metric": metric,
                    "unit": metric_unit(metric), "n": n, "mean": mean, "sd": sd,
                    "values": shown, "seeds": [int(s) for s in group.loc[values.index, "seed"]],
                    "job_ids": [int(j) for j in group.loc[values.index, "job_id"]],
                    "paper": published, "diff": mean - published, "marks": [],
                    "info": _info(group) if spec.number == 8 and n else "",
                    "variance": sources_text(cell_sources(group)) if n else "",
                }
            )  # fmt: skip
    _add_marks(spec, records, data, comparisons)
    cells = pd.DataFrame.from_records(records, columns=list(CELL_COLUMNS))
    table = ReportTable(spec, rows, columns, cells)
    if spec.note:
        table.notes.append(spec.note)
    return table


def _add_marks(
    spec: TableSpec, records: list[dict[str, Any]], data: pd.DataFrame, comparisons: Comparisons
) -> None:
    """Significance against each baseline: the exact signed-rank test and its interval, one
    family per table (Bonferroni over the table's m tests), as in the claims audit."""
    tests: list[tuple[dict[str, Any], np.ndarray]] = []
    for rec in records:
        if not rec["n"] or not _has_direction(rec["metric"]):
            continue
        for baseline in spec.baselines:
            # Baselines are marked against the first (ResNet-18) only, not against each other.
            if rec["model"] == baseline or not (data.model == baseline).any():
                continue
            if rec["model"] in spec.baselines and baseline != spec.baselines[0]:
                continue
            result = comparisons.paired(rec["metric"], rec["dataset"], rec["model"], baseline,
                                        oriented=True)  # fmt: skip
            if result.n == 0:
                continue
            diffs = np.asarray(result.diffs, dtype=float)
            finite = bool(np.isfinite(diffs).all())
            mark = {"baseline": baseline, "n": int(result.n), "testable": finite,
                    "mean_diff": float(result.mean_diff), "p_adjusted": float("nan"),
                    "ci_low": float("nan"), "ci_high": float("nan"), "m": 0,
                    "symbol": "n/t"}  # fmt: skip
            rec["marks"].append(mark)
            if finite:
                tests.append((mark, diffs))
    for mark, diffs in tests:
        # Any positive unit gives the same test; the largest |difference| keeps values near 1.
        unit = float(np.abs(diffs).max()) or 1.0
        test = signed_rank(normalise(diffs, unit), len(tests), ALPHA)
        mark.update(m=len(tests), p_adjusted=test.p_adjusted, testable=test.testable,
                    ci_low=test.ci_low * unit, ci_high=test.ci_high * unit)  # fmt: skip
        if not test.testable:
            continue
        mark["symbol"] = "▲" if test.ci_low > 0 else "▼" if test.ci_high < 0 else "="


def build_tables(
    results: pd.DataFrame, comparisons: Comparisons | None = None
) -> list[ReportTable]:
    """Tables 3-9 from ONE protocol's results frame (deduplicated: render passes its section's
    frame and that frame's shared comparisons)."""
    protocols = set(results["protocol"])
    if len(protocols) > 1:
        raise ValueError(f"build_tables needs one protocol's results, got {sorted(protocols)}")
    results, dropped = dedupe(results)
    if comparisons is None or dropped:  # shared results must index this very frame
        comparisons = Comparisons(results)
    return [build_table(spec, results, comparisons) for spec in TABLE_SPECS]


LEGEND = (
    "Cells: mean ± SD over n seeds (sample SD), the paper's value, Δ = ours − paper. Marks "
    "against a baseline (R = ResNet-18, SE = SE-ResNet-18, CBAM = CBAM-ResNet-18), on seeds "
    "matched by (seed, split_seed): ▲ significantly better, ▼ significantly worse -- the exact "
    "Wilcoxon signed-rank test, two-sided, Bonferroni over the table's m tests (α = 0.05), "
    "whose inverted interval excludes 0 exactly when the mark is given; = no significant "
    "difference; n/t not testable (too few pairs for the exact test to reach α/m: at least "
    "log2(2m/α) pairs, e.g. 10 for m = 24)."
)
