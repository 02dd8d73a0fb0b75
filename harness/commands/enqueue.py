"""`harness enqueue` (work in progress: its owner replaces this module)."""

from __future__ import annotations

import argparse

from harness.errors import HarnessError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("enqueue", help="(not yet available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise HarnessError("`harness enqueue` is not available yet")
