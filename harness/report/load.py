"""Load the results database into pandas DataFrames: the report's only input.

Every accuracy, F1, ECE and gap stays a FRACTION here, as stored; the renderers convert to the
paper's units. Derived columns (f1, gen_gap, GHS under Table 7's three threshold ranges, the
gradient-norm summary) are computed from the stored rows, so the report never trains anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from harness.errors import error_line
from harness.experiment.departures import as_json, departures
from harness.store.schema import EpochRow, GradientLayer, Job, Result
from harness.training.health import vanishing_count

# Result columns copied under their database names (fractions, seconds, counts as stored).
RESULT_COLUMNS = (
    "top1", "top3", "top5",
    "precision_macro", "recall_macro", "f1_macro",
    "precision_weighted", "recall_weighted", "f1_weighted",
    "ece", "nll", "gen_gap_best", "gen_gap_last",
    "best_epoch", "epochs_run", "evaluated_epoch",
    "epoch_seconds", "train_seconds", "eval_seconds", "params", "slots",
)  # fmt: skip
JOB_COLUMNS = (
    "job_id", "key", "grid", "model", "dataset", "seed", "split_seed", "protocol",
    "device", "harness_version", "quirks",
    # From the job's config: the hyper-parameter source ("paper" for rows older than the
    # field) and the values the tuned-vs-paper section shows (dropout None: model default).
    "hparams", "lr", "weight_decay", "dropout",
    "config",  # the full TrainConfig as stored: harness.report.arms reads the setting from it
    # [{key, protocol, run}]: how the config differs from its protocol; None: not recorded
    # (an imported run). harness.experiment.departures.
    "departures",
)  # fmt: skip
# Table 7's three threshold ranges: column name -> (low, high).
GHS_RANGES: dict[str, tuple[float, float]] = {
    "ghs_1e-7_1e2": (1e-7, 1e2),
    "ghs_1e-6_1e1": (1e-6, 1e1),
    "ghs_1e-5_1e0": (1e-5, 1e0),
}
PARAM_GHS_COLUMN = "param_ghs_1e-6_1e1"
VANISHING_THRESHOLD = 1e-6  # the paper's vanishing bound (Section 4.6)
GRADIENT_COLUMNS = (
    *GHS_RANGES, PARAM_GHS_COLUMN, "n_vanishing", "n_silent",
    "grad_norm_avg", "grad_norm_std", "grad_norm_min", "grad_norm_max",
)  # fmt: skip
# GHS [1e-6, 1e1] with and without counting silent layers, whatever the run's quirks: the
# report-time quirk ghs_count_silent's effect, measured on the same stored gradient rows.
PRIMARY_GHS = "ghs_1e-6_1e1"
SILENT_COLUMNS = ("ghs_silent_counted", "ghs_silent_ignored")
DERIVED_COLUMNS = ("f1", "gen_gap", *GRADIENT_COLUMNS, *SILENT_COLUMNS)
RESULTS_COLUMNS = (*JOB_COLUMNS, *RESULT_COLUMNS, *DERIVED_COLUMNS, "provenance", "extra")

EPOCH_COLUMNS = (
    "job_id", "key", "grid", "model", "dataset", "seed", "split_seed", "protocol", "status",
    "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
    "train_seconds", "eval_seconds", "slots",
)  # fmt: skip
GRADIENT_ROW_COLUMNS = (
    "job_id", "key", "model", "dataset", "seed", "split_seed", "protocol",
    "mode", "layer_index", "layer", "kind", "batches", "mean", "std", "min", "max",
)  # fmt: skip
JOBS_COLUMNS = (
    "job_id", "key", "grid", "model", "dataset", "seed", "split_seed", "protocol", "hparams",
    "quirks", "config", "departures", "status",
    "attempts", "max_attempts", "worker_id", "device", "harness_version", "epoch",
    "created_at", "started_at", "finished_at", "error", "error_line", "has_result",
)  # fmt: skip


def _health_score(
    layer_means: Sequence[float | None], low: float, high: float, count_silent: bool = False
) -> float:
    """GHS by harness.training.gradients' single definition; NaN where no layer was measured."""
    from harness.training.health import health_score

    try:
        return float(health_score(layer_means, low, high, count_silent=count_silent))
    except ValueError:  # every layer silent: there is no score to report
        return float("nan")


