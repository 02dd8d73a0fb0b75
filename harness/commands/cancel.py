"""`harness cancel`: take jobs out of the queue (queued, running or failed), by id or filter."""

from __future__ import annotations

import argparse

from harness.commands._common import add_db_option, add_list_option, db_url
from harness.errors import HarnessError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cancel",
        help="cancel queued, running or failed jobs (by id, model, dataset or grid)",
        description="Cancelled jobs are never claimed. A running one stops at its next epoch "
        "boundary (or heartbeat) and records nothing more; it is marked cancelled, not failed. "
        "Done jobs are results and are never cancelled. `harness retry --cancelled` undoes it.",
    )
    add_db_option(parser)
    parser.add_argument("jobs", nargs="*", type=_job_id, metavar="JOB", help="job ids")
    add_list_option(parser, "--models", default=(), metavar="MODEL")
    add_list_option(parser, "--datasets", default=(), metavar="DATASET")
    add_list_option(parser, "--grid", dest="grids", default=(), metavar="GRID",
                        help="the grid name `harness enqueue` recorded (paper, demo, a file stem)")  # fmt: skip
    parser.add_argument("--all", action="store_true", help="every queued, running and failed job")
    parser.set_defaults(func=run)


def _job_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (a whole number)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (ids start at 1)")
    return value


def run(args: argparse.Namespace) -> int:
    from harness.queue.control import JobFilter, cancel
    from harness.store.engine import make_engine

    which = JobFilter(args.jobs, args.models, args.datasets, args.grids)
    if which.empty and not args.all:
        raise HarnessError(
            "name the jobs to cancel: JOB ids, --models, --datasets or --grid (or --all for "
            "every unfinished job)"
        )
    if args.all and not which.empty:
        raise HarnessError("--all cancels every unfinished job: give it alone, without filters")
    engine = make_engine(db_url(args), must_exist=True)
    counts = cancel(engine, which)
    total = sum(counts.values())
    parts = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    print(f"{total} job(s) cancelled" + (f" ({parts})" if parts else ""))
    if counts.get("running"):
        print("running ones stop at their next epoch boundary; `harness status` shows them go")
    return 0
