"""`harness enqueue`: expand a grid into (model, dataset, seed) jobs; idempotent."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from harness.commands._common import add_db_option, add_list_option, db_url
from harness.errors import HarnessError

MAX_PRIORITY = 1_000_000


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "enqueue",
        help="queue a grid of jobs (paper, demo or a YAML file)",
        description="Queue one job per (model, dataset, seed) of a grid. A job already in the "
        "database (same key: model, dataset, seeds, protocol, settings, version) is not added "
        "again.",
    )
    add_db_option(parser)
    parser.add_argument(
        "--grid",
        required=True,
        metavar="paper|demo|FILE.yaml",
        help="the paper's 38 cells, the digits demo, or a grid file",
    )
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="N seeds starting at the paper's 42: 42, 43, ... (default: the grid's)",
    )
    add_list_option(seeds, "--seed-list", metavar="SEED", help="explicit seeds, e.g. 1,2,3 or 1 2 3")
    parser.add_argument("--protocol", help="paper or reference-code (default: the grid's)")
    add_list_option(parser, "--models", metavar="MODEL", help="only these models (a,b or a b)")
    add_list_option(parser, "--datasets", metavar="DATASET", help="only these datasets")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. max_epochs=2 (repeatable; see docs/QUEUE.md for the keys)",
    )
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="vary a setting over values, e.g. lr=0.1,0.01 (repeatable: the product of all; "
        "adds to a grid file's sweep)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document (docs/JSON.md)")
    splits = parser.add_mutually_exclusive_group()
    splits.add_argument(
        "--split-seed",
        type=int,
        metavar="S",
        help="seed of the random data splits (default 42, the paper's)",
    )
    splits.add_argument(
        "--vary-split",
        action="store_true",
        help="the split seed follows each run's seed, so the spread includes split variance",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        metavar="N",
        help="claims a job may use up before it is failed (default 3)",
    )
    parser.add_argument(
        "--hparams",
        choices=("paper", "tuned"),
        default="paper",
        help="paper: Table 1's lr / weight decay / dropout; tuned: each cell's best trial of "
        "`harness tune` (every cell must be tuned with the same budget; docs/TUNING.md)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        metavar="N",
        help="claimed highest first, oldest first within a priority (default 0); given again "
        "for jobs already queued, it reprioritises those not yet claimed",
    )
    parser.add_argument("--dry-run", action="store_true", help="show what would be queued")
    parser.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set key=value` items -> {key: YAML scalar}."""
    from harness.experiment.config import parse_value

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--set {item!r} is not KEY=VALUE; e.g. --set max_epochs=2")
        overrides[key.strip()] = parse_value(value.strip())
    return overrides


def parse_sweeps(items: list[str]) -> dict[str, tuple[Any, ...]]:
    """`--sweep lr=0.1,0.01` items -> {key: (values...)}, checked like a grid file's sweep."""
    from harness.experiment.config import parse_value
    from harness.experiment.grids import parse_sweep

    sweep: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        parts = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not parts:
            raise HarnessError(f"--sweep {item!r} is not KEY=V1,V2; e.g. --sweep lr=0.1,0.01")
        if key.strip() in sweep:
            raise HarnessError(f"--sweep {key.strip()} is given twice; list its values once")
        sweep[key.strip()] = [parse_value(v) for v in parts]
    return parse_sweep(sweep, "--sweep: ")


