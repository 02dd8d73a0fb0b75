"""`harness pause` / `harness resume`: stop and restart all claiming; running jobs go on."""

from __future__ import annotations

import argparse

from harness.commands._common import add_db_option, db_url


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, help_text in (
        ("pause", "workers claim no new job until `harness resume`; running jobs finish"),
        ("resume", "workers claim jobs again after `harness pause`"),
    ):
        parser = subparsers.add_parser(name, help=help_text, description=help_text + ".")
        add_db_option(parser)
        parser.set_defaults(func=run, paused=name == "pause")


def run(args: argparse.Namespace) -> int:
    from harness.queue.control import set_paused
    from harness.store.engine import make_engine

    engine = make_engine(db_url(args), must_exist=True)
    before = set_paused(engine, args.paused)
    if args.paused:
        print(
            "queue paused: no worker claims a new job; running jobs finish; "
            "workers started with --until-empty stop"
            + (" (it was already paused)" if before else "")
        )
    else:
        print("queue resumed: workers claim jobs again" + ("" if before else " (it was not paused)"))
    return 0
