"""One round of an audit: from the database alone, each part's state and the seeds to queue.

A part (one comparison of a claim: harness.report.claim_parts) is
- decided: the sequential rule decided it at some look; it gets no more seeds;
- open: undecided, below the horizon and within the budget; its two cells get the next seeds;
- horizon: undecided with the horizon's pairs; out of budget: the seeds that would decide it
  (projected at 80% power, or the horizon where none is projected) cost more than is left;
- outside the grid: a cell the claim names is not in the audit's grid (no seeds are queued);
- exact: a parameter count, decided by one run per cell.

Looks are in seed order. A cell's run counts only once every earlier seed of that cell has
finished (done or failed), so pairs only ever append to a part's sequence: the look at which a
part was decided does not change when runs queued before the decision finish later.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from harness.audit.spec import AuditSpec
from harness.experiment.config import JobSpec
from harness.report.claims import ClaimVerdict, evaluate_claims
from harness.report.load import load_results
from harness.report.protocol_gate import section_departures
from harness.report.sequential import boundaries
from harness.report.sequential_audit import FINISHED, job_hours
from harness.report.verdicts import DECIDED
from harness.store.schema import Job

DECIDED_STATE, OPEN, HORIZON, BUDGET, OUTSIDE, EXACT = (
    "decided", "open", "horizon", "out of budget", "outside the grid", "exact",
)  # fmt: skip
IN_FLIGHT = ("queued", "running")


@dataclass
class PartState:
    claim: str
    dataset: str
    baseline: str | None
    candidate: str | None
    verdict: str
    state: str
    n: int
    decided_at: int | None
    seeds_needed: int | None

    def label(self) -> str:
        pair = "/".join(x for x in (self.candidate, self.baseline) if x)
        return f"{self.claim} {self.dataset} {pair}"


@dataclass
class Plan:
    parts: list[PartState]
    verdicts: list[ClaimVerdict]
    new: list[JobSpec]
    spent_hours: float  # device time of the audit's finished jobs
    in_flight_hours: float  # projected device time of its queued and running jobs
    new_hours: float  # projected device time of `new`
    budget_hours: float | None
    jobs: dict[str, int] = field(default_factory=dict)  # state -> count of the audit's jobs

    @property
    def finished(self) -> bool:
        return not self.new and not any(self.jobs.get(s) for s in IN_FLIGHT)

    def progress(self) -> dict[str, Any]:
        """What `status` and the report show of the audit (written to its row each round)."""
        counts: dict[str, int] = {}
        for part in self.parts:
            counts[part.state] = counts.get(part.state, 0) + 1
        left = None if self.budget_hours is None else self.budget_hours - self.spent_hours
        return {
            "parts": len(self.parts), "states": counts, "jobs": self.jobs,
            "spent_hours": self.spent_hours, "in_flight_hours": self.in_flight_hours,
            "budget_hours": self.budget_hours, "budget_left_hours": left,
            "max_n": max((p.n for p in self.parts), default=0),
            "claims": {v.id: v.verdict for v in self.verdicts},
        }  # fmt: skip


def _scope_jobs(engine: Engine, keys: dict[str, JobSpec]) -> pd.DataFrame:
    rows = []
    with Session(engine) as session:
        chunk = list(keys)
        for start in range(0, len(chunk), 500):
            stmt = select(Job.id, Job.key, Job.status, Job.model, Job.dataset, Job.seed,
                          Job.started_at, Job.finished_at).where(
                Job.key.in_(chunk[start : start + 500]))  # fmt: skip
            rows += [dict(r._mapping) for r in session.execute(stmt)]
    return pd.DataFrame(rows, columns=["id", "key", "status", "model", "dataset", "seed",
                                       "started_at", "finished_at"])  # fmt: skip


def _finished_prefix(jobs: pd.DataFrame, seeds: tuple[int, ...]) -> set[int]:
    """Job ids that count: done runs of a cell before its first seed still pending or absent."""
    counted: set[int] = set()
    for _, cell in jobs.groupby(["model", "dataset"]):
        by_seed = {int(r.seed): r for r in cell.itertuples(index=False)}
        for seed in seeds:
            row = by_seed.get(seed)
            if row is None or row.status not in FINISHED:
                break
            if row.status == "done":
                counted.add(int(row.id))
    return counted


def plan_round(engine: Engine, spec: AuditSpec) -> Plan:
    """The audit's state and the jobs to queue now, read from the database."""
    grid = spec.grid
    specs = {s.key(): s for s in grid.jobs()}
    by_cell_seed = {(s.model, s.dataset, s.seed): s for s in specs.values()}
    jobs = _scope_jobs(engine, specs)
    counted = _finished_prefix(jobs, grid.seeds)
    results = load_results(engine, grid.protocol)
    results = results[results["job_id"].isin(counted)] if len(results) else results
    # With the report's labels: the paper's claims from departing runs are UNTESTABLE as claims
    # (their parts keep their reason codes, which is what the plan reads).
    departures = section_departures(results, grid.protocol) if len(results) else None
    verdicts = evaluate_claims(results, grid.protocol, alpha=spec.alpha, claims=spec.claims,
                               design=spec.design, departures=departures)  # fmt: skip

    hours = job_hours(jobs) if len(jobs) else pd.Series(dtype=float)
    done = jobs[jobs["status"] == "done"] if len(jobs) else jobs
    cell_cost = {k: float(v.mean()) for k, v in hours[done.index].groupby(
        [done["model"], done["dataset"]])} if len(done) else {}  # fmt: skip
    any_cost = float(hours[done.index].mean()) if len(done) else math.nan

    def cost(cell: tuple[str, str]) -> float:
        return cell_cost.get(cell, any_cost)

    status_of = {(r.model, r.dataset, int(r.seed)): r.status for r in jobs.itertuples()}
    finished = jobs["status"].isin(FINISHED) if len(jobs) else pd.Series(dtype=bool)
    spent = float(hours[finished].sum()) if len(jobs) else 0.0
    in_flight = sum(cost((r.model, r.dataset)) for r in jobs.itertuples() if r.status in IN_FLIGHT)
    in_flight = 0.0 if math.isnan(in_flight) else float(in_flight)
    cells = set(grid.cells)

    parts: list[PartState] = []
    wanted: list[tuple[PartState, list[tuple[str, str]], int, int]] = []
    for verdict in verdicts:
        for part in verdict.parts:
            state = PartState(verdict.id, str(part["dataset"]), part.get("baseline"),
                              part.get("candidate"), part["verdict"], OPEN, int(part["n"]),
                              part.get("decided_at"), part.get("seeds_needed"))  # fmt: skip
            parts.append(state)
            part_cells = [(m, state.dataset) for m in (state.baseline, state.candidate) if m]
            if not part_cells or any(c not in cells for c in part_cells):
                state.state = OUTSIDE
                continue
            first_look = 1
            if part.get("code") == "exact":
                state.state, count = EXACT, 1  # a parameter count needs one run per cell
            elif part["code"] in DECIDED:
                state.state = DECIDED_STATE
                continue
            elif state.n >= spec.design.horizon:
                state.state = HORIZON
                continue
            else:
                cuts = boundaries(spec.design.horizon, int(part["m"] or 1), spec.alpha,
                                  spec.design.spending)  # fmt: skip
                first_look = next((i + 1 for i, c in enumerate(cuts) if c is not None),
                                  spec.design.horizon)  # fmt: skip
                count = min(spec.design.horizon, max(first_look, state.n + spec.ahead))
            if spec.budget_hours is not None and math.isnan(any_cost):
                count = 1  # no run time measured yet: one seed per cell, then plan the rest
            wanted.append((state, part_cells, count, first_look))

    new: dict[tuple[str, str, int], JobSpec] = {}
    left = math.inf if spec.budget_hours is None else spec.budget_hours - spent - in_flight
    new_hours = 0.0
    for state, part_cells, count, first_look in wanted:
        unqueued = functools.partial(_unqueued, part_cells, grid.seeds, status_of, new)

        if state.state == OPEN and spec.budget_hours is not None and math.isfinite(any_cost):
            # Can it still be decided? The seeds projected to decide it (80% power), or the
            # first look that can decide at all, at the measured cost of the jobs not yet
            # queued for them (seeds another part already queued cost nothing more).
            target = min(spec.design.horizon, max(state.seeds_needed or first_look, first_look))
            if sum(cost(k[:2]) for k in unqueued(target)) > left - new_hours:
                state.state = BUDGET
                continue
        fresh = unqueued(count)
        price = sum(cost(k[:2]) for k in fresh)
        price = 0.0 if math.isnan(price) else price
        if price > left - new_hours:
            state.state = BUDGET if state.state == OPEN else state.state
            continue
        new_hours += price
        for key in fresh:
            new[key] = by_cell_seed[key]
    counts = jobs["status"].value_counts().to_dict() if len(jobs) else {}
    return Plan(parts, verdicts, list(new.values()), spent, in_flight, new_hours,
                spec.budget_hours, {str(k): int(v) for k, v in counts.items()})  # fmt: skip


def _unqueued(
    cells: list[tuple[str, str]], seeds: tuple[int, ...],
    status_of: dict[tuple[str, str, int], str], new: dict[tuple[str, str, int], JobSpec],
    count: int,
) -> list[tuple[str, str, int]]:
    """The jobs of the first `count` usable seeds that are neither in the database nor planned."""
    chosen = _next_seeds(cells, seeds, status_of, count)
    return [k for k in chosen if k not in status_of and k not in new]


def _next_seeds(
    cells: list[tuple[str, str]], seeds: tuple[int, ...], status_of: dict[tuple[str, str, int], str],
    count: int,
) -> list[tuple[str, str, int]]:
    """The (model, dataset, seed) jobs of the first `count` seeds that can still pair: seeds on
    which a cell's job failed or was cancelled are skipped."""
    chosen: list[tuple[str, str, int]] = []
    taken = 0
    for seed in seeds:
        if taken >= count:
            break
        if any(status_of.get((m, d, seed)) in ("failed", "cancelled") for m, d in cells):
            continue
        chosen += [(m, d, seed) for m, d in cells]
        taken += 1
    return chosen