def gradient_summary(
    output_means: Sequence[float | None] | None,
    param_means: Sequence[float | None] | None = None,
    count_silent: bool = False,
) -> dict[str, float]:
    """Table 7's derived values from one job's per-layer mean gradient norms (depth order).

    `None` marks a silent layer (its hook never fired). Returns NaN where there is no row.
    """
    out: dict[str, float] = {name: float("nan") for name in (*GRADIENT_COLUMNS, *SILENT_COLUMNS)}
    if output_means:
        low, high = GHS_RANGES[PRIMARY_GHS]
        out["ghs_silent_counted"] = _health_score(output_means, low, high, True)
        out["ghs_silent_ignored"] = _health_score(output_means, low, high, False)
        for name, (low, high) in GHS_RANGES.items():
            out[name] = _health_score(output_means, low, high, count_silent)
        fired = np.array([m for m in output_means if m is not None], dtype=float)
        out["n_silent"] = float(len(output_means) - len(fired))
        out["n_vanishing"] = float(vanishing_count(output_means, VANISHING_THRESHOLD))
        if fired.size:
            # Population SD over layers, as numpy's default (the paper's "Std" column).
            out["grad_norm_avg"] = float(fired.mean())
            out["grad_norm_std"] = float(fired.std())
            out["grad_norm_min"] = float(fired.min())
            out["grad_norm_max"] = float(fired.max())
    if param_means:
        low, high = GHS_RANGES[PARAM_GHS_COLUMN.removeprefix("param_")]
        # Parameter gradients never go silent the way module hooks do; count as stored.
        out[PARAM_GHS_COLUMN] = _health_score(param_means, low, high, count_silent)
    return out


