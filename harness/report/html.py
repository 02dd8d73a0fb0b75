"""index.html: view models for the jinja2 template (autoescaped: every database string is text)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from harness import __version__
from harness.models import MODEL_LABELS
from harness.report.audit import Audit, variance_audit_table
from harness.report.data import (
    ProtocolReport,
    ReportData,
    is_missing,
    provenance_items,
    template_text,
)
from harness.report.tables import (
    BASELINE_SHORT,
    DATASET_LABELS,
    LEGEND,
    METRIC_LABELS,
    ReportTable,
    fmt,
    label,
)

SYMBOL_CSS = {"▲": "better", "▼": "worse", "=": "same", "n/t": "nt"}
RUNS_HEADER = ["Job", "Key", "Grid", "Protocol", "Dataset", "Model", "Seed", "Split seed",
               "Status", "Device", "Top-1 (%)", "Epochs", "First error line", "Arm"]  # fmt: skip


def _num(value: Any, digits: int = 4) -> str:
    if is_missing(value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _cell_view(cell: dict[str, Any]) -> dict[str, Any]:
    if not cell:
        return {"n": 0, "paper": ""}
    metric = cell["metric"]
    paper = "" if is_missing(cell["paper"]) else fmt(cell["paper"], metric)
    view: dict[str, Any] = {"n": int(cell["n"]), "paper": paper}
    if not cell["n"]:
        return view
    diff = cell["diff"]
    view.update(
        mean=fmt(cell["mean"], metric),
        sd=fmt(cell["sd"], metric),
        sort=repr(float(cell["mean"])),
        diff=fmt(diff, metric, signed=True),
        diff_css="" if is_missing(diff) or diff == 0 else ("pos" if diff > 0 else "neg"),
        info=cell["info"],
        title=f"seeds {', '.join(map(str, cell['seeds']))}; jobs "
        f"{', '.join(map(str, cell['job_ids']))}; values "
        f"{', '.join(fmt(v, metric) for v in cell['values'])}"
        + (f"; {cell['variance']}" if cell.get("variance") else ""),
        marks=[
            {
                "text": f"{BASELINE_SHORT.get(m['baseline'], m['baseline'])}{m['symbol']}",
                "css": SYMBOL_CSS.get(m["symbol"], "nt"),
                "title": f"vs {label(m['baseline'], MODEL_LABELS)}: n={m['n']}, oriented mean "
                f"difference {_num(m['mean_diff'])} (database units), signed-rank interval "
                f"{_num(m['ci_low'])} to {_num(m['ci_high'])}, Bonferroni p="
                f"{_num(m['p_adjusted'])} (m={m['m']})",
            }
            for m in cell["marks"]
        ],
    )
    return view


def _table_view(table: ReportTable, anchor: str) -> dict[str, Any]:
    heads = ["Dataset", "Model"][: len(table.row_fields)]
    labels = METRIC_LABELS if table.spec.by_metric else MODEL_LABELS
    rows = []
    for row in table.rows:
        row_labels = [label(row[0], DATASET_LABELS)] + [label(v, MODEL_LABELS) for v in row[1:]]
        cells = [_cell_view(table.cell(row, column)) for column in table.columns]
        rows.append({"labels": row_labels, "cells": cells})
    return {
        "number": table.number,
        "anchor": f"{anchor}-table{table.number}",
        "title": table.spec.title,
        "notes": table.notes,
        "header": heads + [label(c, labels) for c in table.columns],
        "rows": rows,
    }


# Claim parts (harness.report.claims): "estimate" and "claimed" come formatted in the paper's
# units (pp for accuracies, % for log-ratio claims) by the claims module itself.
PART_FIELDS = [("dataset", "Dataset"), ("candidate", "Candidate"), ("baseline", "Baseline"),
               ("metric", "Metric"), ("estimate", "Mean difference (interval, n)"),
               ("claimed", "Claimed region"), ("m", "Family m"),
               ("p_adjusted", "Adjusted p"),
               ("verdict", "Verdict"), ("reason", "Reason"),
               ("seeds_needed", "Seeds needed")]  # fmt: skip


def _jobs_of(part: dict[str, Any]) -> list[int]:
    """Job ids of a claim part, flattened ((candidate, baseline) pairs or plain ids)."""
    out: list[int] = []
    for item in part.get("job_ids") or []:
        out.extend(int(j) for j in (item if isinstance(item, list | tuple) else [item]))
    return list(dict.fromkeys(out))


def _claim_view(claim: Any) -> dict[str, Any]:
    parts = []
    for part in getattr(claim, "parts", None) or []:
        values = []
        for key, _ in PART_FIELDS:
            value = part.get(key)
            sort = (
                repr(float(value))
                if isinstance(value, int | float) and not is_missing(value)
                else ""
            )
            labels = DATASET_LABELS if key == "dataset" else MODEL_LABELS
            text = label(value, labels) if isinstance(value, str) else _num(value)
            values.append({"text": text, "sort": sort})
        parts.append({"fields": values, "jobs": _jobs_of(part)})
    return {
        "id": getattr(claim, "id", "?"),
        "text": getattr(claim, "text", ""),
        "verdict": getattr(claim, "verdict", "UNTESTABLE"),
        "reason": getattr(claim, "reason", ""),
        "baseline_check": getattr(claim, "baseline_check", ""),
        "claimed": getattr(claim, "claimed", ""),
        "source": getattr(claim, "source", ""),
        "kind": getattr(claim, "kind", ""),
        "parts": parts,
        "part_header": [head for _, head in PART_FIELDS] + ["Runs"],
    }


def _scorecard(data: ReportData) -> list[dict[str, Any]]:
    """One row per (arm, claim): what a reader wants first, each linking to its evidence."""
    rows = []
    for report in data.protocols:
        for claim in report.claims:
            parts = [p for p in claim.parts if p.get("n")]
            if len(claim.parts) == 1 and parts:
                ours = parts[0].get("estimate", "")
            elif parts:
                counts = Counter(p["verdict"] for p in claim.parts)
                ours = f"{len(claim.parts)} parts: " + ", ".join(
                    f"{n} {v.lower()}" for v, n in sorted(counts.items()))  # fmt: skip
            else:
                ours = "no runs"
            ns = sorted({int(p["n"]) for p in parts})
            n_text = "0" if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
            rows.append({
                "arm": report.label, "id": claim.id, "text": claim.text,
                "href": f"#{report.anchor}-claim-{claim.id}", "verdict": claim.verdict,
                "claimed": claim.claimed, "ours": ours, "n": n_text, "reason": claim.reason,
            })  # fmt: skip
    return rows


def _section_view(report: ProtocolReport) -> dict[str, Any]:
    anchor = report.anchor
    return {
        "protocol": report.protocol,
        "label": report.label,
        "tuned": report.arm is not None and report.arm.hparams == "tuned",
        "variance": variance_audit_table(report),
        "anchor": anchor,
        "n_results": len(report.results),
        "grids": sorted(set(report.results["grid"])),
        "notes": report.notes,
        "tables": [_table_view(t, anchor) for t in report.tables],
        "claims": [_claim_view(c) for c in report.claims],
        "claims_error": report.claims_error,
        "figures": report.figures,
    }


def _runs_view(data: ReportData) -> list[dict[str, Any]]:
    top1 = dict(zip(data.results["job_id"], data.results["top1"], strict=True))
    epochs = dict(zip(data.results["job_id"], data.results["epochs_run"], strict=True))
    runs = []
    for job in data.jobs.itertuples(index=False):
        values = [job.job_id, job.key, job.grid, job.protocol, job.dataset, job.model, job.seed,
                  job.split_seed, job.status, job.device or "", top1.get(job.job_id),
                  epochs.get(job.job_id), job.error_line, job.arm]  # fmt: skip
        cells = []
        for index, value in enumerate(values):
            if index == 10 and not is_missing(value):
                value = round(float(value) * 100, 2)
            numeric = isinstance(value, int | float) and not is_missing(value)
            text = "" if is_missing(value) else (f"{value:g}" if numeric else str(value))
            cells.append({"text": text, "sort": repr(float(value)) if numeric else ""})
        runs.append({"job_id": int(job.job_id), "fields": cells})
    return runs


def write_html(data: ReportData, path: Path) -> None:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(template_text("report.html.j2"))
    problems = data.jobs[data.jobs["status"] != "done"].to_dict("records")
    page = template.render(
        title=f"GradAttn reproduction report: {data.name}",
        generated_at=data.generated_at,
        harness_version=__version__,
        database=data.database,
        notes=data.notes,
        legend=LEGEND,
        verdict_rule=data.verdict_rule,
        sections=[_section_view(p) for p in data.protocols],
        scorecard=_scorecard(data),
        claims_source=data.claims_source,
        audit=data.audit if data.audit is not None else Audit(),
        sequential=data.sequential,
        runs_header=RUNS_HEADER,
        runs=_runs_view(data),
        provenance=provenance_items(data),
        problems=problems,
        # Our own static files, not database strings: inserted verbatim.
        css=Markup(template_text("report.css")),
        js=Markup(template_text("report.js")),
    )
    path.write_text(page, encoding="utf-8")
