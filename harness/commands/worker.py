"""`harness worker`: pull jobs from the queue and run them on one device until stopped."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from harness.commands._common import (
    add_data_option,
    add_db_option,
    add_list_option,
    data_root,
    db_url,
)
from harness.errors import HarnessError

DEFAULT_CHECKPOINTS = "checkpoints"
DEFAULT_LEASE_SECONDS = 120.0
DEFAULT_DB_PATIENCE = 300.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run queued jobs on a GPU or the CPU",
        description="Claim queued jobs one at a time (or K at once with --slots) and run them; "
        "SIGTERM/Ctrl-C releases the job in flight back to the queue.",
    )
    add_db_option(parser)
    add_data_option(parser)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--gpu", type=int, metavar="N", help="run on CUDA device N")
    where.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    add_list_option(
        where,
        "--gpus",
        metavar="GPU",
        help="CUDA devices, e.g. 0,1,2,3 or 0 1 2 3, e.g. 0,1,2,3: one worker process per GPU "
        "(--slots K per GPU)",
    )
    parser.add_argument(
        "--exclusive",
        action="store_true",
        help="claim a job only while no other job runs on this host's device (timing runs; "
        "implies one slot)",
    )
    parser.add_argument(
        "--slots",
        type=int,
        default=1,
        metavar="K",
        help="run K jobs at once on the device, as K child processes (default 1)",
    )
    parser.add_argument(
        "--fuse-seeds",
        type=int,
        default=1,
        metavar="S",
        help="claim up to S seeds of one cell together and train them as one fused model "
        "(device-pipeline jobs only; others run one at a time; default 1)",
    )
    parser.add_argument(
        "--until-empty",
        action="store_true",
        help="exit when no job is left to claim (default: wait for more)",
    )
    parser.add_argument(
        "--max-jobs", type=int, metavar="N", help="exit after N jobs (per slot process)"
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=DEFAULT_LEASE_SECONDS,
        metavar="S",
        help="a job whose worker sends no heartbeat for S seconds goes back to the queue "
        f"(default {DEFAULT_LEASE_SECONDS:g})",
    )
    parser.add_argument(
        "--checkpoints",
        default=None,
        metavar="DIR",
        help=f"per-job checkpoints (env HARNESS_CHECKPOINTS; default ./{DEFAULT_CHECKPOINTS})",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=5.0,
        metavar="S",
        help="wait between claims when the queue is empty (default 5)",
    )
    parser.add_argument(
        "--max-failures",
        type=int,
        default=5,
        metavar="N",
        help="stop after N jobs failed in a row (default 5; 0 = never)",
    )
    parser.add_argument(
        "--db-patience",
        type=float,
        default=DEFAULT_DB_PATIENCE,
        metavar="S",
        help="ride out a database outage for S seconds, retrying with backoff, then stop "
        f"(default {DEFAULT_DB_PATIENCE:g})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    # Test hook (docs/QUEUE.md, "Fault-injection suite"): MODULE:FUNC replacing harness.training.loop's
    # run_job, MODULE also defining JobInterrupted.
    parser.add_argument("--runner", default=None, help=argparse.SUPPRESS)
    # Set by the parent of --slots K on its children only.
    parser.add_argument("--slot-index", type=int, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def resolve_device(args: argparse.Namespace) -> str:
    """--gpu N / --device NAME -> a torch device string, checked before any job is claimed."""
    if args.gpu is None and not args.device:
        return "cpu"
    import torch

    device = f"cuda:{args.gpu}" if args.gpu is not None else args.device
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise HarnessError(
            f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N"
        ) from None
    if parsed.type not in ("cpu", "cuda"):
        raise HarnessError(
            f"--device {device!r} is not supported: jobs train on cpu or cuda[:N] (the fast path "
            "and the fault suite are built for those two)"
        )
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise HarnessError(f"{device}: CUDA is not available on this host; use --device cpu")
        index = parsed.index or 0
        if index >= torch.cuda.device_count():
            raise HarnessError(
                f"{device}: this host has {torch.cuda.device_count()} GPU(s) (0..."
                f"{torch.cuda.device_count() - 1}); pick one of them"
            )
    return device


def parse_gpus(text: str) -> list[int]:
    """--gpus "0,1,2,3" -> [0, 1, 2, 3], each an existing CUDA device, no repeats."""
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HarnessError(f"--gpus {text!r}: expected GPU numbers such as 0,1,2,3") from None
    if not gpus or any(gpu < 0 for gpu in gpus):
        raise HarnessError(f"--gpus {text!r}: expected GPU numbers such as 0,1,2,3")
    if len(set(gpus)) != len(gpus):
        raise HarnessError(f"--gpus {text!r} lists a GPU twice; use --slots K for K jobs per GPU")
    import torch

    if not torch.cuda.is_available():
        raise HarnessError(f"--gpus {text}: CUDA is not available on this host; use --device cpu")
    count = torch.cuda.device_count()
    missing = [gpu for gpu in gpus if gpu >= count]
    if missing:
        raise HarnessError(
            f"--gpus {text}: no GPU {', '.join(map(str, missing))}; this host has {count} "
            f"(0...{count - 1})"
        )
    return gpus


def gpu_child_argvs(args: argparse.Namespace, gpus: list[int]) -> list[list[str]]:
    """One child worker per (GPU, slot): --device cuda:N, the slot's index on that GPU."""
    return [
        [*_child_argv(args, f"cuda:{gpu}"), "--slot-index", str(slot)]
        for gpu in gpus
        for slot in range(args.slots)
    ]


