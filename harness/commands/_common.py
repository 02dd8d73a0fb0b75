"""Options shared by several commands: the database URL and the data root."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_DB_URL = "sqlite:///runs.db"
DEFAULT_DATA_ROOT = "data"


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=None,
        help=f"results database URL (env HARNESS_DB; default {DEFAULT_DB_URL})",
    )


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default=None,
        help=f"dataset root directory (env HARNESS_DATA; default ./{DEFAULT_DATA_ROOT})",
    )


def db_url(args: argparse.Namespace) -> str:
    return getattr(args, "db", None) or os.environ.get("HARNESS_DB") or DEFAULT_DB_URL


def data_root(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "data", None) or os.environ.get("HARNESS_DATA") or DEFAULT_DATA_ROOT)