def run(args: argparse.Namespace) -> int:
    from harness.experiment.grids import parse_seed_list, resolve_grid
    from harness.queue.jobs import enqueue
    from harness.store.engine import make_engine

    if args.max_attempts < 1:
        raise HarnessError(f"--max-attempts must be at least 1 (got {args.max_attempts})")
    if args.priority is not None and abs(args.priority) > MAX_PRIORITY:
        raise HarnessError(
            f"--priority {args.priority} is out of range; use -{MAX_PRIORITY}..{MAX_PRIORITY}"
        )
    grid = resolve_grid(
        args.grid,
        seeds=args.seeds,
        seed_list=parse_seed_list(",".join(args.seed_list)) if args.seed_list else None,
        protocol=args.protocol,
        models=args.models,
        datasets=args.datasets,
        overrides=parse_overrides(args.overrides),
        split_seed=args.split_seed,
        vary_split=args.vary_split,
        sweep=parse_sweeps(args.sweep),
    )
    if "hparams" in grid.overrides:
        raise HarnessError("hparams is set by --hparams paper|tuned, not by --set or a grid file")
    cell_overrides = _tuned(args, grid) if args.hparams == "tuned" else None
    specs = grid.jobs(cell_overrides)
    per_dataset = Counter(spec.dataset for spec in specs)
    settings = grid.settings()
    swept = f"{len(settings)} settings x " if grid.sweep else ""
    summary = (
        f"grid {grid.name!r}: {len(grid.cells)} cells x {swept}{len(grid.seeds)} seed(s) "
        f"({', '.join(map(str, grid.seeds))}) = {len(specs)} jobs, protocol {grid.protocol}"
        + (", split seed = run seed" if grid.vary_split else f", split seed {grid.split_seed}")
    )
    departed = _departure_line(grid.protocol, specs)
    if args.json and args.dry_run:
        print(json.dumps(_plan_document(grid, specs, cell_overrides), indent=1, sort_keys=True,
                         default=str))  # fmt: skip
        return 0
    if args.dry_run:
        print(summary)
        for dataset, count in per_dataset.items():
            models = sorted({s.model for s in specs if s.dataset == dataset})
            print(f"  {dataset}: {count} jobs ({', '.join(models)})")
        if grid.overrides:
            print("  overrides: " + ", ".join(f"{k}={v}" for k, v in grid.overrides.items()))
        for key, values in grid.sweep.items():
            print(f"  sweep {key}: {', '.join(map(str, values))}")
        for (model, dataset), best in (cell_overrides or {}).items():
            shown = ", ".join(f"{k}={v:.3g}" for k, v in best.items() if k != "hparams")
            print(f"  tuned {model}/{dataset}: {shown}")
        if departed:
            print(departed)
        print("dry run: nothing queued")
        return 0
    engine = make_engine(db_url(args))
    result = enqueue(
        engine, specs, grid.name, max_attempts=args.max_attempts, priority=args.priority
    )
    if args.json:
        doc = {**_plan_document(grid, specs, cell_overrides, with_jobs=False),
               "new": result.new, "existing": result.existing,
               "reprioritised": result.reprioritised if args.priority is not None else 0}  # fmt: skip
        print(json.dumps(doc, indent=1, sort_keys=True, default=str))
        return 0
    print(summary)
    moved = (
        f" ({result.reprioritised} of them, still queued, moved to priority {args.priority})"
        if args.priority is not None and result.existing
        else ""
    )
    print(f"{result.new} new, {result.existing} already queued/done{moved}")
    if departed:
        print(departed)
    return 0


def _departure_line(protocol: str, specs: list[Any]) -> str:
    """One line when the jobs change the protocol: the report will not test the paper with
    them (docs/PROTOCOL.md, "Departures")."""
    from harness.experiment.departures import departures, summary
    from harness.report.protocol_gate import not_the

    found = [d for s in specs for d in departures(s.protocol, s.dataset, s.model, s.config)]
    if not found:
        return ""
    return (
        f"note: {not_the(protocol)}: these jobs change {summary(found, protocol)}; the report "
        "labels their comparisons with the paper and gives no verdict on its claims from them"
    )


def _plan_document(
    grid: Any,
    specs: list[Any],
    cell_overrides: dict[tuple[str, str], dict[str, Any]] | None,
    with_jobs: bool = True,
) -> dict[str, Any]:
    """`enqueue --dry-run --json` (docs/JSON.md): the grid as resolved and every job it makes."""
    from harness.experiment.departures import as_json, departures

    doc: dict[str, Any] = {
        "grid": grid.name,
        "protocol": grid.protocol,
        "cells": [{"model": m, "dataset": d} for m, d in grid.cells],
        "seeds": list(grid.seeds),
        "split_seed": None if grid.vary_split else grid.split_seed,
        "vary_split": grid.vary_split,
        "overrides": dict(grid.overrides),
        "sweep": {key: list(values) for key, values in grid.sweep.items()},
        "settings": grid.settings(),
        "tuned": [{"model": m, "dataset": d, "settings": best}
                  for (m, d), best in (cell_overrides or {}).items()],  # fmt: skip
        "job_count": len(specs),
    }
    if with_jobs:
        doc["jobs"] = [
            {"key": spec.key(), "model": spec.model, "dataset": spec.dataset, "seed": spec.seed,
             "split_seed": spec.split_seed, "protocol": spec.protocol,
             "config": spec.config.to_dict(),
             "departures": as_json(departures(spec.protocol, spec.dataset, spec.model,
                                              spec.config))}
            for spec in specs
        ]  # fmt: skip
    return doc


def _tuned(args: argparse.Namespace, grid: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Per cell: the best trial's settings plus hparams=tuned (refused unless every cell was
    tuned with the same budget; a searched key also set by hand is a contradiction)."""
    from harness.store.connection import mask_url
    from harness.tuning.results import tuned_overrides
    from harness.tuning.tune import SEARCHED_KEYS

    clash = [key for key in SEARCHED_KEYS if key in grid.overrides or key in grid.sweep]
    if clash:
        raise HarnessError(
            f"--hparams tuned takes {', '.join(clash)} from each cell's tuning study; drop "
            f"{', '.join(f'--set {k}=...' for k in clash)} (or those keys of the grid file's "
            "overrides), or use --hparams paper"
        )
    url = db_url(args)
    # A URL with a password shows as "URL" in the command, so nobody pastes the asterisks.
    shown = mask_url(url) if mask_url(url) == url else "URL"
    best = tuned_overrides(
        url, grid.protocol, grid.cells, db_option=f" --db {shown}" if getattr(args, "db", None) else ""
    )
    return {cell: {**params, "hparams": "tuned"} for cell, params in best.items()}