def checkpoints_dir(args: argparse.Namespace) -> Path:
    return Path(args.checkpoints or os.environ.get("HARNESS_CHECKPOINTS") or DEFAULT_CHECKPOINTS)


def configure_logging() -> None:
    if not logging.getLogger("harness").handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(message)s")
        )
        logging.getLogger("harness").addHandler(handler)
        logging.getLogger("harness").setLevel(logging.INFO)


def _child_argv(args: argparse.Namespace, device: str) -> list[str]:
    argv = [
        "worker",
        "--device",
        device,
        "--slots",
        str(args.slots),
        "--lease-seconds",
        str(args.lease_seconds),
        "--checkpoints",
        str(checkpoints_dir(args)),
        "--poll-seconds",
        str(args.poll_seconds),
        "--max-failures",
        str(args.max_failures),
        "--db-patience",
        str(args.db_patience),
        "--data",
        str(data_root(args)),
    ]
    if args.until_empty:
        argv.append("--until-empty")
    if args.fuse_seeds != 1:
        argv += ["--fuse-seeds", str(args.fuse_seeds)]
    if args.max_jobs is not None:
        argv += ["--max-jobs", str(args.max_jobs)]
    if args.no_progress:
        argv.append("--no-progress")
    if args.exclusive:
        argv.append("--exclusive")
    if args.runner:
        argv += ["--runner", args.runner]
    return argv


def run(args: argparse.Namespace) -> int:
    from harness.faults import fault_plan
    from harness.store.engine import make_engine
    from harness.workers.loop import Worker, WorkerOptions, run_slot_processes, run_worker_processes

    if args.slots < 1:
        raise HarnessError(f"--slots must be at least 1 (got {args.slots})")
    if args.fuse_seeds < 1:
        raise HarnessError(f"--fuse-seeds must be at least 1 (got {args.fuse_seeds})")
    if args.lease_seconds <= 0:
        raise HarnessError(f"--lease-seconds must be positive (got {args.lease_seconds:g})")
    if args.max_jobs is not None and args.max_jobs < 1:
        raise HarnessError(f"--max-jobs must be at least 1 (got {args.max_jobs})")
    if args.db_patience < 0:
        raise HarnessError(f"--db-patience must be 0 or more seconds (got {args.db_patience:g})")
    fault_plan()  # a malformed HARNESS_FAULTS is one line here, not a crash mid-claim
    if args.exclusive and args.slots > 1:
        raise HarnessError(
            f"--exclusive runs one job per device alone; drop --slots {args.slots} "
            "(with --gpus, one exclusive worker per GPU)"
        )
    gpus = parse_gpus(",".join(args.gpus)) if args.gpus is not None else None
    device = resolve_device(args) if gpus is None else f"cuda:{gpus[0]}"
    engine = make_engine(db_url(args))  # fails here, with one line, if the DB is unreachable
    if gpus is not None:
        return run_worker_processes(gpu_child_argvs(args, gpus), db_url(args))
    if args.slots > 1 and args.slot_index is None:
        return run_slot_processes(_child_argv(args, device), args.slots, db_url(args))
    configure_logging()
    options = WorkerOptions(
        device=device,
        data_root=data_root(args),
        checkpoints=checkpoints_dir(args),
        lease_seconds=args.lease_seconds,
        poll_seconds=args.poll_seconds,
        until_empty=args.until_empty,
        max_jobs=args.max_jobs,
        slots=args.slots,
        slot_index=args.slot_index or 0,
        progress=False if args.no_progress else None,
        max_consecutive_failures=args.max_failures,
        exclusive=args.exclusive,
        db_patience=args.db_patience,
        runner=args.runner,
        cohort_size=args.fuse_seeds,
    )
    worker = Worker(engine, options)
    with worker.signals_handled():
        summary = worker.run()  # DatabaseUnreachable: one line from the CLI, exit code 1
    if summary.gave_up:
        # Quarantined: one line, exit code 1 (the device, not the command line, is at fault).
        print(f"harness: error: {summary.stop_reason}", file=sys.stderr)
        return 1
    return 0
