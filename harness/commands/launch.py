"""`harness launch --slurm | --local`: workers as submitit jobs (harness/workers/launch.py)."""

from __future__ import annotations

import argparse
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any

from harness.commands._common import add_data_option, add_db_option, data_root, db_url
from harness.errors import HarnessError

DEFAULT_LOGS = "launch/%j"
DEFAULT_TIME = "4:00:00"
# Slurm's warning before the time limit (submitit's default) and the local executor's.
SIGNAL_DELAY_S = {"slurm": 90, "local": 60}  # local: a loaded machine releases slowly
# A worker job drains a queue, so hitting the time limit is routine, not an error.
MAX_REQUEUES = 50


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "launch",
        help="start workers as Slurm jobs (requeued on preemption) or local submitit tasks",
        description="Submit worker tasks through submitit: --slurm runs one task per GPU on M "
        "nodes, --local runs W CPU tasks on this host. Each task runs `harness worker "
        "--until-empty` on the database of --db / HARNESS_DB.",
    )
    add_db_option(parser)
    add_data_option(parser)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--slurm", action="store_true", help="submit one Slurm job (sbatch)")
    where.add_argument(
        "--local", action="store_true", help="run the tasks here with submitit's local executor"
    )
    parser.add_argument("--nodes", type=int, default=None, metavar="M", help="Slurm nodes (1)")
    parser.add_argument(
        "--gpus-per-node",
        type=int,
        default=None,
        metavar="N",
        help="GPUs per node, one worker task each (Slurm; default 1)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, metavar="W", help="CPU worker tasks (--local; 1)"
    )
    parser.add_argument(
        "--slots", type=int, default=1, metavar="K", help="jobs at once per task (default 1)"
    )
    parser.add_argument(
        "--fuse-seeds",
        type=int,
        default=1,
        metavar="S",
        help="each worker trains up to S seeds of one cell as one fused model (worker "
        "--fuse-seeds; device-pipeline jobs only; default 1)",
    )
    parser.add_argument("--partition", metavar="P", help="Slurm partition")
    parser.add_argument(
        "--time",
        default=DEFAULT_TIME,
        metavar="T",
        help="time limit per run: minutes or [D-]HH:MM[:SS] (default 4:00:00); the job is "
        "requeued when it runs out",
    )
    parser.add_argument("--cpus-per-task", type=int, metavar="C", help="Slurm CPUs per task")
    parser.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra sbatch option, e.g. account=lab or qos=low (repeatable)",
    )
    parser.add_argument(
        "--logs",
        default=DEFAULT_LOGS,
        metavar="DIR",
        help=f"submitit's folder (%%j: job id; default {DEFAULT_LOGS.replace('%', '%%')}); "
        "on a shared file "
        "system for Slurm",
    )
    parser.add_argument(
        "--checkpoints",
        default=None,
        metavar="DIR",
        help="per-job checkpoints (env HARNESS_CHECKPOINTS; default ./checkpoints); on a "
        "shared file system, a requeued job resumes on any node",
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait for the tasks, then print a summary"
    )
    parser.set_defaults(func=run)


def parse_minutes(text: str) -> int:
    """Slurm's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes, rounded up."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise HarnessError(
            f"--time {text!r}: expected minutes or [D-]HH:MM[:SS], e.g. 90 or 4:00:00"
        )
    days, first, second, third = match.groups()
    parts = [int(p) for p in (first, second, third) if p is not None]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = int(days) * 86400 + sum(p * f for p, f in zip(parts, (3600, 60, 1), strict=False))
    elif len(parts) == 1:
        seconds = parts[0] * 60
    elif len(parts) == 2:  # M:S
        seconds = parts[0] * 60 + parts[1]
    else:
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    minutes = math.ceil(seconds / 60)
    if minutes < 1:
        raise HarnessError(f"--time {text!r} is under a minute; give the workers time to work")
    return minutes


def parse_sbatch_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise HarnessError(f"--sbatch {item!r}: expected KEY=VALUE, e.g. account=lab")
        options[key.replace("-", "_")] = value if sep else True
    return options


def _check_options(args: argparse.Namespace) -> None:
    for name in ("nodes", "gpus_per_node", "workers", "slots", "fuse_seeds", "cpus_per_task"):
        value = getattr(args, name)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise HarnessError(f"{flag} must be at least 1 (got {value})")
    if args.local:
        for name in ("nodes", "gpus_per_node", "partition", "cpus_per_task"):
            if getattr(args, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise HarnessError(f"{flag} is a --slurm option; --local runs --workers W here")
        if args.sbatch:
            raise HarnessError("--sbatch is a --slurm option; --local runs --workers W here")
    else:
        parse_sbatch_options(args.sbatch)  # refused here, before anything else is checked
    if args.slurm and args.workers is not None:
        raise HarnessError(
            "--workers is a --local option; with --slurm use --nodes M --gpus-per-node N"
        )


def _shared_url(url: str, nodes: int, slurm: bool) -> str:
    """The URL every task can use: SQLite paths made absolute, SQLite refused across hosts."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from harness.store.connection import mask_url

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise HarnessError(f"invalid database URL {mask_url(url)}; see --db") from None
    if not parsed.drivername.startswith("sqlite"):
        return url
    if not parsed.database or parsed.database == ":memory:":
        raise HarnessError(
            f"{url}: an in-memory SQLite database is not shared with worker processes; give a "
            "file, e.g. sqlite:///runs.db"
        )
    if slurm and nodes > 1:
        raise HarnessError(
            f"--nodes {nodes} with SQLite ({url}): SQLite on a shared file system is unsafe "
            "across hosts; use PostgreSQL (docs/QUEUE.md) or --nodes 1"
        )
    path = Path(parsed.database).expanduser().absolute()
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


