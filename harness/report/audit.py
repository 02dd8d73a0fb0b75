"""The audit sections of the report, built once from the arms (harness.report.arms):

- protocol differences per dataset (harness.report.differences) and the claims by arm;
- tuned vs paper hyper-parameters and the tuning studies (harness.report.tuned);
- each section's variance sources (harness.report.variance), as a table per arm.

Every number comes from the database rows the arms hold; the renderers only format them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.models import MODEL_LABELS
from harness.report.arms import Arm
from harness.report.audit_table import AuditTable, cell
from harness.report.differences import dataset_differences
from harness.report.tables import DATASET_LABELS, label
from harness.report.tuned import tuned_tables, tuning_table


@dataclass
class Audit:
    differences: list[AuditTable] = field(default_factory=list)
    differences_note: str = ""
    claims_by_arm: AuditTable | None = None
    tuned: list[AuditTable] = field(default_factory=list)
    tuned_note: str = ""
    tuning: AuditTable | None = None
    tuning_note: str = ""

    def tables(self) -> list[AuditTable]:
        extra = [t for t in (self.claims_by_arm, self.tuning) if t is not None]
        return [*self.differences, *extra, *self.tuned]


def claims_by_arm(sections: list[Any]) -> AuditTable | None:
    """One row per claim, one column per arm with a section: its verdict, linked to details."""
    with_claims = [s for s in sections if s.claims]
    if not with_claims:
        return None
    table = AuditTable(
        id="claims-by-arm",
        title="Claims under each protocol and hyper-parameter source",
        header=["Claim", *[s.label for s in with_claims]],
        notes=["Each verdict links to that arm's claim details (the same rule in every arm)."],
    )
    texts: dict[str, str] = {}
    verdicts: dict[str, dict[str, str]] = {}
    for section in with_claims:
        for claim in section.claims:
            texts.setdefault(claim.id, claim.text)
            verdicts.setdefault(claim.id, {})[section.anchor] = claim.verdict
    for claim_id, text in texts.items():
        row = [cell(f"{claim_id}: {text}")]
        record: dict[str, Any] = {"claim": claim_id, "text": text}
        for section in with_claims:
            verdict = verdicts[claim_id].get(section.anchor, "")
            href = f"#{section.anchor}-claim-{claim_id}" if verdict else ""
            row.append(cell(verdict or "–", href=href, title=section.label))
            record[section.label] = verdict or None
        table.rows.append(row)
        table.records.append(record)
    return table


def variance_audit_table(section: Any) -> AuditTable:
    """A section's compact variance-sources table (section: render.ProtocolReport)."""
    table = AuditTable(
        id=f"{section.anchor}-variance",
        title="Variance sources per cell",
        header=["Dataset", "Model", "Runs", "Seeds", "Split seeds", "Init", "Data order",
                "Augmentation", "Split"],
        notes=[section.variance_note] if section.variance_note else [],
        records=section.variance,
    )  # fmt: skip
    mark = lambda flag: "varies" if flag else "fixed"  # noqa: E731
    for rec in section.variance:
        split = mark(rec["split"]) + (f" ({rec['split_note']})" if rec["split_note"] else "")
        table.rows.append(
            [cell(label(rec["dataset"], DATASET_LABELS)), cell(label(rec["model"], MODEL_LABELS)),
             cell(rec["n"], rec["n"]), cell(len(rec["seeds"]), len(rec["seeds"])),
             cell(len(rec["split_seeds"]), len(rec["split_seeds"])), cell(mark(rec["init"])),
             cell(mark(rec["order"])), cell(mark(rec["augmentation"])), cell(split)]
        )  # fmt: skip
    return table


def build_audit(arms: dict[Arm, pd.DataFrame], sections: list[Any], engine: Any) -> Audit:
    audit = Audit()
    audit.differences = dataset_differences(arms)
    protocols = {arm.protocol for arm in arms if arm.is_base}
    if not audit.differences:
        audit.differences_note = (
            "No dataset has finished base runs under both protocols (paper and "
            f"reference-code); present: {', '.join(sorted(protocols)) or 'none'}."
        )
    audit.claims_by_arm = claims_by_arm(sections)
    audit.tuning, audit.tuning_note = tuning_table(engine)
    budget = {
        (str(r["protocol"]), str(r["dataset"])): str(r["equal_budget"])
        for r in (audit.tuning.records if audit.tuning else [])
    }
    audit.tuned = tuned_tables(arms, budget)
    if not audit.tuned:
        audit.tuned_note = (
            "No protocol has runs with both paper and tuned hyper-parameters "
            "(`harness enqueue --hparams tuned` after `harness tune`)."
        )
    return audit
