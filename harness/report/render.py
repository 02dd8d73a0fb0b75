"""`build_report`: load the database, rebuild the tables, claims and figures, write the report.

The report directory is written in a temporary sibling and renamed into place, so a reader
never sees a half-written report; the HTML opens offline (inline CSS and JS, relative PNGs).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from harness.datasets import PAPER_DATASETS
from harness.errors import HarnessError
from harness.experiment.config import PROTOCOLS
from harness.report import export, html, load
from harness.report.arms import Arm, arm_column, split_arms
from harness.report.audit import build_audit
from harness.report.claim_file import load_claims_file
from harness.report.claims import VERDICT_RULE, evaluate_claims
from harness.report.comparisons import Comparisons
from harness.report.data import ProtocolReport, ReportData
from harness.report.figures import start_figures
from harness.report.forest import forest_plot
from harness.report.protocol_gate import Departures, section_departures, table_note
from harness.report.sequential_audit import sequential_audits
from harness.report.tables import build_tables, dedupe
from harness.report.variance import variance_table
from harness.store.connection import mask_url
from harness.store.engine import make_engine

FORMATS = ("html", "md", "latex", "csv", "json")
DEFAULT_OUT = Path("reports")


def _engine(db: str | Engine) -> tuple[Engine, str]:
    if isinstance(db, Engine):
        return db, mask_url(db.url.render_as_string(hide_password=True))
    url = str(db)
    # A report must not create an empty database file where the user mistyped a path.
    return make_engine(url, must_exist=True), mask_url(url)


def default_name(grids: list[str]) -> str:
    """reports/<name>: the grid names joined with '+', or 'report' when none fit."""
    names = sorted({g for g in grids if g})
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", "+".join(names)).strip("._")
    return name[:80] if names and len(names) <= 3 and name else "report"


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}", name):
        raise HarnessError(
            f"invalid report name {name!r}; use letters, digits and _ . + - (no path separators)"
        )
    return name


def _claims(
    results: pd.DataFrame,
    protocol: str,
    claims: list[dict[str, Any]] | None = None,
    departures: Departures | None = None,
    comparisons: Comparisons | None = None,
) -> tuple[list[Any], str]:
    try:
        return list(evaluate_claims(results, protocol, claims=claims, departures=departures,
                                    comparisons=comparisons)), ""  # fmt: skip
    except (HarnessError, ValueError) as exc:  # the tables still stand without the claims
        return [], f"claims could not be evaluated: {exc}"


def _verdict_rule() -> str:
    return VERDICT_RULE


def collect(
    db: str | Engine,
    protocol: str | None,
    name: str | None,
    figure_dir: Path | None,
    claims_file: str | Path | None = None,
    pool: tuple[str, ...] = (),
) -> ReportData:
    """Load and compute everything (figures are drawn into figure_dir when given); the claims
    of `claims_file` (checked first) replace the paper's; runs that differ only in the `pool`
    keys share their cells (otherwise every setting has its own section)."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise HarnessError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    engine, shown_url = _engine(db)
    jobs = load.load_jobs(engine)
    if jobs.empty:
        raise HarnessError(
            f"the database {shown_url} has no jobs; run `harness enqueue` and `harness worker` "
            "first (or `harness demo`)"
        )
    if protocol is not None:
        jobs = jobs[jobs["protocol"] == protocol]
        if jobs.empty:
            present = ", ".join(sorted(load.load_jobs(engine)["protocol"].unique()))
            raise HarnessError(f"no jobs under protocol {protocol!r}; the database has: {present}")
    results = load.load_results(engine, protocol)
    claims, claims_source = None, "the paper's claims (harness/paperdata/claims.yaml)"
    if claims_file is not None:
        claims, claims_source = load_claims_file(claims_file, results)
    epochs = load.load_epochs(engine, protocol)
    gradients = load.load_gradients(engine, protocol)
    data = ReportData(
        name=_check_name(name) if name else default_name(list(jobs["grid"])),
        database=shown_url,
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        protocols=[],
        jobs=jobs,
        results=results,
        verdict_rule=_verdict_rule(),
        claims_source=claims_source,
    )
    if results.empty:
        data.notes.append("No job has finished yet: the tables are empty; see the runs below.")
    jobs_arms = arm_column(jobs) if len(jobs) else []
    data.jobs = jobs.assign(arm=[arm.label for arm in jobs_arms])
    arms: dict[Arm, pd.DataFrame] = {}
    for arm, frame in split_arms(results, pool).items():
        subset, dropped = dedupe(frame)
        arms[arm] = subset
        if not arm.has_section:
            continue
        data.protocols.append(
            _section(arm, subset, dropped, epochs, gradients, figure_dir, claims)
        )
    if pool:
        data.notes.append(
            f"Pooled on request (--pool {','.join(pool)}): runs that differ only in "
            f"{', '.join(pool)} share their cells; the protocol departures list each value."
        )
    variants = {arm: len(frame) for arm, frame in arms.items() if not arm.has_section}
    if variants:
        listed = "; ".join(f"{arm.label} ({n})" for arm, n in variants.items())
        data.notes.append(
            "Runs with a quirk switched away from their protocol's default feed only the "
            f"protocol-differences section, never the tables or claims: {listed}."
        )
    data.sequential = sequential_audits(engine, jobs, results)
    for section in data.protocols:
        ids = set(section.results["job_id"])
        section.notes += [n for a in data.sequential if (n := a.section_note(ids)) is not None]
    data.notes[:0] = [a.summary for a in data.sequential] + departure_notes(data.protocols, results)
    data.audit = build_audit(arms, data.protocols, engine)
    return data


