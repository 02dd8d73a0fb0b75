"""The report's other formats: Markdown, LaTeX, CSV (long cells) and JSON.

Database strings are escaped for each format: HTML entities in Markdown (a model named
`<script>` must not become markup in a Markdown viewer), LaTeX specials in LaTeX.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from harness.models import MODEL_LABELS
from harness.report.audit import Audit, variance_audit_table
from harness.report.audit_table import AuditTable
from harness.report.data import ReportData, is_missing, provenance_items
from harness.report.tables import (
    DATASET_LABELS,
    LEGEND,
    METRIC_LABELS,
    ReportTable,
    cell_text,
    label,
    marks_text,
)


def _header(table: ReportTable) -> list[str]:
    labels = METRIC_LABELS if table.spec.by_metric else MODEL_LABELS
    heads = ["Dataset", "Model"][: len(table.row_fields)]
    return heads + [label(c, labels) for c in table.columns]


def _rows(table: ReportTable) -> list[list[str]]:
    rows = []
    for row in table.rows:
        labels = [label(row[0], DATASET_LABELS)] + [label(v, MODEL_LABELS) for v in row[1:]]
        rows.append(labels + [cell_text(table.cell(row, c)) for c in table.columns])
    return rows


# ---------------------------------------------------------------- Markdown


def _md(text: Any) -> str:
    escaped = html.escape(str(text), quote=False).replace("|", "\\|")
    return escaped.replace("\n", " ")


def markdown(data: ReportData) -> str:
    lines = [f"# GradAttn reproduction report: {_md(data.name)}", "",
             f"Generated {data.generated_at} from `{_md(data.database)}`.", "", _md(LEGEND), ""]  # fmt: skip
    lines += [_md(note) for note in data.notes]
    if data.sequential:
        lines += ["", "## Sequential audits", ""]
        for item in data.sequential:
            lines += _md_audit_table(item.table, "###")
    for report in data.protocols:
        lines += ["", f"## Protocol {_md(report.label)}", ""]
        lines += [_md(note) for note in report.notes]
        tuned = " (tuned hyper-parameters)" if report.arm and report.arm.hparams == "tuned" else ""
        for table in report.tables:
            lines += ["", f"### Table {table.number}. {_md(table.spec.title)}{tuned}", ""]
            lines += [_md(note) + "\n" for note in table.notes]
            header = _header(table)
            lines.append("| " + " | ".join(_md(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            for row in _rows(table):
                lines.append("| " + " | ".join(_md(v) for v in row) + " |")
        lines += _md_audit_table(variance_audit_table(report), "###")
        lines += ["", f"### Claims{tuned}", "", "```", data.verdict_rule.strip(), "```", ""]
        if report.claims_error:
            lines.append(_md(report.claims_error))
        for claim in report.claims:
            lines.append(
                f"- **{_md(claim.id)}** {_md(claim.text)}: **{_md(claim.verdict)}** "
                f"({_md(claim.reason)}). Baseline check: {_md(claim.baseline_check)}. "
                f"Claimed: {_md(claim.claimed)}."
            )
    audit = data.audit or Audit()
    lines += ["", "## Protocol differences", ""]
    lines += [_md(audit.differences_note)] if audit.differences_note else []
    for table in [*audit.differences, *([audit.claims_by_arm] if audit.claims_by_arm else [])]:
        lines += _md_audit_table(table, "###")
    lines += ["", "## Tuned vs paper hyper-parameters", ""]
    lines += [_md(audit.tuned_note)] if audit.tuned_note else []
    for table in [*audit.tuned, *([audit.tuning] if audit.tuning else [])]:
        lines += _md_audit_table(table, "###")
    lines += [_md(audit.tuning_note)] if audit.tuning_note and not audit.tuning else []
    failed = data.jobs[data.jobs["status"] != "done"]
    lines += ["", "## Missing and failed jobs", ""]
    if failed.empty:
        lines.append("None.")
    for job in failed.itertuples(index=False):
        lines.append(
            f"- job {job.job_id} {_md(job.protocol)}/{_md(job.dataset)}/{_md(job.model)} seed "
            f"{job.seed}: {_md(job.status)} {_md(job.error_line)}"
        )
    return "\n".join(lines) + "\n"


def _md_audit_table(table: AuditTable, level: str) -> list[str]:
    lines = ["", f"{level} {_md(table.title)}", ""]
    lines += [_md(note) + "\n" for note in table.notes]
    lines.append("| " + " | ".join(_md(h) for h in table.header) + " |")
    lines.append("|" + "---|" * len(table.header))
    lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in table.plain_rows()]
    return lines


def write_markdown(data: ReportData, out_dir: Path) -> Path:
    path = out_dir / "report.md"
    path.write_text(markdown(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------- LaTeX

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}",
}  # fmt: skip
_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "▲": r"$\blacktriangle$",
                  "▼": r"$\blacktriangledown$", "–": "--", "−": "-", "→": r"$\to$",
                  "α": r"$\alpha$"}  # fmt: skip
_LATEX_RE = re.compile("|".join(re.escape(k) for k in [*_LATEX_SPECIALS, *_LATEX_SYMBOLS]))


def latex_escape(text: Any) -> str:
    return _LATEX_RE.sub(
        lambda m: _LATEX_SPECIALS.get(m.group(0)) or _LATEX_SYMBOLS[m.group(0)], str(text)
    )


def latex(data: ReportData) -> str:
    out = [
        r"\documentclass{article}",
        r"\usepackage[landscape,margin=1cm]{geometry}",
        r"\usepackage{booktabs,amssymb,longtable}",
        r"\begin{document}",
        rf"\section*{{GradAttn reproduction report: {latex_escape(data.name)}}}",
        latex_escape(LEGEND),
        "",
    ]
    out += [latex_escape(note) + r"\par" for note in data.notes]
    if data.sequential:
        out.append(r"\subsection*{Sequential audits}")
        for item in data.sequential:
            out += _latex_audit_table(item.table)
    for report in data.protocols:
        out.append(rf"\subsection*{{Protocol {latex_escape(report.label)}}}")
        out += [latex_escape(note) + r"\par" for note in report.notes]
        for table in report.tables:
            header = _header(table)
            out += [
                rf"\subsubsection*{{Table {table.number}. {latex_escape(table.spec.title)}}}",
                r"{\scriptsize",
                r"\begin{longtable}{" + "l" * len(table.row_fields) + "p{3.2cm}" * len(table.columns) + "}",
                r"\toprule",
                " & ".join(latex_escape(h) for h in header) + r" \\",
                r"\midrule",
            ]  # fmt: skip
            for row in _rows(table):
                cells = [latex_escape(v).replace(" | ", r" \newline ") for v in row]
                out.append(" & ".join(cells) + r" \\")
            out += [r"\bottomrule", r"\end{longtable}", "}"]
        if report.claims:
            out.append(r"\subsubsection*{Claims}")
            out.append(r"\begin{itemize}")
            for claim in report.claims:
                out.append(
                    rf"\item \textbf{{{latex_escape(claim.id)}}} {latex_escape(claim.text)}: "
                    rf"\textbf{{{latex_escape(claim.verdict)}}} ({latex_escape(claim.reason)})"
                )
            out.append(r"\end{itemize}")
        out += _latex_audit_table(variance_audit_table(report))
    audit = data.audit or Audit()
    sections = [
        ("Protocol differences", audit.differences_note,
         [*audit.differences, *([audit.claims_by_arm] if audit.claims_by_arm else [])]),
        ("Tuned vs paper hyper-parameters", audit.tuned_note,
         [*audit.tuned, *([audit.tuning] if audit.tuning else [])]),
    ]  # fmt: skip
    for title, note, tables in sections:
        if not tables:
            continue
        out += [rf"\subsection*{{{latex_escape(title)}}}", latex_escape(note) if note else ""]
        for table in tables:
            out += _latex_audit_table(table)
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"


def _latex_audit_table(table: AuditTable | None) -> list[str]:
    """An audit table as a longtable (same rows as the Markdown and HTML)."""
    if table is None or not table.rows:
        return []
    out = [rf"\subsubsection*{{{latex_escape(table.title)}}}"]
    out += [latex_escape(note) + r"\par" for note in table.notes]
    out += [
        r"{\scriptsize",
        r"\begin{longtable}{" + "p{2.6cm}" * len(table.header) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    out += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in table.plain_rows()]
    return [*out, r"\bottomrule", r"\end{longtable}", "}"]


def write_latex(data: ReportData, out_dir: Path) -> Path:
    path = out_dir / "report.tex"
    path.write_text(latex(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------- CSV and JSON


def cells_frame(data: ReportData) -> pd.DataFrame:
    """Every table cell of every protocol, long format, in the paper's display units."""
    frames = []
    for report in data.protocols:
        for table in report.tables:
            cells = table.cells.copy()
            cells.insert(0, "protocol", report.protocol)
            cells.insert(1, "hparams", report.arm.hparams if report.arm else "paper")
            cells["marks"] = [marks_text(m) for m in cells["marks"]]
            for name in ("values", "seeds", "job_ids"):
                cells[name] = [" ".join(map(str, v)) for v in cells[name]]
            frames.append(cells)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_csv(data: ReportData, out_dir: Path) -> Path:
    path = out_dir / "tables.csv"
    cells_frame(data).to_csv(path, index=False)
    return path


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and +-inf -> null (an unbounded end), numpy scalars -> Python, tuples ->
    lists, dataclasses -> dicts."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return _clean(vars(value))
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):  # NaN, +-inf: null
        return None
    if is_missing(value):
        return None
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def report_json(data: ReportData) -> dict[str, Any]:
    protocols = {}
    for report in data.protocols:
        protocols[report.label] = {
            "arm": {
                "protocol": report.protocol,
                "label": report.label,
                "hparams": report.arm.hparams if report.arm else "paper",
                "setting": dict(report.arm.setting) if report.arm else {},
            },
            # What the runs changed from their protocol: [{key, protocol, run}], and in words.
            "departures": [d.to_json() for d in report.departures.items]
            if report.departures is not None else [],
            "departures_text": report.departures.detail if report.departures is not None else "",
            "variance": report.variance,
            "variance_note": report.variance_note,
            "notes": report.notes,
            "tables": [
                {
                    "number": t.number,
                    "title": t.spec.title,
                    "columns": t.columns,
                    "rows": [list(r) for r in t.rows],
                    "notes": t.notes,
                    "cells": t.cells.to_dict("records"),
                }
                for t in report.tables
            ],  # fmt: skip
            "claims": [vars(c) if hasattr(c, "__dataclass_fields__") else c for c in report.claims],
            "claims_error": report.claims_error,
            "figures": [vars(f) for f in report.figures],
        }
    jobs = data.jobs.drop(columns=["error"]).astype(object).where(data.jobs.notna(), None)
    return _clean(
        {
            "name": data.name,
            "generated_at": data.generated_at,
            "database": data.database,
            "legend": LEGEND,
            "verdict_rule": data.verdict_rule,
            "notes": data.notes,
            "provenance": {i["name"]: i["value"] for i in provenance_items(data)},
            "protocols": protocols,
            "audit": _audit_json(data.audit or Audit()),
            "sequential_audits": [item.record for item in data.sequential],
            "claims_audit": claims_json(data),
            "jobs": jobs.to_dict("records"),
        }
    )


