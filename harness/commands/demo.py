"""`harness demo`: the whole loop -- enqueue, a CPU worker, the report -- on the digits dataset."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from harness.commands._common import add_data_option, data_root
from harness.errors import HarnessError

DEFAULT_OUT = "demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    from harness.grids import DEMO_MAX_EPOCHS, DEMO_SEEDS

    parser = subparsers.add_parser(
        "demo",
        help="run the whole loop on the embedded digits dataset, on the CPU (minutes)",
        description="Queue the demo grid (digits x six models x seeds, a short epoch cap), run a "
        "CPU worker until the queue is empty, then build the report.",
    )
    parser.add_argument(
        "--db",
        default=None,
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
    parser.set_defaults(func=run)


def _default_slots() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(2, cores or 1))


def run(args: argparse.Namespace) -> int:
    from harness.commands.status import collect_status, format_status
    from harness.commands.worker import configure_logging
    from harness.db import make_engine
    from harness.grids import demo_grid, seeds_from_count
    from harness.queue import enqueue
    from harness.worker import Worker, WorkerOptions, run_slot_processes

    if args.max_epochs < 1:
        raise HarnessError(f"--max-epochs must be at least 1 (got {args.max_epochs})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url = args.db or f"sqlite:///{out / 'runs.db'}"
    engine = make_engine(url)
    started = time.monotonic()

    if args.max_train_batches is not None and args.max_train_batches < 1:
        raise HarnessError(f"--max-train-batches must be at least 1 (got {args.max_train_batches})")
    grid = demo_grid(max_epochs=args.max_epochs, seeds=seeds_from_count(args.seeds))
    if args.max_train_batches is not None:
        grid = replace(
            grid, overrides={**grid.overrides, "max_train_batches": args.max_train_batches}
        )
    queued = enqueue(engine, grid.jobs(), grid.name)
    print(
        f"demo: {queued.new} new, {queued.existing} already queued/done "
        f"({len(grid.cells)} models x {len(grid.seeds)} seeds on digits, "
        f"at most {args.max_epochs} epochs each) in {url}"
    )

    slots = args.slots or _default_slots()
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
        stop_reason = "queue empty" if code == 0 else f"a worker exited with code {code}"
    else:
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
            stop_reason = worker.run().stop_reason
    status = collect_status(engine)
    print(format_status(status))
    if stop_reason != "queue empty":
        raise HarnessError(
            f"demo stopped before the queue was empty ({stop_reason}); run `harness "
            f"demo --out {out}` again to resume"
        )

    from harness.report import build_report

    report = build_report(engine, out_dir=out / "reports")
    minutes, seconds = divmod(time.monotonic() - started, 60)
    done, failed = status.counts.get("done", 0), status.counts.get("failed", 0)
    print(f"demo: {done} jobs done, {failed} failed, in {minutes:.0f}m{seconds:02.0f}s")
    print(f"report: {report}")
    return 1 if failed else 0