def departure_notes(sections: list[ProtocolReport], results: pd.DataFrame) -> list[str]:
    """The top of the report: every section's protocol departures in one line, and whether
    these runs can test the paper at all."""
    notes = []
    departing = [s for s in sections if s.departures is not None and s.departures.departs]
    if departing:
        listed = "; ".join(
            f"{s.label} ({len(s.results)} runs): {s.departures.detail}" for s in departing
        )
        notes.append(
            f"Protocol departures: {listed}. No paper-level verdict is given from these runs; "
            "comparisons between models under the same changes stay, and say so."
        )
    paper_datasets = set(PAPER_DATASETS)
    if len(results) and not set(results["dataset"]) & paper_datasets:
        notes.append(
            "A demonstration, not a test of the paper: none of these runs is on one of the "
            f"paper's datasets ({', '.join(sorted(set(results['dataset'])))} only)."
        )
    return notes


def _section(
    arm: Arm,
    subset: pd.DataFrame,
    dropped: int,
    epochs: pd.DataFrame,
    gradients: pd.DataFrame,
    figure_dir: Path | None,
    claims: list[dict[str, Any]] | None = None,
) -> ProtocolReport:
    """One arm's full section: Tables 3-9, claims, figures, variance sources."""
    label = arm.protocol if arm.is_base else arm.short
    drawing = None
    if figure_dir is not None:  # drawn beside the tables and claims below
        drawing = start_figures(
            subset,
            epochs[epochs["job_id"].isin(subset["job_id"])],
            gradients[gradients["job_id"].isin(subset["job_id"])],
            label,
            figure_dir,
        )
    try:
        report = _section_numbers(arm, subset, dropped, claims)
        if drawing is not None:
            report.figures = forest_plot(report.claims, label, figure_dir) + drawing.result()
    except BaseException:
        if drawing is not None:
            drawing.cancel()  # nothing may write into the staging directory once it is removed
        raise
    return report


