"""Options shared by several commands: the database URL, the data root, list-valued options."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_DB_URL = "sqlite:///runs.db"
DEFAULT_DATA_ROOT = "data"
DB_HELP = f"results database URL (env HARNESS_DB; default {DEFAULT_DB_URL})"
DATA_HELP = f"dataset root directory (env HARNESS_DATA; default ./{DEFAULT_DATA_ROOT})"


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """--db and --data before the sub-command (`harness --db URL status`)."""
    parser.add_argument("--db", default=None, help=DB_HELP)
    parser.add_argument("--data", default=None, help=DATA_HELP)


def add_db_option(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a sub-command that is not given --db leaves the value given before it alone.
    parser.add_argument("--db", default=argparse.SUPPRESS, help=DB_HELP)


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=argparse.SUPPRESS, help=DATA_HELP)


def db_url(args: argparse.Namespace) -> str:
    return getattr(args, "db", None) or os.environ.get("HARNESS_DB") or DEFAULT_DB_URL


def data_root(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "data", None) or os.environ.get("HARNESS_DATA") or DEFAULT_DATA_ROOT)


class ListAction(argparse.Action):
    """A list option that takes its items space- or comma-separated, or both, and repeated:
    `--models a b`, `--models a,b`, `--models a, b` and `--models a --models b` are the same."""

    def __init__(self, *args: Any, item: Callable[[str], Any] = str, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", "+")
        self.item = item
        super().__init__(*args, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        tokens = [values] if isinstance(values, str) else list(values or [])
        items = [part.strip() for token in tokens for part in str(token).split(",")]
        parsed = []
        for text in items:
            if not text:
                continue
            try:
                parsed.append(self.item(text))
            except ValueError:
                kind = getattr(self.item, "__name__", "value")
                parser.error(f"{option_string}: {text!r} is not a valid {kind}")
        previous = getattr(namespace, self.dest, None)
        # Repeating the option adds to the list instead of replacing it.
        keep = list(previous) if isinstance(previous, list) else []
        setattr(namespace, self.dest, keep + parsed)


def add_list_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, *flags: str, **kwargs: Any
) -> argparse.Action:
    """add_argument with ListAction (space or comma separated, repeatable)."""
    return parser.add_argument(*flags, action=ListAction, **kwargs)
