"""The audit loop: plan a round, queue its seeds, record progress, wait, until nothing is open.

Workers (`harness worker`, any number, any host) run the jobs; this loop only reads results and
queues. Every round is planned from the database alone, so a restart, a second controller or a
crash between rounds loses nothing: queueing is idempotent (jobs are content-hashed).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from harness.audit import DEFAULT_POLL_SECONDS
from harness.audit.plan import OPEN, Plan, plan_round
from harness.audit.spec import AuditSpec, start_or_resume, write_progress
from harness.queue.jobs import enqueue


def summary_line(spec: AuditSpec, plan: Plan) -> str:
    """One line of progress: parts by state, the most seeds any part has, the budget."""
    progress = plan.progress()
    states = ", ".join(f"{n} {s}" for s, n in sorted(progress["states"].items()))
    budget = f"{plan.spent_hours:.3f} device-h spent"
    if plan.budget_hours is not None:
        budget += f" of {plan.budget_hours:g} ({progress['budget_left_hours']:.3f} left)"
    in_flight = sum(plan.jobs.get(s, 0) for s in ("queued", "running"))
    return (f"audit {spec.name}: {progress['parts']} parts ({states or 'none'}); up to "
            f"{progress['max_n']} of {spec.design.horizon} seeds; {budget}; {len(plan.new)} "
            f"queued now, {in_flight} in flight")  # fmt: skip


def audit_round(engine: Engine, spec: AuditSpec) -> Plan:
    """Plan, queue the new seeds, and write the progress to the audit's row."""
    plan = plan_round(engine, spec)
    if plan.new:
        enqueue(engine, plan.new, spec.job_grid)
        plan.jobs["queued"] = plan.jobs.get("queued", 0) + len(plan.new)
    state = "finished" if plan.finished else "running"
    write_progress(engine, spec.name, plan.progress(), state)
    return plan


def run_audit(
    engine: Engine,
    spec: AuditSpec,
    *,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    once: bool = False,
    between: Callable[[], None] | None = None,
    say: Callable[[str], None] = print,
) -> Plan:
    """Rounds until the audit is finished (or one round with `once`). `between` runs after a
    round that left jobs in flight (the demo runs its workers there); otherwise it sleeps."""
    spec = start_or_resume(engine, spec)
    last = ""
    while True:
        plan = audit_round(engine, spec)
        line = summary_line(spec, plan)
        if line != last:
            say(line)
            last = line
        if plan.finished or once:
            if plan.finished:
                open_parts = sum(p.state == OPEN for p in plan.parts)
                say(f"audit {spec.name}: finished ({open_parts} parts left open)")
            return plan
        if between is not None:
            between()
        else:
            time.sleep(poll_seconds)