CLAIMS_SCHEMA = "harness.claims/1"
# Stable from schema harness.claims/1 on (docs/REPORT.md): fields are only ever added.
PART_KEYS = ("dataset", "candidate", "baseline", "metric", "scale", "n", "mean_diff", "ci_low",
             "ci_high", "level", "m", "p_adjusted", "verdict", "reason", "seeds_needed",
             "region_low", "region_high", "sesoi")  # fmt: skip


def claims_json(data: ReportData) -> dict[str, Any]:
    """Every claim's verdict and parts, one entry per (arm, claim), in the stable schema."""
    claims = []
    for report in data.protocols:
        for claim in report.claims:
            claims.append({
                "id": claim.id, "protocol": report.protocol, "arm": report.label,
                "text": claim.text, "kind": claim.kind, "verdict": claim.verdict,
                "reason": claim.reason,
                "parts": [{key: part.get(key) for key in PART_KEYS} for part in claim.parts],
            })  # fmt: skip
    return {"schema": CLAIMS_SCHEMA, "alpha": 0.05, "source": data.claims_source,
            "claims": claims}  # fmt: skip


def _audit_json(audit: Audit) -> dict[str, Any]:
    def table(t: AuditTable | None) -> dict[str, Any] | None:
        if t is None:
            return None
        return {"id": t.id, "title": t.title, "header": t.header, "rows": t.plain_rows(),
                "notes": t.notes, "records": t.records}  # fmt: skip

    return {
        "differences": [table(t) for t in audit.differences],
        "differences_note": audit.differences_note,
        "claims_by_arm": table(audit.claims_by_arm),
        "tuned": [table(t) for t in audit.tuned],
        "tuned_note": audit.tuned_note,
        "tuning": table(audit.tuning),
        "tuning_note": audit.tuning_note,
    }


def json_text(data: ReportData) -> str:
    """report.json's text: strict JSON (NaN and infinities written as null)."""
    return json.dumps(report_json(data), indent=1, ensure_ascii=False, allow_nan=False)


def write_json(data: ReportData, out_dir: Path) -> Path:
    path = out_dir / "report.json"
    path.write_text(json_text(data), encoding="utf-8")
    return path
