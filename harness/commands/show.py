"""`harness show JOB`: everything the database knows about one job, and its checkpoint."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.commands._common import add_db_option, db_url
from harness.errors import HarnessError

# Job columns shown as they are stored (times, worker and the rest are renamed or formatted).
JOB_COLUMNS = ("key", "status", "priority", "grid", "model", "dataset", "seed", "split_seed",
               "protocol", "harness_version", "attempts", "max_attempts", "device", "epoch")  # fmt: skip
EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                 "train_seconds", "eval_seconds")  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show",
        help="one job: config, state history, attempts, error, epochs, checkpoint, result",
        description="Everything recorded about one job: its settings, every state change "
        "(who claimed it, releases, failures, cancellation), the last error in full, the "
        "per-epoch table, its checkpoint file, and its result with provenance.",
    )
    add_db_option(parser)
    parser.add_argument("job", type=int, metavar="JOB", help="the job id (`harness status`)")
    parser.add_argument(
        "--checkpoints",
        default=None,
        help="the workers' --checkpoints folder (env HARNESS_CHECKPOINTS; default ./checkpoints)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document (docs/JSON.md)")
    parser.set_defaults(func=run)


def collect(engine: Any, job_id: int, checkpoints: Path) -> dict[str, Any]:
    """The job as one JSON-ready document (the schema docs/JSON.md describes)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from harness.report.load import job_departures
    from harness.store.schema import EpochRow, Job, JobEvent, Result

    with Session(engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            last = session.execute(select(Job.id).order_by(Job.id.desc()).limit(1)).scalar()
            have = f"ids run from 1 to {last}" if last else "the database has no jobs"
            raise HarnessError(f"no job {job_id} in this database ({have}); see `harness status`")
        events = session.execute(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        ).scalars()
        epochs = session.execute(
            select(EpochRow).where(EpochRow.job_id == job_id).order_by(EpochRow.epoch)
        ).scalars()
        result = session.execute(select(Result).where(Result.job_id == job_id)).scalar()
        checkpoint = checkpoints / f"{job.key}.pt"
        return {
            "id": job.id,
            **{column: getattr(job, column) for column in JOB_COLUMNS},
            "worker": job.worker_id,
            "created_at": _time(job.created_at),
            "started_at": _time(job.started_at),
            "finished_at": _time(job.finished_at),
            "config": job.config,
            "departures": job_departures(job),
            "history": [
                {"at": _time(e.at), "state": e.state, "attempt": e.attempt,
                 "worker": e.worker_id, "note": e.note}
                for e in events
            ],  # fmt: skip
            "error": job.error,
            "epochs": [{c: getattr(row, c) for c in EPOCH_COLUMNS} for row in epochs],
            "checkpoint": {
                "path": str(checkpoint),
                "exists": checkpoint.is_file(),
                "bytes": checkpoint.stat().st_size if checkpoint.is_file() else None,
            },
            "result": None if result is None else _result(result),
        }


def _result(result: Any) -> dict[str, Any]:
    from harness.training.metrics import METRIC_KEYS

    return {
        "metrics": {key: getattr(result, key) for key in METRIC_KEYS},
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "evaluated_epoch": result.evaluated_epoch,
        "epoch_seconds": result.epoch_seconds,
        "params": result.params,
        "device": result.device,
        "provenance": result.provenance,
    }


def _departure_text(doc: dict[str, Any]) -> str:
    from harness.experiment.departures import Departure, summary

    if doc["departures"] is None:
        return "departures from the protocol: not recorded (an imported run)"
    if not doc["departures"]:
        return f"departures from the protocol: none (a run of {doc['protocol']} as written)"
    items = [Departure.from_json(d) for d in doc["departures"]]
    return f"departures from the protocol: {summary(items, doc['protocol'])}"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(sep=" ", timespec="seconds")


def render(doc: dict[str, Any]) -> list[str]:
    lines = [
        f"job {doc['id']}: {doc['model']}/{doc['dataset']}/seed {doc['seed']} "
        f"[{doc['protocol']}] {doc['status'].upper()}",
        f"  key {doc['key']}, grid {doc['grid']}, priority {doc['priority']}, split seed "
        f"{doc['split_seed']}, harness {doc['harness_version']}",
        f"  attempts {doc['attempts']}/{doc['max_attempts']}, worker {doc['worker'] or '-'}, "
        f"device {doc['device'] or '-'}, last epoch {doc['epoch'] or 0}/"
        f"{doc['config'].get('max_epochs', '?')}",
        f"  created {doc['created_at']}, started {doc['started_at'] or '-'}, "
        f"finished {doc['finished_at'] or '-'}",
        "config:",
        *(f"  {key} = {json.dumps(value)}" for key, value in sorted(doc["config"].items())),
        _departure_text(doc),
        "history:",
    ]
    if not doc["history"]:
        lines.append("  (none recorded: the job was queued before schema revision 0004)")
    for event in doc["history"]:
        note = f"  {event['note']}" if event["note"] else ""
        lines.append(f"  {event['at']}  {event['state']:<9} attempt {event['attempt']}  "
                     f"{event['worker'] or '-'}{note}")  # fmt: skip
    if doc["error"]:
        lines += ["last error:", *(f"  {line}" for line in doc["error"].rstrip().splitlines())]
    lines.append(f"epochs ({len(doc['epochs'])}):")
    if doc["epochs"]:
        lines.append("  epoch  train_loss  train_acc  val_loss  val_acc        lr  seconds")
        for e in doc["epochs"]:
            lines.append(
                f"  {e['epoch']:>5}  {e['train_loss']:>10.4f}  {e['train_acc']:>9.4f}  "
                f"{e['val_loss']:>8.4f}  {e['val_acc']:>7.4f}  {e['lr']:>8.2e}  "
                f"{e['train_seconds'] + e['eval_seconds']:>7.1f}"
            )
    ckpt = doc["checkpoint"]
    state = f"{ckpt['bytes']:,} bytes" if ckpt["exists"] else "none"
    lines.append(f"checkpoint: {ckpt['path']} ({state})")
    result = doc["result"]
    if result is None:
        lines.append("result: none yet")
    else:
        shown = ", ".join(
            f"{k} {v:.4f}" for k, v in result["metrics"].items() if isinstance(v, float)
        )
        lines += [
            f"result: {shown}",
            f"  best epoch {result['best_epoch']}, {result['epochs_run']} epochs run, "
            f"{result['params']} parameters, on {result['device']}",
            "  provenance: " + json.dumps(result["provenance"], sort_keys=True),
        ]
    return lines


def run(args: argparse.Namespace) -> int:
    from harness.commands.worker import checkpoints_dir
    from harness.store.engine import make_engine

    engine = make_engine(db_url(args), must_exist=True)
    doc = collect(engine, args.job, checkpoints_dir(args))
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True, default=str))
    else:
        print("\n".join(render(doc)))
    return 0