def _section_numbers(
    arm: Arm, subset: pd.DataFrame, dropped: int, claims: list[dict[str, Any]] | None
) -> ProtocolReport:
    """A section without its figures: Tables 3-9, notes, claims, variance sources."""
    comparisons = Comparisons(subset)  # each comparison computed once for tables and claims
    report = ProtocolReport(arm.protocol, subset, build_tables(subset, comparisons), [], "", [],
                            arm=arm)  # fmt: skip
    report.departures = section_departures(subset, arm.protocol)
    if report.departures.departs:
        report.notes.append(
            f"{report.departures.title}: these runs changed {report.departures.detail}. "
            "Their comparisons with the paper's numbers say so and give the gap, with no "
            "reproduction verdict, and the paper's claims get no SUPPORTED or CONTRADICTED "
            "verdict from them."
        )
        for table in report.tables:
            table.notes.insert(0, table_note(report.departures))
    if dropped:
        report.notes.append(
            f"{dropped} result(s) repeat a (dataset, model, seed, split seed) of another "
            "grid; the newest job of each is used."
        )
    if arm.hparams == "tuned":
        report.notes.append(
            "Tuned hyper-parameters: lr, weight decay and dropout are each cell's best tuning "
            "trial, not Table 1's; compare with the paper-hyper-parameter section."
        )
    if claims is not None:  # a claim naming a setting is judged only in that setting's section
        claims = [c for c in claims if arm.matches(c.get("setting") or {})]
    report.claims, report.claims_error = _claims(subset, arm.protocol, claims, report.departures,
                                                 comparisons)  # fmt: skip
    report.variance, report.variance_note = variance_table(subset)
    return report


def build_report(
    db: str | Engine,
    out_dir: str | Path | None = None,
    protocol: str | None = None,
    formats: tuple[str, ...] | list[str] = ("html",),
    name: str | None = None,
    claims_file: str | Path | None = None,
    pool: tuple[str, ...] = (),
) -> Path:
    """Write <out_dir>/<name>/ with the formats asked for: index.html and its figures (html),
    report.md, report.tex, tables.csv, report.json. Returns the path of index.html, or of the
    first other file when the HTML is not asked for."""
    unknown = sorted(set(formats) - set(FORMATS))
    if not formats:
        raise HarnessError(f"no report format asked for; give one or more of {', '.join(FORMATS)}")
    if unknown:
        raise HarnessError(
            f"unknown report format(s) {', '.join(unknown)}; valid: {', '.join(FORMATS)}"
        )
    out_root = Path(out_dir) if out_dir is not None else DEFAULT_OUT
    created = _make_out_dir(out_root)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out_root))
    except OSError as exc:
        _remove_empty(created)
        raise HarnessError(
            f"cannot write a report into --out {out_root}: {exc.strerror or exc}; give a "
            "directory you can write to"
        ) from None
    try:
        with_html = "html" in formats
        # Figures are drawn only for the HTML that shows them.
        data = collect(db, protocol, name, staging if with_html else None, claims_file, pool)
        written = []
        if with_html:
            html.write_html(data, staging / "index.html")
            written.append(staging / "index.html")
        writers = {"md": export.write_markdown, "latex": export.write_latex,
                   "csv": export.write_csv, "json": export.write_json}  # fmt: skip
        for fmt in dict.fromkeys(formats):
            if fmt in writers:
                written.append(writers[fmt](data, staging))
        final = out_root / data.name
        _swap_into_place(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)  # a failed report leaves no empty --out directory behind
        raise
    return final / Path(written[0]).name


def _make_out_dir(out_root: Path) -> list[Path]:
    """Create --out (and missing parents); the directories it created, deepest first."""
    if out_root.exists() and not out_root.is_dir():
        raise HarnessError(f"--out {out_root} is a file, not a directory; give a directory")
    created = [p for p in (out_root, *out_root.parents) if not p.exists()]
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise HarnessError(
            f"cannot create --out {out_root}: {exc.strerror or exc}; give a directory you can "
            "write to"
        ) from None
    return created


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:
        with contextlib.suppress(OSError):  # not empty, or never made
            directory.rmdir()


def _swap_into_place(staging: Path, final: Path) -> None:
    """Replace `final` by `staging` with renames only (the old report stays whole until then)."""
    staging.chmod(0o755)  # mkdtemp makes it private; a report is meant to be shared
    if final.exists():
        old = final.with_name(f".{final.name}.old-{staging.name}")
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(final)
