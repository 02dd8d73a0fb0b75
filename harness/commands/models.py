"""`harness models`: the registered architectures with their parameter counts."""

from __future__ import annotations

import argparse

from harness.errors import HarnessError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the architectures, their parameter counts and descriptions",
        description="List the registered architectures. Parameter counts depend on the input "
        "channels (first conv) and the number of classes (classifier).",
    )
    parser.add_argument(
        "--in-channels", type=int, default=3, metavar="C", help="input image channels (default 3)"
    )
    parser.add_argument(
        "--num-classes", type=int, default=10, metavar="K", help="number of classes (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document (docs/JSON.md)")
    parser.set_defaults(func=run)


def format_table(rows: list[tuple[str, str, str]], header: tuple[str, str, str]) -> str:
    """Left-aligned name and description columns, right-aligned parameter counts."""
    name_width = max(len(r[0]) for r in [header, *rows])
    count_width = max(len(r[1]) for r in [header, *rows])
    lines = [f"{n:<{name_width}}  {c:>{count_width}}  {d}" for n, c, d in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    # Imported here so that other commands do not pay for importing torch.
    from harness.models import MODEL_NAMES, build_model, count_parameters, describe

    checks = (("--in-channels", args.in_channels, 3), ("--num-classes", args.num_classes, 10))
    for option, value, example in checks:
        if value < 1:
            raise HarnessError(
                f"{option} must be a positive integer, got {value} (e.g. {option} {example})"
            )
    rows, entries = [], []
    for name in MODEL_NAMES:
        model = build_model(name, args.in_channels, args.num_classes)
        params = count_parameters(model)
        rows.append((name, f"{params:,}", describe(name)))
        entries.append({"name": name, "parameters": params, "description": describe(name)})
    if args.json:
        import json

        doc = {"in_channels": args.in_channels, "num_classes": args.num_classes, "models": entries}
        print(json.dumps(doc, indent=1, sort_keys=True))
        return 0
    print(
        f"Models for {args.in_channels}-channel input and {args.num_classes} classes "
        "(Table 1 transformer settings):"
    )
    print(format_table(rows, ("MODEL", "PARAMETERS", "DESCRIPTION")))
    return 0
