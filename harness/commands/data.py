"""`harness data list|fetch|verify`: what is on disk, verified downloads, checksum checks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.commands._common import add_data_option, data_root
from harness.errors import EXIT_USAGE, HarnessError


def register(subparsers: argparse._SubParsersAction) -> None:
    from harness import datasets

    names = ", ".join(datasets.DATASET_NAMES)
    parser = subparsers.add_parser(
        "data",
        help="list, download (with checksums) and verify datasets",
        description=f"Datasets: {names}. Files live under --data (env HARNESS_DATA).",
    )
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")

    listing = actions.add_parser("list", help="each dataset: present or not, size, digest, where")
    add_data_option(listing)
    listing.add_argument("--json", action="store_true", help="one JSON document (docs/JSON.md)")
    listing.set_defaults(func=run_list)

    fetch = actions.add_parser("fetch", help="download and unpack NAME (or all), verified")
    fetch.add_argument("name", metavar="NAME|all")
    fetch.add_argument(
        "--mirror",
        default=None,
        help="base URL serving the published files by name (env HARNESS_DATA_MIRROR)",
    )
    add_data_option(fetch)
    fetch.set_defaults(func=run_fetch)

    verify = actions.add_parser("verify", help="check files on disk against published checksums")
    verify.add_argument("name", nargs="?", default=None, metavar="NAME")
    add_data_option(verify)
    verify.add_argument("--json", action="store_true", help="one JSON document (docs/JSON.md)")
    verify.set_defaults(func=run_verify)

    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _names(name: str | None, allow_all: bool) -> list[str]:
    from harness import datasets

    if name is None or (allow_all and name == "all"):
        return list(datasets.DATASET_NAMES)
    if name not in datasets.DATASET_NAMES:
        valid = ", ".join(datasets.DATASET_NAMES) + (", all" if allow_all else "")
        raise HarnessError(f"unknown dataset {name!r}; valid: {valid}")
    return [name]


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


def _digest(name: str, root: Path) -> str:
    from harness import datasets
    from harness.datasets._core import digest_files

    source = datasets.get_source(name)
    if name == "digits":
        return datasets.load("digits", root).meta.digest[:16]
    files = [p for p in source.required_files(root) if p.is_file()]
    return digest_files(files, extra=name)[:16] if files else "-"


def run_list(args: argparse.Namespace) -> int:
    from harness import datasets

    root = data_root(args)
    rows = [("NAME", "PRESENT", "SIZE", "DIGEST", "WHERE")]
    entries = []
    for name in datasets.DATASET_NAMES:
        source = datasets.get_source(name)
        present = source.present(root)
        where = "embedded (scikit-learn)" if name == "digits" else str(source.directory(root))
        error = None
        try:
            digest = _digest(name, root) if present else "-"
        except (datasets.DatasetError, OSError) as exc:
            digest, error = f"unreadable: {exc}", str(exc)
        size = source.size_on_disk(root)
        rows.append((name, "yes" if present else "no", _size(size), digest, where))
        entries.append({
            "name": name, "present": present, "bytes": size, "embedded": name == "digits",
            "digest": digest if present and error is None else None, "error": error,
            "directory": None if name == "digits" else str(source.directory(root)),
        })  # fmt: skip
    if args.json:
        print(json.dumps({"root": str(root), "datasets": entries}, indent=1, sort_keys=True))
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True))
            + "  "
            + row[4]
        )
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from harness import datasets

    root = data_root(args)
    names = _names(args.name, allow_all=True)
    failures: list[str] = []
    for name in names:
        source = datasets.get_source(name)
        try:
            source.fetch(root, mirror=args.mirror)
        except datasets.DatasetError as exc:
            if len(names) == 1:
                raise HarnessError(str(exc)) from None
            print(f"harness: {exc}", file=sys.stderr)
            failures.append(name)
            continue
        print(f"{name}: ready in {source.directory(root)}")
    if failures:
        raise HarnessError(
            f"{len(failures)} of {len(names)} datasets could not be fetched ({', '.join(failures)}); "
            "see the lines above for the URL and where to put each file by hand"
        )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from harness import datasets

    root = data_root(args)
    names = _names(args.name, allow_all=False)
    failing: list[str] = []
    files = []
    for name in names:
        source = datasets.get_source(name)
        if name == "digits" or (args.name is None and source.size_on_disk(root) == 0):
            continue  # embedded, or nothing of it downloaded: only a named set reports missing
        for status in source.verify(root):
            files.append({"dataset": name, "path": str(status.path), "ok": status.ok,
                          "note": status.note, "fix": status.fix or None})  # fmt: skip
            fix = f"; {status.fix}" if status.fix else ""
            if not status.ok:
                failing.append(f"{status.path}: {status.note}")
            if not args.json:
                print(f"{name}: {'ok  ' if status.ok else 'FAIL'} {status.path}: "
                      f"{status.note}{fix}")  # fmt: skip
    if args.json:
        doc = {"root": str(root), "files": files, "failing": len(failing)}
        print(json.dumps(doc, indent=1, sort_keys=True))
    elif args.name is None and not files:
        print(f"no downloaded datasets under {root}")
    if failing:
        # The one line names the first bad file; the table above lists every one.
        more = f" (and {len(failing) - 1} more listed above)" if len(failing) > 1 else ""
        raise HarnessError(
            f"{len(failing)} file(s) missing or failing verification: {failing[0]}"
            f"{more}; delete a file that differs and fetch again with `harness data fetch NAME`"
        )
    return 0