def results_from_rows(
    rows: Iterable[Mapping[str, Any]],
    gradients: Mapping[int, Mapping[str, Sequence[float | None]]] | None = None,
) -> pd.DataFrame:
    """The results frame from plain rows (job fields + Result columns) and gradient means.

    `gradients` maps job_id -> {"output": [layer means...], "param": [...]}. Used by
    `load_results`; handy for building frames in tests without a database.
    """
    gradients = gradients or {}
    records: list[dict[str, Any]] = []
    for row in rows:
        rec = {name: row.get(name) for name in (*JOB_COLUMNS, *RESULT_COLUMNS)}
        rec["quirks"] = dict(row.get("quirks") or {})
        rec["config"] = dict(row.get("config") or {})
        rec["departures"] = row.get("departures")
        rec["hparams"] = rec["hparams"] or "paper"
        rec["provenance"] = dict(row.get("provenance") or {})
        rec["extra"] = dict(row.get("extra") or {})
        rec["f1"] = rec["f1_macro"]  # Table 4's F1 is the macro F1 (Section 4.3.1)
        at_best = rec["evaluated_epoch"] is not None and rec["evaluated_epoch"] == rec["best_epoch"]
        if rec["evaluated_epoch"] is None and rec["gen_gap_best"] is not None:
            at_best = True  # an imported run that gives only the best epoch's gap
        rec["gen_gap"] = rec["gen_gap_best"] if at_best else rec["gen_gap_last"]
        modes = gradients.get(int(rec["job_id"]), {}) if rec["job_id"] is not None else {}
        rec.update(
            gradient_summary(
                modes.get("output"),
                modes.get("param"),
                count_silent=bool(rec["quirks"].get("ghs_count_silent", False)),
            )
        )
        records.append(rec)
    frame = pd.DataFrame.from_records(records, columns=list(RESULTS_COLUMNS))
    for name in (*RESULT_COLUMNS, *DERIVED_COLUMNS):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    for name in ("job_id", "seed", "split_seed"):
        frame[name] = frame[name].astype("int64")
    for name in ("lr", "weight_decay", "dropout"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    return frame.sort_values(["protocol", "dataset", "model", "seed", "split_seed"]).reset_index(
        drop=True
    )


def _job_fields(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "key": job.key,
        "grid": job.grid,
        "model": job.model,
        "dataset": job.dataset,
        "seed": job.seed,
        "split_seed": job.split_seed,
        "protocol": job.protocol,
        "harness_version": job.harness_version,
        "quirks": dict((job.config or {}).get("quirks") or {}),
        "hparams": (job.config or {}).get("hparams") or "paper",
        "lr": (job.config or {}).get("lr"),
        "weight_decay": (job.config or {}).get("weight_decay"),
        "dropout": ((job.config or {}).get("model") or {}).get("dropout"),
        "config": dict(job.config or {}),
        "departures": job_departures(job),
    }


def job_departures(job: Job) -> list[dict[str, Any]] | None:
    """What the job recorded at enqueue; for jobs queued before revision 0005, computed from
    their stored config now; None for imported runs (their configuration is not known)."""
    if job.departures is not None:
        return list(job.departures)
    config = job.config or {}
    if config.get("imported") or "max_epochs" not in config:
        return None
    # A key is a content hash of the config, so its departures never change: computed once.
    if job.key not in _COMPUTED_DEPARTURES:
        _COMPUTED_DEPARTURES[job.key] = as_json(
            departures(job.protocol, job.dataset, job.model, config))
    return list(_COMPUTED_DEPARTURES[job.key])


_COMPUTED_DEPARTURES: dict[str, list[dict[str, Any]]] = {}


def load_results(engine: Engine, protocol: str | None = None) -> pd.DataFrame:
    """One row per done job that has a result row (columns: RESULTS_COLUMNS; fractions)."""
    stmt = select(Job, Result).join(Result, Result.job_id == Job.id).where(Job.status == "done")
    if protocol is not None:
        stmt = stmt.where(Job.protocol == protocol)
    rows: list[dict[str, Any]] = []
    with Session(engine) as session:
        for job, result in session.execute(stmt):
            row = _job_fields(job)
            row.update({name: getattr(result, name) for name in RESULT_COLUMNS})
            row["device"] = result.device or job.device
            row["provenance"] = result.provenance
            row["extra"] = result.extra
            rows.append(row)
        job_ids = [row["job_id"] for row in rows]
        gradients: dict[int, dict[str, list[float | None]]] = {}
        if job_ids:
            # Plain column rows, not ORM objects: a 4,000-run report reads ~100,000 of them.
            layer_stmt = (
                select(GradientLayer.job_id, GradientLayer.mode, GradientLayer.batches,
                       GradientLayer.mean)  # fmt: skip
                .where(GradientLayer.job_id.in_(job_ids))
                .order_by(GradientLayer.job_id, GradientLayer.mode, GradientLayer.layer_index)
            )
            for job_id, mode, batches, mean in session.execute(layer_stmt):
                silent = batches == 0 or mean is None
                modes = gradients.setdefault(job_id, {})
                modes.setdefault(mode, []).append(None if silent else mean)
    return results_from_rows(rows, gradients)


def _filter_jobs(stmt: Any, protocol: str | None, done_only: bool) -> Any:
    """Keep the rows of one protocol's jobs (when given), and of finished jobs only (when asked)."""
    if protocol is not None:
        stmt = stmt.where(Job.protocol == protocol)
    if done_only:
        stmt = stmt.where(Job.status == "done")
    return stmt


def _with_job_fields(
    session: Session,
    stmt: Any,
    jobs_stmt: Any,
    columns: Sequence[str],
    job_columns: Sequence[str],
) -> pd.DataFrame:
    """Rows of `stmt` (plain columns, job_id first) joined with their job's `job_columns`, read
    once per job rather than once per row (a job has dozens of epoch and layer rows);
    `jobs_stmt` selects the same jobs (a superset does no harm)."""
    frame = pd.DataFrame(session.execute(stmt).all(), columns=list(columns))
    ids = [int(i) for i in frame["job_id"].unique()]
    wanted = set(ids)
    fields = {job.id: {**_job_fields(job), "status": job.status}
              for job in session.scalars(jobs_stmt) if job.id in wanted}  # fmt: skip
    names = ["job_id", *job_columns]
    jobs = pd.DataFrame.from_records(
        [{name: fields[i][name] for name in names} for i in ids], columns=names
    )
    if jobs.empty:
        jobs = jobs.astype({"job_id": frame["job_id"].dtype})
    return frame.merge(jobs, on="job_id", how="left", validate="many_to_one")


def load_epochs(
    engine: Engine, protocol: str | None = None, done_only: bool = True
) -> pd.DataFrame:
    """Per-epoch rows (training curves) joined with their job's identity (EPOCH_COLUMNS)."""
    measured = EPOCH_COLUMNS[9:]
    stmt = select(EpochRow.job_id, *(getattr(EpochRow, name) for name in measured)).join(
        Job, EpochRow.job_id == Job.id
    )
    stmt = _filter_jobs(stmt, protocol, done_only).order_by(Job.id, EpochRow.epoch)
    jobs = _filter_jobs(select(Job), protocol, done_only)
    with Session(engine) as session:
        frame = _with_job_fields(session, stmt, jobs, ("job_id", *measured), EPOCH_COLUMNS[1:9])
    return frame[list(EPOCH_COLUMNS)]


def load_gradients(
    engine: Engine, protocol: str | None = None, done_only: bool = True
) -> pd.DataFrame:
    """Per-layer gradient rows (both measurement modes) with their job's identity."""
    measured = GRADIENT_ROW_COLUMNS[7:]
    stmt = select(GradientLayer.job_id, *(getattr(GradientLayer, name) for name in measured))
    stmt = stmt.join(Job, GradientLayer.job_id == Job.id)
    order = (Job.id, GradientLayer.mode, GradientLayer.layer_index)
    stmt = _filter_jobs(stmt, protocol, done_only).order_by(*order)
    jobs = _filter_jobs(select(Job), protocol, done_only)
    with Session(engine) as session:
        frame = _with_job_fields(
            session, stmt, jobs, ("job_id", *measured), GRADIENT_ROW_COLUMNS[1:7]
        )
    frame = frame[list(GRADIENT_ROW_COLUMNS)]
    for name in ("mean", "std", "min", "max"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    return frame


def load_jobs(engine: Engine) -> pd.DataFrame:
    """Every job in any state (provenance, missing and failed cells), with its first error line."""
    records = []
    with Session(engine) as session:
        done_ids = set(session.scalars(select(Result.job_id)))
        for job in session.scalars(select(Job).order_by(Job.id)):
            rec = _job_fields(job)
            for name in ("status", "attempts", "max_attempts", "worker_id", "device", "epoch",
                         "created_at", "started_at", "finished_at", "error"):  # fmt: skip
                rec[name] = getattr(job, name)
            rec["error_line"] = error_line(job.error)
            rec["has_result"] = job.id in done_ids
            records.append(rec)
    return pd.DataFrame.from_records(records, columns=list(JOBS_COLUMNS))
