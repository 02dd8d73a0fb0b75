"""Writing a job's results under its lease: epoch rows as they finish, then the outcome.

Both are fenced like every other lease operation (harness.queue.jobs): a worker that lost its job
to another writes nothing. This module imports no torch (nor harness.training.metrics, which does), so
a worker process pays for torch only when its runner needs it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.engine import Engine

from harness import faults
from harness.queue.events import record_events
from harness.queue.jobs import Lease, count_outcome, fenced_update, write_connection
from harness.store.clock import db_now
from harness.store.schema import EpochRow, GradientLayer, Result
from harness.training.metrics import METRIC_KEYS


def _epoch_row(job_id: int, record: Any, slots: int) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "epoch": record.epoch,
        "train_loss": record.train_loss,
        "train_acc": record.train_acc,
        "val_loss": record.val_loss,
        "val_acc": record.val_acc,
        "lr": record.lr,
        "train_seconds": record.train_seconds,
        "eval_seconds": record.eval_seconds,
        "slots": slots,
    }


def record_epoch(
    engine: Engine, lease: Lease, record: Any, lease_seconds: float, slots: int
) -> bool:
    """Upsert one epoch row and extend the lease, if the lease still holds."""
    with write_connection(engine) as conn, conn.begin():
        now = db_now(conn)
        if not fenced_update(
            conn,
            lease,
            epoch=record.epoch,
            lease_expires_at=db_now(conn, lease_seconds),
            heartbeat_at=now,
        ):
            return False
        # delete + insert is the dialect-neutral upsert (a resumed job may rewrite an epoch).
        conn.execute(
            delete(EpochRow).where(EpochRow.job_id == lease.job_id, EpochRow.epoch == record.epoch)
        )
        conn.execute(insert(EpochRow), [_epoch_row(lease.job_id, record, slots)])
        faults.point("record")  # the fault suite: killed before this transaction commits
    return True


def complete(engine: Engine, lease: Lease, outcome: Any, slots: int) -> bool:
    """Result row, all epoch rows, gradient rows and status done in ONE fenced transaction."""
    with write_connection(engine) as conn, conn.begin():
        now = db_now(conn)
        if not fenced_update(
            conn,
            lease,
            status="done",
            error=None,  # an earlier attempt's failure text no longer describes this job
            finished_at=now,
            heartbeat_at=now,
            lease_expires_at=None,
            epoch=outcome.epochs_run,
            device=outcome.device,
        ):
            return False  # fenced out: nothing was written
        job_id = lease.job_id
        result = {key: outcome.metrics.get(key) for key in METRIC_KEYS}
        result.update(
            job_id=job_id,
            gen_gap_best=outcome.gen_gap_best,
            gen_gap_last=outcome.gen_gap_last,
            best_epoch=outcome.best_epoch,
            epochs_run=outcome.epochs_run,
            evaluated_epoch=outcome.evaluated_epoch,
            epoch_seconds=outcome.epoch_seconds,
            train_seconds=outcome.train_seconds,
            eval_seconds=outcome.eval_seconds,
            params=outcome.params,
            slots=slots,
            device=outcome.device,
            provenance=outcome.provenance,
            extra=outcome.extra,
        )
        conn.execute(insert(Result), [result])
        conn.execute(delete(EpochRow).where(EpochRow.job_id == job_id))
        if outcome.epochs:
            conn.execute(insert(EpochRow), [_epoch_row(job_id, r, slots) for r in outcome.epochs])
        conn.execute(delete(GradientLayer).where(GradientLayer.job_id == job_id))
        if outcome.gradient_layers:
            conn.execute(
                insert(GradientLayer),
                [{**layer, "job_id": job_id} for layer in outcome.gradient_layers],
            )
        record_events(conn, [job_id], "done", f"{outcome.epochs_run} epochs run")
        count_outcome(conn, lease.worker_id, done=True)
        faults.point("complete")  # the fault suite: killed while writing results, pre-commit
    return True
