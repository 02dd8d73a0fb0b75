"""An audit's definition (grid, claims, design, budget) and its row in the `audits` table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from harness.errors import HarnessError
from harness.experiment.grids import Grid, grid_document, grid_from_document
from harness.report.claim_file import AUDIT_GRID, load_claims_file
from harness.report.sequential import Design
from harness.report.verdicts import ALPHA
from harness.store.clock import db_now
from harness.store.schema import AuditRow


@dataclass(frozen=True)
class AuditSpec:
    """What an audit decides and what it may spend; `grid.seeds` are its looks, in order."""

    name: str
    grid: Grid
    claims: list[dict[str, Any]] | None  # None: the paper's (harness/paperdata/claims.yaml)
    claims_source: str
    design: Design
    budget_hours: float | None = None
    ahead: int = 1  # seeds queued beyond a part's finished ones, for parallel workers
    alpha: float = ALPHA

    @property
    def job_grid(self) -> str:
        """The `grid` column of the jobs this audit queues."""
        return f"audit:{self.name}"

    def design_document(self) -> dict[str, Any]:
        return {"horizon": self.design.horizon, "spending": self.design.spending,
                "alpha": self.alpha, "budget_hours": self.budget_hours,
                "ahead": self.ahead}  # fmt: skip


def grid_claims(path: str | Path, grid: Grid) -> tuple[list[dict[str, Any]], str]:
    """A claims file checked against the grid's cells (no run exists yet), and its source line."""
    cells = pd.DataFrame(list(grid.cells), columns=["model", "dataset"])
    return load_claims_file(path, cells, AUDIT_GRID)


def spec_from_row(row: AuditRow) -> AuditSpec:
    design = row.design
    return AuditSpec(
        name=row.name, grid=grid_from_document(row.grid), claims=row.claims,
        claims_source=row.claims_source,
        design=Design(int(design["horizon"]), str(design["spending"])),
        budget_hours=design.get("budget_hours"), ahead=int(design.get("ahead", 1)),
        alpha=float(design.get("alpha", ALPHA)),
    )  # fmt: skip


def load_audit(engine: Engine, name: str) -> AuditSpec | None:
    with Session(engine) as session:
        row = session.scalars(select(AuditRow).where(AuditRow.name == name)).first()
        return spec_from_row(row) if row is not None else None


def audit_names(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(AuditRow.name).order_by(AuditRow.id)))


def start_or_resume(engine: Engine, spec: AuditSpec) -> AuditSpec:
    """Write a new audit's row, or check that an existing one has the same definition."""
    with Session(engine) as session, session.begin():
        row = session.scalars(select(AuditRow).where(AuditRow.name == spec.name)).first()
        if row is None:
            session.add(AuditRow(name=spec.name, grid=grid_document(spec.grid), claims=spec.claims,
                                 claims_source=spec.claims_source,
                                 design=spec.design_document(), state="running"))  # fmt: skip
            return spec
        stored = spec_from_row(row)
        differs = [what for what, a, b in (
            ("grid", grid_document(stored.grid), grid_document(spec.grid)),
            ("claims", stored.claims, spec.claims),
            ("design", stored.design_document(), spec.design_document()),
        ) if a != b]  # fmt: skip
        if differs:
            raise HarnessError(
                f"audit {spec.name!r} already exists with a different {', '.join(differs)}; "
                f"resume it with `harness audit --resume {spec.name}` or give a new --name"
            )
        return stored


def write_progress(engine: Engine, name: str, progress: dict[str, Any], state: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(AuditRow).where(AuditRow.name == name)
                     .values(progress=progress, state=state, updated_at=db_now(conn)))  # fmt: skip


def audit_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every audit's name, state, design, progress and update time (for status and the report)."""
    with Session(engine) as session:
        return [
            {"name": r.name, "state": r.state, "design": r.design, "progress": r.progress or {},
             "updated_at": r.updated_at, "claims_source": r.claims_source, "grid": r.grid}
            for r in session.scalars(select(AuditRow).order_by(AuditRow.id))
        ]  # fmt: skip