def _claimable(engine: Any) -> int:
    from sqlalchemy import and_, func, or_, select

    from harness.store.clock import db_now
    from harness.store.schema import Job

    stale = and_(Job.status == "running", Job.lease_expires_at < db_now(engine))
    query = select(func.count()).select_from(Job).where(or_(Job.status == "queued", stale))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _executor(args: argparse.Namespace, logs: Path, minutes: int) -> Any:
    import submitit

    cluster = "slurm" if args.slurm else "local"
    executor = submitit.AutoExecutor(
        folder=logs, cluster=cluster, **{f"{cluster}_max_num_timeout": MAX_REQUEUES}
    )
    common: dict[str, Any] = {"name": "harness-workers", "timeout_min": minutes, "nodes": 1}
    if args.local:
        # gpus_per_node 0: the local executor hides the GPUs (CUDA_VISIBLE_DEVICES="").
        executor.update_parameters(**common, tasks_per_node=args.workers or 1, gpus_per_node=0)
        return executor
    gpus = args.gpus_per_node or 1
    executor.update_parameters(
        **{**common, "nodes": args.nodes or 1},
        tasks_per_node=gpus,  # one worker task per GPU
        gpus_per_node=gpus,
        cpus_per_task=args.cpus_per_task,
        slurm_partition=args.partition,
        slurm_signal_delay_s=SIGNAL_DELAY_S["slurm"],
        # --requeue: scontrol requeue (timeout) and preemption with PreemptMode=REQUEUE need it.
        slurm_additional_parameters={"requeue": True, **parse_sbatch_options(args.sbatch)},
    )
    return executor


def run(args: argparse.Namespace) -> int:
    from harness.commands.worker import checkpoints_dir
    from harness.store.connection import mask_url
    from harness.store.engine import make_engine

    _check_options(args)
    minutes = parse_minutes(args.time)
    if args.slurm:
        for tool in ("sbatch", "srun"):
            if shutil.which(tool) is None:
                raise HarnessError(
                    f"no {tool} on PATH: run this on a Slurm login node, or use --local"
                )
    nodes = args.nodes or 1
    url = _shared_url(db_url(args), nodes, args.slurm)
    engine = make_engine(url)  # one line if unreachable
    claimable = _claimable(engine)
    if not claimable:
        raise HarnessError(
            f"nothing queued in {mask_url(url)}: queue jobs first, e.g. `harness enqueue --grid "
            "demo`, or `harness retry --failed`"
        )

    from harness.workers.launch import LaunchTask, TaskConfig, exported_db

    cluster = "slurm" if args.slurm else "local"
    config = TaskConfig(
        device_kind="cuda" if args.slurm else "cpu",
        slots=args.slots,
        fuse_seeds=args.fuse_seeds,
        checkpoints=str(checkpoints_dir(args).absolute()),
        data_root=str(data_root(args).absolute()),
        masked_url=mask_url(url),
        release_wait_s=max(5.0, SIGNAL_DELAY_S[cluster] - 15.0),
    )
    logs = Path(args.logs).expanduser().absolute()
    executor = _executor(args, logs, minutes)
    with exported_db(url):
        try:
            job = executor.submit(LaunchTask(config))
        except Exception as exc:  # sbatch refused it: say what it said, on one line
            text = " ".join(str(exc).split())
            raise HarnessError(f"submission failed: {mask_url(url)}: {text[:400]}") from None
    tasks = job.num_tasks
    shape = (
        f"{nodes} node(s) x {args.gpus_per_node or 1} GPU task(s)"
        if args.slurm
        else f"{tasks} CPU task(s)"
    )
    print(
        f"launch: {cluster} job {job.job_id}: {shape}, {args.slots} slot(s) each, "
        f"{claimable} job(s) claimable in {mask_url(url)}"
    )
    print(f"logs: {job.paths.folder}")
    if not args.wait:
        print(f"watch: harness status --watch --db '{mask_url(url)}'")
        return 0
    return _wait(job, engine)


def _wait(job: Any, engine: Any) -> int:
    from harness.commands.status import collect_status, format_status

    started = time.monotonic()
    while not job.done():
        time.sleep(1.0)
    failed_tasks = []
    for index in range(job.num_tasks):
        error = job.task(index).exception()
        if error is not None:
            lines = [line for line in str(error).splitlines() if line.strip()]
            failed_tasks.append(f"task {index}: {lines[-1] if lines else type(error).__name__}")
    status = collect_status(engine)
    print(format_status(status))
    minutes, seconds = divmod(time.monotonic() - started, 60)
    done, failed = status.counts.get("done", 0), status.counts.get("failed", 0)
    print(
        f"launch: {job.num_tasks - len(failed_tasks)}/{job.num_tasks} task(s) finished cleanly; "
        f"jobs {done} done, {failed} failed; waited {minutes:.0f}m{seconds:02.0f}s"
    )
    for line in failed_tasks:
        print(f"launch: {line} (log: {job.paths.folder})")
    return 1 if failed_tasks or failed else 0
