"""`harness retry --failed | --stale | --cancelled`: put failed, dead or cancelled jobs back
in the queue."""

from __future__ import annotations

import argparse

from harness.commands._common import add_db_option, db_url


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "retry",
        help="requeue failed jobs or running jobs whose worker died",
        description="--failed: failed jobs back to the queue with a fresh attempt budget. "
        "--stale: running jobs whose lease expired (their worker stopped heartbeating) back to "
        "the queue now; a checkpoint lets the next worker resume them. --cancelled: cancelled "
        "jobs back to the queue (an undo of `harness cancel`).",
    )
    add_db_option(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--failed", action="store_true", help="requeue failed jobs")
    which.add_argument(
        "--stale", action="store_true", help="requeue running jobs with an expired lease"
    )
    which.add_argument(
        "--cancelled", action="store_true", help="requeue cancelled jobs (undo `harness cancel`)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.queue.control import retry_cancelled, retry_failed, retry_stale
    from harness.store.engine import make_engine

    engine = make_engine(db_url(args), must_exist=True)
    if args.failed:
        print(f"{retry_failed(engine)} failed job(s) requeued")
    elif args.cancelled:
        print(f"{retry_cancelled(engine)} cancelled job(s) requeued")
    else:
        print(f"{retry_stale(engine)} stale job(s) requeued")
    return 0
