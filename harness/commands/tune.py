"""`harness tune`: Optuna search over lr / weight decay (/ dropout), equal budget per model."""

from __future__ import annotations

import argparse
from typing import Any

from harness.commands._common import (
    add_data_option,
    add_db_option,
    add_list_option,
    data_root,
    db_url,
)
from harness.errors import HarnessError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="tune lr / weight decay (/ dropout) per model of a cell, same trial budget each",
        description="Top the Optuna study of each (protocol, dataset, model) up to --trials "
        "finished trials, stored in the results database; each trial trains once and is scored "
        "by its best validation top-1. Safe to rerun or run from several processes at once. "
        "See docs/TUNING.md.",
    )
    add_db_option(parser)
    add_data_option(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="one model")
    add_list_option(which, "--models", metavar="MODEL", help="several models (a,b or a b)")
    which.add_argument(
        "--grid",
        metavar="paper|demo|FILE.yaml",
        help="every model the grid runs on --dataset (with the grid's settings)",
    )
    parser.add_argument("--dataset", required=True, help="the dataset of the cell")
    parser.add_argument(
        "--trials", type=int, required=True, metavar="N", help="finished trials per model"
    )
    parser.add_argument(
        "--epochs", type=int, metavar="E", help="epochs per trial (default: the protocol's)"
    )
    parser.add_argument("--protocol", help="paper or reference-code (default: the grid's / paper)")
    parser.add_argument(
        "--seed", type=int, default=42, help="run seed of every trial and sampler seed (42)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fixed setting for every trial, e.g. batch_size=64 (not the searched keys)",
    )
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N (cpu)")
    parser.add_argument(
        "--prune-startup",
        type=int,
        default=None,
        metavar="K",
        help="no pruning until K trials finished (default 5)",
    )
    parser.add_argument(
        "--prune-warmup",
        type=int,
        default=None,
        metavar="W",
        help="earliest epoch a trial may be pruned at (default: a quarter of the epochs)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="progress bars and Optuna's log (default off; --no-progress as in worker and demo)",
    )
    parser.set_defaults(func=run)


def _cell_models(args: argparse.Namespace) -> tuple[list[str], str, dict[str, Any], int | None]:
    """(models, protocol, fixed overrides, default epochs) from --model/--models/--grid."""
    from harness.commands.enqueue import parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.grid is None:
        models = [args.model] if args.model else list(dict.fromkeys(args.models))
        return models, args.protocol or "paper", overrides, None
    from harness.experiment.grids import resolve_grid

    grid = resolve_grid(args.grid, protocol=args.protocol, datasets=[args.dataset])
    models = [m for m, d in grid.cells if d == args.dataset]
    fixed = {k: v for k, v in grid.overrides.items() if k not in ("max_epochs", "hparams")}
    epochs = grid.overrides.get("max_epochs")
    return models, grid.protocol, {**fixed, **overrides}, epochs


def run(args: argparse.Namespace) -> int:
    from harness.store.connection import mask_url
    from harness.tuning.tune import PRUNE_STARTUP_TRIALS, tune_cell

    models, protocol, overrides, grid_epochs = _cell_models(args)
    epochs = args.epochs if args.epochs is not None else grid_epochs
    url = db_url(args)
    print(
        f"tuning {args.dataset} (protocol {protocol}) in {mask_url(url)}: {len(models)} model(s)"
        f" x {args.trials} trials, epochs {epochs or 'of the protocol'}, seed {args.seed}"
    )
    summaries = []
    for model in models:
        summary = tune_cell(
            url,
            protocol,
            args.dataset,
            model,
            args.trials,
            epochs,
            seed=args.seed,
            data_root=data_root(args),
            device=args.device,
            overrides=overrides,
            progress=args.progress,
            prune_startup=(
                PRUNE_STARTUP_TRIALS if args.prune_startup is None else args.prune_startup
            ),
            prune_warmup=args.prune_warmup,
        )
        summaries.append(summary)
        print(f"  {model}: {summary.ran} trial(s) run now")
    print_tune_table(summaries)
    return 0


def print_tune_table(summaries: list[Any]) -> None:
    header = ("model", "complete", "pruned", "best val top-1", "best params")
    rows = [
        (
            s.model,
            str(s.trials_complete),
            str(s.trials_pruned),
            "-" if s.best_value is None else f"{100 * s.best_value:.2f}%",
            ", ".join(f"{k}={v:.3g}" for k, v in s.best_params.items()) or "-",
        )
        for s in summaries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if len(summaries) > 1:
        budgets = {s.trials_complete + s.trials_pruned for s in summaries}
        if len(budgets) > 1:
            raise HarnessError(
                "the models' studies hold different numbers of trials "
                f"({', '.join(f'{s.model}={s.trials_complete + s.trials_pruned}' for s in summaries)});"
                " rerun with the largest --trials so each has the same budget"
            )
