"""The report's "Sequential audits" section: per audit (harness audit), each claim's sequential
verdict, the seeds it spent, the looks at which its parts were decided, and the budget left.

Everything is recomputed here from the database: the audit's row gives its grid, claims and
design; its runs are the jobs whose keys its grid defines; the device time is each finished
job's finished_at - started_at. The controller's stored progress is not used for numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from harness.experiment.grids import grid_from_document
from harness.report.audit_table import AuditTable, cell
from harness.report.claims import evaluate_claims
from harness.report.protocol_gate import section_departures
from harness.report.sequential import Design
from harness.report.verdicts import ALPHA
from harness.store.schema import AuditRow

FINISHED = ("done", "failed", "cancelled")


@dataclass
class SequentialAudit:
    name: str
    state: str
    design: str
    claims_source: str
    table: AuditTable
    summary: str  # one line for the top of the report
    record: dict[str, Any] = field(default_factory=dict)  # for the JSON export
    run_ids: frozenset[int] = frozenset()  # the audit's finished jobs (its runs)

    def section_note(self, section_ids: set[int]) -> str | None:
        """The note for a protocol section holding some of this audit's runs, or None."""
        shared = len(section_ids & self.run_ids)
        if not shared:
            return None
        return (
            f"{shared} of these {len(section_ids)} runs were queued by sequential audit "
            f"{self.name}, which stops adding seeds to a claim's cells once the claim is "
            "decided: this section's fixed-n verdicts and p-values do not allow for that "
            "stopping, and can be wrong more often than alpha says. The audit's verdicts, "
            "which do, are in 'Sequential audits'."
        )


def job_hours(jobs: pd.DataFrame) -> pd.Series:
    """Device hours of each job: finished_at - started_at (0 where either is missing)."""
    took = pd.to_datetime(jobs["finished_at"]) - pd.to_datetime(jobs["started_at"])
    return took.dt.total_seconds().fillna(0.0).clip(lower=0.0) / 3600.0


def sequential_audits(
    engine: Engine, jobs: pd.DataFrame, results: pd.DataFrame
) -> list[SequentialAudit]:
    with Session(engine) as session:
        rows = [(r.name, r.state, r.grid, r.claims, r.claims_source, r.design)
                for r in session.scalars(select(AuditRow).order_by(AuditRow.id))]  # fmt: skip
    return [_audit(*row, jobs, results) for row in rows]


def _audit(
    name: str,
    state: str,
    grid_doc: dict[str, Any],
    claims: list[dict[str, Any]] | None,
    claims_source: str,
    design_doc: dict[str, Any],
    jobs: pd.DataFrame,
    results: pd.DataFrame,
) -> SequentialAudit:
    grid = grid_from_document(grid_doc)
    design = Design(int(design_doc["horizon"]), str(design_doc["spending"]))
    alpha = float(design_doc.get("alpha", ALPHA))
    budget = design_doc.get("budget_hours")
    keys = {spec.key() for spec in grid.jobs()}
    scope = jobs[jobs["key"].isin(keys)] if len(jobs) else jobs
    done_ids = set(scope.loc[scope["status"] == "done", "job_id"]) if len(scope) else set()
    runs = results[results["job_id"].isin(done_ids)] if len(results) else results
    departures = section_departures(runs, grid.protocol) if len(runs) else None
    verdicts = evaluate_claims(runs, grid.protocol, alpha=alpha, claims=claims, design=design,
                               departures=departures)  # fmt: skip
    spent = float(job_hours(scope[scope["status"].isin(FINISHED)]).sum()) if len(scope) else 0.0
    seeds = sorted(set(scope["seed"])) if len(scope) else []
    budget_text = f"{spent:.3f} device-h spent"
    if budget is not None:
        budget_text += f" of a {budget:g} device-h budget ({budget - spent:.3f} left)"
    in_flight = int(scope["status"].isin(("queued", "running")).sum()) if len(scope) else 0
    table = AuditTable(
        id=f"sequential-{name}",
        title=f"Sequential audit {name} ({state})",
        header=["Claim", "Sequential verdict", "Parts decided", "Seeds (most pairs)",
                "Decided at look", "Open parts: seeds projected", "Why"],
        notes=[
            f"Design: {design.text()}, family-wise alpha {alpha} per family (Bonferroni over "
            "parts); a part's verdict is the one at the first look that decides it "
            "(docs/STATISTICS.md, 'Sequential audits'). Claims: " + claims_source + ".",
            f"Spent: {len(scope)} jobs over {len(seeds)} seeds of at most {design.horizon} "
            f"({in_flight} queued or running), {budget_text}.",
            "The protocol sections' fixed-n verdicts do not allow for the audit's stopping "
            "when a part was decided; these do.",
        ],
    )  # fmt: skip
    counts: dict[str, int] = {}
    for verdict in verdicts:
        counts[verdict.verdict] = counts.get(verdict.verdict, 0) + 1
        tested = [p for p in verdict.parts if p.get("code") != "exact"]
        decided = [p for p in tested if p.get("decided_at")]
        looks = ", ".join(str(p["decided_at"]) for p in decided) or "–"
        most = max((int(p["n"]) for p in verdict.parts), default=0)
        open_parts = [p for p in tested if not p.get("decided_at")]
        projected = ", ".join(str(p["seeds_needed"]) if p.get("seeds_needed") else "–"
                              for p in open_parts) or "–"  # fmt: skip
        table.rows.append([
            cell(f"{verdict.id}: {verdict.text}"), cell(verdict.verdict),
            cell(f"{len(decided)} of {len(tested)}" if tested else "exact count", len(decided)),
            cell(most, most), cell(looks), cell(projected), cell(verdict.reason),
        ])  # fmt: skip
        table.records.append({
            "claim": verdict.id, "verdict": verdict.verdict, "parts": len(tested),
            "decided": len(decided), "decided_at": [p["decided_at"] for p in decided],
            "most_pairs": most, "seeds_projected": [p.get("seeds_needed") for p in open_parts],
            "reason": verdict.reason,
        })  # fmt: skip
    verdict_text = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no claims"
    summary = (f"Sequential audit {name} ({state}): {verdict_text}; {len(seeds)} seeds of at "
               f"most {design.horizon}, {budget_text} (see 'Sequential audits').")  # fmt: skip
    record = {"name": name, "state": state, "design": design_doc, "grid": grid.name,
              "protocol": grid.protocol, "claims_source": claims_source, "jobs": len(scope),
              "seeds": len(seeds), "spent_hours": spent, "budget_hours": budget,
              "budget_left_hours": None if budget is None else budget - spent,
              "claims": table.records}  # fmt: skip
    return SequentialAudit(name, state, design.text(), claims_source, table, summary, record,
                           frozenset(int(i) for i in done_ids))  # fmt: skip
