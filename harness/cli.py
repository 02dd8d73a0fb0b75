"""`harness` command line: one module per command under harness/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from harness import __version__
from harness.commands._common import add_global_options
from harness.errors import EXIT_REFUSED, EXIT_USAGE, HarnessError

# Each module defines `register(subparsers)`; the parser it adds carries `func(args) -> int`.
COMMAND_MODULES = [
    "models",
    "data",
    "enqueue",
    "worker",
    "status",
    "show",
    "cancel",
    "pause",
    "retry",
    "import",
    "report",
    "audit",
    "demo",
    "bench",
    "launch",
    "tune",
    "db",
]


MODULE_OF = {"import": "importing"}  # `import` is a Python keyword


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Queue, run and report the GradAttn paper's experiments over seeds.",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    add_global_options(parser)  # also accepted after the sub-command
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"harness.commands.{MODULE_OF.get(name, name)}")
        module.register(subparsers)
    return parser


def _check_datasets_package() -> None:
    """Warn when another distribution's `datasets` (Hugging Face) shadows ours."""
    from harness import datasets

    if not hasattr(datasets, "DATASET_NAMES"):
        warnings.warn(
            f"the `datasets` package imported from {datasets.__file__} is not this project's; "
            "install the harness into its own virtual environment (see README)",
            stacklevel=1,
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        _check_datasets_package()
        return int(args.func(args) or 0)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
