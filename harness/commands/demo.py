"""`harness demo`: the whole loop -- enqueue, a CPU worker, the report -- on the digits dataset."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from harness.commands._common import add_data_option, add_list_option, data_root
from harness.errors import HarnessError
from harness.store.connection import mask_url

DEFAULT_OUT = "demo"
AUDIT_TRIALS = 4
AUDIT_REPORT = "audit"
SEQUENTIAL_BUDGET = 0.25  # device hours: about 18 demo jobs of 2 epochs (48 s each, 2 at a time)
SEQUENTIAL_HORIZON = 12
SEQUENTIAL_SPENDING = "pocock"  # earlier stops on a small horizon
SEQUENTIAL_NAME = "demo-sequential"


def register(subparsers: argparse._SubParsersAction) -> None:
    from harness.experiment.grids import DEMO_MAX_EPOCHS, DEMO_SEEDS

    parser = subparsers.add_parser(
        "demo",
        help="run the whole loop on the embedded digits dataset, on the CPU (minutes)",
        description="Queue the demo grid (digits x ResNet-18 and GradAttn RoPE x 8 seeds, a short epoch cap), run a "
        "CPU worker until the queue is empty, then build the report.",
    )
    parser.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        help="results database URL (default: sqlite:///OUT/runs.db, kept apart from your "
        "experiments; HARNESS_DB is deliberately not used here)",
    )
    add_data_option(parser)
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"database, checkpoints and reports/ go here (default ./{DEFAULT_OUT})",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=len(DEMO_SEEDS),
        metavar="N",
        help=f"seeds per model, from 42 (default {len(DEMO_SEEDS)})",
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=DEMO_MAX_EPOCHS,
        metavar="E",
        help=f"epoch cap per job (default {DEMO_MAX_EPOCHS})",
    )
    parser.add_argument(
        "--max-train-batches",
        type=int,
        default=None,
        metavar="B",
        help="cap the training batches per epoch (a quicker smoke run)",
    )
    parser.add_argument(
        "--slots",
        type=int,
        default=None,
        metavar="K",
        help="worker processes sharing the CPU (default: one per core, at most 2)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    audit = parser.add_argument_group("full audit")
    audit.add_argument(
        "--full-audit",
        action="store_true",
        help="also run the reference-code protocol, single-switch runs where they separate the "
        "quirks, equal-budget tuning of every model and the tuned grid; the report then has "
        "the protocol-differences and tuned-vs-paper sections (about 30 min on 2 cores)",
    )
    audit.add_argument(
        "--trials",
        type=int,
        default=AUDIT_TRIALS,
        metavar="N",
        help=f"tuning trials per model with --full-audit (default {AUDIT_TRIALS})",
    )
    add_list_option(
        audit,
        "--models",
        metavar="MODEL",
        help="these models on digits instead of the default two (any of the six)",
    )
    sequential = parser.add_argument_group("sequential audit")
    sequential.add_argument(
        "--sequential",
        action="store_true",
        help="audit the digits claims sequentially instead of running a fixed grid: seeds "
        "are queued only for claims still undecided, within --budget (docs/STATISTICS.md)",
    )
    sequential.add_argument(
        "--budget",
        type=float,
        default=SEQUENTIAL_BUDGET,
        metavar="HOURS",
        help=f"device hours the sequential demo may use (default {SEQUENTIAL_BUDGET:g})",
    )
    sequential.add_argument(
        "--max-seeds",
        type=int,
        default=SEQUENTIAL_HORIZON,
        metavar="N",
        help=f"horizon of the sequential demo (default {SEQUENTIAL_HORIZON})",
    )
    parser.set_defaults(func=run)


def _default_slots() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(2, cores or 1))


def run(args: argparse.Namespace) -> int:
    from harness.commands.status import collect_status, format_status
    from harness.experiment.grids import resolve_grid
    from harness.store.engine import make_engine

    _check_numbers(args)
    overrides: dict[str, Any] = {"max_epochs": args.max_epochs}
    if args.max_train_batches is not None:
        overrides["max_train_batches"] = args.max_train_batches
    # Resolved (and its names checked) before anything is written.
    grid = resolve_grid("demo", seeds=args.seeds, models=args.models, overrides=overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url = getattr(args, "db", None) or f"sqlite:///{out / 'runs.db'}"
    engine = make_engine(url)
    started = time.monotonic()

    slots = args.slots or _default_slots()
    what = (
        f"({len(grid.cells)} models x {len(grid.seeds)} seeds on digits, "
        f"at most {args.max_epochs} epochs each) in {mask_url(url)}"
    )
    if args.sequential:
        return _run_sequential(engine, url, args, out, slots, overrides, started)
    if args.full_audit:
        _queue_audit(engine, grid, url, args, slots, what)
    else:
        _queue(engine, grid.name, grid.jobs(), what)

    stop_reason = _run_workers(engine, url, args, out, slots)
    status = collect_status(engine)
    print(format_status(status))
    if stop_reason != "queue empty":
        again = " --full-audit" if args.full_audit else ""
        raise HarnessError(
            f"demo stopped before the queue was empty ({stop_reason}); run `harness "
            f"demo{again} --out {out}` again to resume"
        )

    from harness.report.render import build_report

    name = AUDIT_REPORT if args.full_audit else None
    # The paper's claims are about datasets the demo never runs; the demo audits its own
    # claims file about the digits grid (harness/paperdata/digits_claims.yaml).
    claims = None if args.full_audit else demo_claims_file()
    report = build_report(engine, out_dir=out / "reports", name=name, claims_file=claims)
    minutes, seconds = divmod(time.monotonic() - started, 60)
    done, failed = status.counts.get("done", 0), status.counts.get("failed", 0)
    print(f"demo: {done} jobs done, {failed} failed, in {minutes:.0f}m{seconds:02.0f}s")
    print(f"report: {report}")
    return 1 if failed else 0


def demo_claims_file() -> Path:
    from importlib import resources

    return Path(str(resources.files("harness").joinpath("paperdata", "digits_claims.yaml")))


def _check_numbers(args: argparse.Namespace) -> None:
    if args.max_epochs < 1:
        raise HarnessError(f"--max-epochs must be at least 1 (got {args.max_epochs})")
    if args.max_train_batches is not None and args.max_train_batches < 1:
        raise HarnessError(f"--max-train-batches must be at least 1 (got {args.max_train_batches})")
    if args.trials < 1:
        raise HarnessError(f"--trials must be at least 1 (got {args.trials})")
    if not args.full_audit and args.trials != AUDIT_TRIALS:
        raise HarnessError("--trials only applies with --full-audit; add --full-audit")
    if args.sequential and args.full_audit:
        raise HarnessError("--sequential and --full-audit are two different demos; pick one")
    from harness.experiment.grids import DEMO_SEEDS

    if args.sequential and args.seeds != len(DEMO_SEEDS):
        raise HarnessError("--seeds sets the fixed demo's grid; with --sequential give the "
                           "horizon as --max-seeds N")  # fmt: skip
    sequential_only = (args.budget != SEQUENTIAL_BUDGET, args.max_seeds != SEQUENTIAL_HORIZON)
    if not args.sequential and any(sequential_only):
        raise HarnessError("--budget and --max-seeds only apply with --sequential; add --sequential")
    if args.sequential and not args.budget > 0:
        raise HarnessError(f"--budget must be a positive number of hours (got {args.budget})")


def _run_sequential(
    engine: Any,
    url: str,
    args: argparse.Namespace,
    out: Path,
    slots: int,
    overrides: dict[str, Any],
    started: float,
) -> int:
    """The digits claims audited sequentially: rounds of planning, then workers until empty."""
    from harness.audit.run import run_audit
    from harness.audit.spec import AuditSpec, grid_claims
    from harness.experiment.grids import resolve_grid
    from harness.report.render import build_report
    from harness.report.sequential import Design

    design = Design(args.max_seeds, SEQUENTIAL_SPENDING)
    grid = resolve_grid("demo", seeds=design.horizon, models=args.models, overrides=overrides)
    claims, source = grid_claims(demo_claims_file(), grid)
    spec = AuditSpec(SEQUENTIAL_NAME, grid, claims, source, design, args.budget)
    print(f"demo: sequential audit of the digits claims, {design.text()}, budget "
          f"{args.budget:g} device-h, in {mask_url(url)}")  # fmt: skip
    reasons: list[str] = []

    def workers() -> None:
        reasons.append(_run_workers(engine, url, args, out, slots))
        if reasons[-1] != "queue empty":
            raise HarnessError(f"demo stopped before the queue was empty ({reasons[-1]}); run "
                               f"`harness demo --sequential --out {out}` again to resume")  # fmt: skip

    plan = run_audit(engine, spec, between=workers)
    report = build_report(engine, out_dir=out / "reports", name="sequential",
                          claims_file=demo_claims_file())  # fmt: skip
    minutes, seconds = divmod(time.monotonic() - started, 60)
    failed = plan.jobs.get("failed", 0)
    print(f"demo: {plan.jobs.get('done', 0)} jobs done, {failed} failed, in "
          f"{minutes:.0f}m{seconds:02.0f}s")  # fmt: skip
    print(f"report: {report}")
    return 1 if failed else 0


def _queue(engine: Any, grid_name: str, specs: list[Any], what: str) -> None:
    from harness.queue.jobs import enqueue

    queued = enqueue(engine, specs, grid_name)
    print(f"demo: {queued.new} new, {queued.existing} already queued/done {what}")


def _queue_audit(
    engine: Any, grid: Any, url: str, args: argparse.Namespace, slots: int, what: str
) -> None:
    """Both protocols and the single-switch runs, then tuning, then the tuned grid."""
    from harness.tuning.full_audit import protocol_parts, tune_grid, tuned_part

    for part in protocol_parts(grid):
        _queue(engine, part.name, part.specs, f"[{part.name}] {what}")
    print(
        f"audit: tuning {len(grid.cells)} model(s) on digits, {args.trials} trials each, "
        f"{args.max_epochs} epoch(s) per trial, {slots} at a time"
    )
    from harness.commands.tune import print_tune_table

    print_tune_table(tune_grid(grid, url, args.trials, args.max_epochs, data_root(args), slots))
    part = tuned_part(grid, url)
    _queue(engine, part.name, part.specs, f"[{part.name}] {what}")


def _run_workers(engine: Any, url: str, args: argparse.Namespace, out: Path, slots: int) -> str:
    """Run CPU workers until the queue is empty; returns the stop reason."""
    from harness.commands.worker import configure_logging
    from harness.workers.loop import Worker, WorkerOptions, run_slot_processes

    if slots > 1:
        # One process per core, one thread each: 8x8 images make tensors too small for
        # intra-op threads to pay off, while separate jobs scale with the cores.
        argv = [
            "worker",
            "--device",
            "cpu",
            "--slots",
            str(slots),
            "--until-empty",
            "--max-failures",
            "0",
            "--data",
            str(data_root(args)),
            "--checkpoints",
            str(out / "checkpoints"),
        ]
        if args.no_progress:
            argv.append("--no-progress")
        code = run_slot_processes(argv, slots, url)
        return "queue empty" if code == 0 else f"a worker exited with code {code}"
    configure_logging()
    if not os.environ.get("OMP_NUM_THREADS"):
        import torch

        torch.set_num_threads(1)
    worker = Worker(
        engine,
        WorkerOptions(
            device="cpu",
            data_root=data_root(args),
            checkpoints=out / "checkpoints",
            until_empty=True,
            progress=False if args.no_progress else None,
            max_consecutive_failures=0,  # show every failure in the report, not stop early
        ),
    )
    with worker.signals_handled():
        return worker.run().stop_reason
