"""`harness report`: Tables 3-9 with statistics, the claims audit and figures, from the database."""

from __future__ import annotations

import argparse

from harness.commands._common import add_db_option, add_list_option, db_url
from harness.errors import HarnessError
from harness.experiment.config import PROTOCOLS

EXTRA_FORMATS = ("md", "latex", "csv", "json")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write reports/<name>/index.html: Tables 3-9, statistics, claims, figures",
        description="Rebuild the paper's Tables 3-9 from the results database, with mean ± SD "
        "over seeds, the paper's values, paired tests against the baseline, the claims audit "
        "and figures. With no format option it writes the HTML report (index.html and its "
        "figures); --format writes only the formats named, and --html adds the HTML to them.",
    )
    parser.add_argument(
        "--html",
        action="store_true",
        help="write the HTML report with its figures (the default when no --format is given)",
    )
    parser.add_argument(
        "--out",
        default="reports",
        help="parent directory (default: reports); '-' writes report.json to stdout "
        "(with --format json) and nothing to disk",
    )
    parser.add_argument(
        "--protocol", choices=PROTOCOLS, default=None, help="only this protocol (default: all)"
    )
    add_list_option(
        parser,
        "--format",
        default=[],
        metavar="FMT",
        help=f"write FMT ({', '.join(EXTRA_FORMATS)}; e.g. --format md,json); add --html for "
        "the HTML too",
    )
    parser.add_argument(
        "--name", default=None, help="report directory name (default: from the grid names)"
    )
    parser.add_argument(
        "--claims",
        default=None,
        metavar="FILE.yaml",
        help="audit these claims instead of the paper's (schema: docs/CLAIMS.md)",
    )
    add_list_option(
        parser,
        "--pool",
        default=[],
        metavar="KEY",
        help="pool runs that differ only in these settings into one cell (e.g. --pool "
        "pipeline,deterministic); by default every setting gets its own section",
    )
    add_db_option(parser)
    parser.set_defaults(func=run)


def parse_formats(values: list[str], html: bool = False) -> tuple[str, ...]:
    """The formats to write: those of --format, plus html with --html or when none is named."""
    formats = [f.strip().lower() for value in values for f in value.split(",") if f.strip()]
    unknown = [f for f in formats if f not in (*EXTRA_FORMATS, "html")]
    if unknown:
        raise HarnessError(
            f"unknown --format {', '.join(unknown)}; valid: {', '.join(EXTRA_FORMATS)}"
        )
    wanted = dict.fromkeys(formats)
    if html or not wanted or "html" in wanted:
        return ("html", *(f for f in wanted if f != "html"))
    return tuple(wanted)


def _pool(keys: list[str]) -> tuple[str, ...]:
    """--pool keys, checked against the setting names (a typo would pool nothing)."""
    from harness.experiment.config import valid_override_keys

    valid = valid_override_keys()
    for key in keys:
        known = key in valid or key.startswith("data.") and len(key) > 5
        if not known or key.startswith("quirk.") or key in ("hparams", "data.<option>"):
            raise HarnessError(
                f"--pool {key!r} is not a setting that can be pooled; settings: "
                + ", ".join(k for k in valid if not k.startswith("quirk.") and k != "hparams")
            )
    return tuple(dict.fromkeys(keys))


def run(args: argparse.Namespace) -> int:
    from harness.report.render import build_report

    formats = parse_formats(args.format, html=args.html)
    if args.out == "-":
        return _json_to_stdout(args, formats)
    index = build_report(
        db_url(args), out_dir=args.out, protocol=args.protocol, formats=formats, name=args.name,
        claims_file=args.claims, pool=_pool(args.pool),
    )
    written = ", ".join(sorted(p.name for p in index.parent.iterdir() if p.suffix != ".png"))
    figures = sum(1 for p in index.parent.iterdir() if p.suffix == ".png")
    print(f"report written: {index} ({written}; {figures} figure(s))")
    return 0


def _json_to_stdout(args: argparse.Namespace, formats: tuple[str, ...]) -> int:
    """`--out -`: the JSON report on stdout, no directory, no figures."""
    import sys

    from harness.report.export import json_text
    from harness.report.render import collect

    if set(formats) - {"html"} != {"json"}:
        raise HarnessError("--out - writes the JSON report to stdout: pass --format json only")
    data = collect(db_url(args), args.protocol, args.name, None, args.claims, _pool(args.pool))
    sys.stdout.write(json_text(data) + "\n")
    return 0
