"""`harness import FILE.csv`: per-seed results from another tool, stored as finished runs.

One CSV row per run: `model,dataset,seed`, optional `split_seed` (default 42, the harness's own
split seed, so imported runs pair with each other by seed) and `protocol` (default paper), and
metric columns named as the database's result columns, in its units (accuracies as
fractions). Every row is checked first; a single bad row refuses the whole file (row numbers
count the header as row 1). Rows are written in one transaction, with the file's sha256 as
provenance; importing the same runs again adds nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from harness import __version__
from harness.config import PROTOCOLS
from harness.db import Job, Result
from harness.errors import HarnessError

REQUIRED = ("model", "dataset", "seed")
OPTIONAL = ("split_seed", "protocol")
DEFAULT_SPLIT_SEED = 42
_NOT_METRICS = ("id", "job_id", "slots", "device", "provenance", "extra", "created_at")
METRICS = tuple(c.name for c in Result.__table__.columns if c.name not in _NOT_METRICS)
INTEGER_METRICS = ("best_epoch", "epochs_run", "evaluated_epoch", "params")
# Stored as fractions in [0, 1]; gaps (train - test accuracy) may be negative.
FRACTIONS = ("top1", "top3", "top5", "precision_macro", "recall_macro", "f1_macro",
             "precision_weighted", "recall_weighted", "f1_weighted", "ece")  # fmt: skip
GAPS = ("gen_gap_best", "gen_gap_last")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
MAX_ERRORS = 5


@dataclass(frozen=True)
class ImportedRun:
    row: int
    model: str
    dataset: str
    seed: int
    split_seed: int
    protocol: str
    metrics: dict[str, float | int]

    @property
    def ident(self) -> tuple[str, str, str, int, int]:
        return (self.protocol, self.model, self.dataset, self.seed, self.split_seed)

    @property
    def key(self) -> str:
        """The same run always gets the same key, whichever file brings it."""
        blob = "import|" + "|".join(map(str, self.ident))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _integer(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"{what} {value} is negative; seeds and counts are >= 0")
    return value


def _metric(name: str, text: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} is {text}: give a finite number or leave the cell empty")
    if name in FRACTIONS and not 0 <= value <= 1:
        hint = "; it looks like percent: divide by 100" if 1 < value <= 100 else ""
        raise ValueError(f"{name} {value:g} is outside [0, 1] (fractions){hint}")
    if name in GAPS and not -1 <= value <= 1:
        raise ValueError(f"{name} {value:g} is outside [-1, 1] (a difference of fractions)")
    if name in INTEGER_METRICS:
        if value != int(value):
            raise ValueError(f"{name} {text!r} is not a whole number")
        return _integer(str(int(value)), name)
    return value


def _parse_row(number: int, row: dict[str, str], metrics: list[str]) -> ImportedRun:
    model, dataset = (row.get("model") or "").strip(), (row.get("dataset") or "").strip()
    for what, name in (("model", model), ("dataset", dataset)):
        if not NAME.fullmatch(name):
            raise ValueError(f"{what} {name!r} is empty or not a name (letters, digits, _ . + -)")
    seed_text = (row.get("seed") or "").strip()
    if not seed_text:
        raise ValueError("seed is missing")
    seed = _integer(seed_text, "seed")
    split_text = (row.get("split_seed") or "").strip()
    split = _integer(split_text, "split_seed") if split_text else DEFAULT_SPLIT_SEED
    protocol = (row.get("protocol") or "").strip() or "paper"
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    values = {m: _metric(m, row[m].strip()) for m in metrics if (row.get(m) or "").strip()}
    if not values:
        raise ValueError(f"no metric value; fill at least one of {', '.join(metrics)}")
    return ImportedRun(number, model, dataset, seed, split, protocol, values)


def parse_csv(path: Path) -> tuple[list[ImportedRun], str]:
    """Every row of the file, checked; HarnessError listing the first mistakes otherwise."""
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise HarnessError(f"no file {path}; give the path of a CSV file") from None
    except UnicodeDecodeError:
        raise HarnessError(f"{path} is not UTF-8 text; export the CSV as UTF-8") from None
    digest = hashlib.sha256(raw).hexdigest()
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise HarnessError(f"{path} is empty; the first row must name the columns "
                           f"({', '.join(REQUIRED)} and metrics such as top1)")  # fmt: skip
    reader.fieldnames = header
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in (*REQUIRED, *OPTIONAL, *METRICS)]
    if missing or unknown:
        what = [f"missing column(s) {', '.join(missing)}"] if missing else []
        what += [f"unknown column(s) {', '.join(unknown)}"] if unknown else []
        raise HarnessError(f"{path}: {'; '.join(what)}; columns: {', '.join(REQUIRED)}, "
                           f"optional {', '.join(OPTIONAL)}, metrics {', '.join(METRICS)}")
    metrics = [c for c in header if c in METRICS]
    if not metrics:
        raise HarnessError(f"{path} has no metric column; add one of {', '.join(METRICS)}")
    runs, errors, first = [], [], {}
    for number, row in enumerate(reader, start=2):
        if None in row:
            errors.append(f"row {number}: more cells than columns")
            continue
        try:
            run = _parse_row(number, row, metrics)
        except ValueError as exc:
            errors.append(f"row {number}: {exc}")
            continue
        earlier = first.get(run.ident)
        if earlier is None:
            first[run.ident] = run
            runs.append(run)
        elif earlier.metrics != run.metrics:
            errors.append(f"row {number}: repeats row {earlier.row} ({run.model}, {run.dataset}, "
                          f"seed {run.seed}) with different values; keep one")  # fmt: skip
    if errors:
        more = f" (+{len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS else ""
        raise HarnessError(f"{path}: {len(errors)} bad row(s), nothing imported{more}:\n"
                           + "\n".join(errors[:MAX_ERRORS]))  # fmt: skip
    if not runs:
        raise HarnessError(f"{path} has a header but no rows")
    return runs, digest


def import_runs(engine: Engine, path: str | Path) -> tuple[int, int, str]:
    """Write the file's runs (all or none): (new, already imported, sha256)."""
    path = Path(path)
    runs, digest = parse_csv(path)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with Session(engine) as session, session.begin():
        keys = [r.key for r in runs]
        existing = {job.key: job for job in session.scalars(select(Job).where(Job.key.in_(keys)))}
        new, same = [], 0
        for run in runs:
            job = existing.get(run.key)
            if job is None:
                new.append(run)
                continue
            stored = {m: getattr(job.result, m) for m in run.metrics} if job.result else {}
            if stored != run.metrics:
                raise HarnessError(f"{path}: row {run.row}: {run.model}, {run.dataset}, seed "
                                   f"{run.seed} is already imported with other values "
                                   f"({stored}); nothing imported")  # fmt: skip
            same += 1
        for run in new:
            job = Job(key=run.key, grid=f"import:{path.stem}"[:200], model=run.model,
                      dataset=run.dataset, seed=run.seed, split_seed=run.split_seed,
                      protocol=run.protocol, harness_version=__version__, status="done",
                      config={"imported": True, "file": path.name, "sha256": digest},
                      created_at=now, finished_at=now)  # fmt: skip
            job.result = Result(**run.metrics, slots=1, extra={}, provenance={
                "source": "import", "file": path.name, "sha256": digest, "row": run.row,
                "imported_at": now.isoformat(timespec="seconds") + "Z"})  # fmt: skip
            session.add(job)
    return len(new), same, digest
