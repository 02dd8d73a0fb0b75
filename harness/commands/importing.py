"""`harness import FILE.csv`: per-seed results run elsewhere, audited like the harness's own."""

from __future__ import annotations

import argparse

from harness.commands._common import add_db_option, add_list_option, db_url


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import",
        help="load per-seed results from a CSV (MLflow, W&B, a spreadsheet) as finished runs",
        description="One row per run: model,dataset,seed plus metric columns named as in the "
        "database (top1, f1_macro, ece, ...; accuracies as fractions), optional split_seed and "
        "protocol. All rows or none are imported; see docs/IMPORT.md.",
    )
    parser.add_argument("file", metavar="FILE.csv", help="the CSV file")
    add_list_option(
        parser,
        "--rename",
        default=[],
        metavar="OLD=NEW",
        help="read the file's column OLD as the database's NEW (e.g. accuracy=top1); "
        "space or comma separated",
    )
    add_list_option(
        parser,
        "--ignore",
        default=[],
        metavar="COLUMN",
        help="leave these columns of the file out (e.g. method, wall_time); space or comma separated",
    )
    add_db_option(parser)
    parser.set_defaults(func=run)


def _column_map(args: argparse.Namespace):
    from harness.errors import HarnessError
    from harness.queue.importing import ColumnMap

    rename: dict[str, str] = {}
    for pair in (p for item in args.rename for p in item.split(",") if p):
        old, sep, new = (part.strip() for part in pair.partition("="))
        if not (sep and old and new):
            raise HarnessError(f"--rename {pair!r} is not OLD=NEW; write e.g. --rename accuracy=top1")
        if old in rename:
            raise HarnessError(f"--rename names column {old!r} twice; keep one")
        rename[old] = new
    ignore = tuple(c.strip() for item in args.ignore for c in item.split(",") if c.strip())
    return ColumnMap(rename, ignore)


def run(args: argparse.Namespace) -> int:
    from harness.queue.importing import import_runs
    from harness.store.connection import mask_url
    from harness.store.engine import make_engine

    url = db_url(args)
    done = import_runs(make_engine(url), args.file, _column_map(args))
    runs = f"{len(done.runs)} run{'' if len(done.runs) == 1 else 's'}"
    print(
        f"imported {runs} ({done.shape()}; {done.new} new, {done.already} already imported) "
        f"from {args.file} (sha256 {done.digest[:12]}) into {mask_url(url)}"
    )
    return 0
