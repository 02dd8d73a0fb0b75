"""`harness audit`: queue seeds until every claim part is decided, at its horizon or out of budget.

The verdicts are sequential (harness.report.sequential): a look after every seed, the error
controlled over all looks and parts. Workers run the jobs; this command plans rounds from the
database alone, so it can be stopped and resumed (`--resume NAME`) at any time.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from harness.commands._common import add_db_option, add_list_option, db_url
from harness.errors import HarnessError

DEFAULT_NAME = "audit"


def register(subparsers: argparse._SubParsersAction) -> None:
    from harness.audit import DEFAULT_HORIZON, DEFAULT_POLL_SECONDS
    from harness.report.sequential import MAX_HORIZON, SPENDING

    parser = subparsers.add_parser(
        "audit",
        help="spend seeds only where a claim is still undecided (sequential verdicts)",
        description="Queue the first seeds of a grid, then after every finished pair re-decide "
        "each claim part with the sequential rule (docs/STATISTICS.md, 'Sequential audits') and "
        "queue more seeds only for parts still undecided that the budget can still decide. "
        "Run `harness worker` (any number) beside it.",
    )
    add_db_option(parser)
    parser.add_argument("--claims", default="paper", metavar="paper|FILE.yaml",
                        help="the paper's claims (default) or a claims file (docs/CLAIMS.md)")
    parser.add_argument("--grid", default="paper", metavar="paper|demo|FILE.yaml",
                        help="the cells to audit (default paper)")
    add_list_option(parser, "--models", metavar="MODEL", help="only these models")
    add_list_option(parser, "--datasets", metavar="DATASET", help="only these datasets")
    parser.add_argument("--protocol", help="paper or reference-code (default: the grid's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a setting (repeatable)")
    parser.add_argument("--max-seeds", type=int, metavar="N",
                        help=f"the horizon: most seeds per part, 1..{MAX_HORIZON} (default "
                        f"{DEFAULT_HORIZON} with --budget)")  # fmt: skip
    parser.add_argument("--budget", type=float, metavar="GPU_HOURS",
                        help="device hours the audit's jobs may use (projected from measured "
                        "run times)")  # fmt: skip
    parser.add_argument("--spending", choices=tuple(SPENDING), default="obrien-fleming",
                        help="alpha spending over the looks (default obrien-fleming)")
    parser.add_argument("--ahead", type=int, default=1, metavar="K",
                        help="seeds queued per open part beyond its finished ones (default 1; "
                        "raise it when workers outnumber the open cells)")  # fmt: skip
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"audit name (default {DEFAULT_NAME})")
    parser.add_argument("--resume", metavar="NAME",
                        help="continue audit NAME with its stored grid, claims and design")
    parser.add_argument("--poll", type=float, default=DEFAULT_POLL_SECONDS, metavar="S",
                        help=f"seconds between rounds (default {DEFAULT_POLL_SECONDS:g})")
    parser.add_argument("--once", action="store_true",
                        help="plan and queue one round, then exit (e.g. from cron)")
    parser.set_defaults(func=run)


def build_spec(args: argparse.Namespace):  # noqa: ANN201 (AuditSpec, imported late)
    """The audit definition from the command line, checked before anything is written."""
    from harness.audit import DEFAULT_HORIZON
    from harness.report.sequential import Design

    if args.max_seeds is None and args.budget is None:
        raise HarnessError("give --max-seeds N, --budget GPU_HOURS or both (the audit needs a "
                           "horizon or a budget)")  # fmt: skip
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        raise HarnessError(f"--budget must be a positive number of device hours (got {args.budget})")
    if args.ahead < 1:
        raise HarnessError(f"--ahead must be at least 1 (got {args.ahead})")
    design = Design(args.max_seeds or DEFAULT_HORIZON, args.spending)
    # The training stack loads with these; the checks above answer without it.
    from harness.audit.spec import AuditSpec, grid_claims
    from harness.commands.enqueue import parse_overrides
    from harness.experiment.grids import resolve_grid

    grid = resolve_grid(args.grid, seeds=design.horizon, protocol=args.protocol,
                        models=args.models, datasets=args.datasets,
                        overrides=parse_overrides(args.overrides))  # fmt: skip
    if grid.sweep:
        raise HarnessError("an audit decides one setting; drop the grid's sweep or audit each "
                           "setting with --set under its own --name")  # fmt: skip
    if args.claims == "paper":
        claims, source = None, "paper (harness/paperdata/claims.yaml)"
    else:
        claims, source = grid_claims(Path(args.claims), grid)
    return AuditSpec(args.name, grid, claims, source, design, args.budget, args.ahead)


def run(args: argparse.Namespace) -> int:
    if args.poll <= 0:
        raise HarnessError(f"--poll must be positive (got {args.poll})")
    from harness.store.engine import make_engine

    if args.resume:
        from harness.audit.spec import audit_names, load_audit

        engine = make_engine(db_url(args))
        spec = load_audit(engine, args.resume)
        if spec is None:
            names = audit_names(engine)
            raise HarnessError(f"no audit named {args.resume!r} in this database; audits: "
                               f"{', '.join(names) or 'none'}")  # fmt: skip
    else:
        spec = build_spec(args)
        engine = make_engine(db_url(args))
    print(f"audit {spec.name}: {len(spec.grid.cells)} cells, {spec.design.text()}, claims "
          f"{spec.claims_source}" + (f", budget {spec.budget_hours:g} device-h"
                                     if spec.budget_hours else ""))  # fmt: skip
    from harness.audit.run import run_audit

    run_audit(engine, spec, poll_seconds=args.poll, once=args.once)
    return 0
