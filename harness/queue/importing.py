"""`harness import FILE.csv`: per-seed results from another tool, stored as finished runs.

One CSV row per run: `model,dataset,seed`, optional `split_seed` (default 42, PAPER_SEED: the
split seed every harness grid uses unless told otherwise) and `protocol` (default paper), and
metric columns named as the database's result columns, in its units (accuracies as
fractions). Every row is checked first; a single bad row refuses the whole file (row numbers
count the header as row 1; a row repeated with identical values is kept once). Rows are
written in one transaction, with the file's sha256 as provenance; a run's job key depends only
on (protocol, model, dataset, seed, split_seed), so importing the same runs again adds nothing
and other values for an imported run are refused. docs/IMPORT.md has the format and errors.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from harness import __version__
from harness.errors import HarnessError
from harness.experiment.config import PROTOCOLS
from harness.experiment.grids import PAPER_SEED
from harness.store.schema import Job, Result

REQUIRED = ("model", "dataset", "seed")
OPTIONAL = ("split_seed", "protocol")
DEFAULT_SPLIT_SEED = PAPER_SEED  # what harness grids use (grids.Grid.split_seed)
_NOT_METRICS = ("id", "job_id", "slots", "device", "provenance", "extra", "created_at")
METRICS = tuple(c.name for c in Result.__table__.columns if c.name not in _NOT_METRICS)
INTEGER_METRICS = ("best_epoch", "epochs_run", "evaluated_epoch", "params")
# Stored as fractions in [0, 1]; gaps (train - test accuracy) may be negative.
FRACTIONS = ("top1", "top3", "top5", "precision_macro", "recall_macro", "f1_macro",
             "precision_weighted", "recall_weighted", "f1_weighted", "ece")  # fmt: skip
GAPS = ("gen_gap_best", "gen_gap_last")
NON_NEGATIVE = ("nll", "epoch_seconds", "train_seconds", "eval_seconds")
MAX_INTEGER = 2**31 - 1  # INTEGER on PostgreSQL
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fits Job.model / Job.dataset
MAX_ERRORS = 5
IGNORED = "ignored:"  # prefix of a column --ignore leaves out (":" is in no DB name)
_CHUNK = 500  # keys per IN (...) query, as harness.queue.jobs does


@dataclass(frozen=True)
class ImportedRun:
    """One checked CSV row: the run's identity and the metric values it gives."""

    row: int  # as a spreadsheet numbers it: the header is row 1
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

    def describe(self) -> str:
        split = "" if self.split_seed == DEFAULT_SPLIT_SEED else f", split_seed {self.split_seed}"
        protocol = "" if self.protocol == "paper" else f", {self.protocol}"
        return f"{self.model}, {self.dataset}, seed {self.seed}{split}{protocol}"


def _integer(text: str, what: str) -> int:
    """A whole number >= 0 that fits the database's INTEGER ("42.0", as pandas writes, is 42)."""
    try:
        number = float(text)
        value = int(number)
    except (ValueError, OverflowError):
        raise ValueError(f"{what} {text!r} is not a whole number") from None
    if number != value:
        raise ValueError(f"{what} {text!r} is not a whole number")
    if value < 0:
        raise ValueError(f"{what} {value} is negative; seeds and counts are >= 0")
    if value > MAX_INTEGER:
        raise ValueError(f"{what} {value} is too large for the database (at most {MAX_INTEGER})")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _metric(name: str, text: str) -> float | int:
    if name in INTEGER_METRICS:
        value = _integer(text, name)
        if value == 0 and name != "params":
            raise ValueError(f"{name} is 0; epochs are counted from 1")
        return value
    try:
        value = float(text)
    except ValueError:
        hint = ""
        if text.endswith("%") and _is_number(text[:-1]):
            hint = f"; give it as a fraction ({float(text[:-1]) / 100:g}, not {text})"
        raise ValueError(f"{name} {text!r} is not a number{hint}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} is {text}: give a finite number or leave the cell empty")
    if name in FRACTIONS and not 0 <= value <= 1:
        hint = "; it looks like percent: divide by 100" if 1 < value <= 100 else ""
        raise ValueError(f"{name} {value:g} is outside [0, 1] (fractions){hint}")
    if name in GAPS and not -1 <= value <= 1:
        raise ValueError(f"{name} {value:g} is outside [-1, 1] (a difference of fractions)")
    if name in NON_NEGATIVE and value < 0:
        raise ValueError(f"{name} {value:g} is negative; give seconds / a loss >= 0")
    return value


def _parse_row(number: int, row: dict[str, str], metrics: list[str]) -> ImportedRun:
    model, dataset = (row.get("model") or "").strip(), (row.get("dataset") or "").strip()
    for what, name in (("model", model), ("dataset", dataset)):
        if not name:
            raise ValueError(f"{what} is empty; give the {what}'s name")
        if not NAME.fullmatch(name):
            raise ValueError(
                f"{what} {name!r} is not a name: use letters, digits, _ . - (at most 64, "
                "starting with a letter or digit)"
            )
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


def _read_text(path: Path) -> tuple[str, str]:
    """The file's text and the sha256 of its bytes."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HarnessError(f"no file {path}; give the path of a CSV file") from None
    except IsADirectoryError:
        raise HarnessError(f"{path} is a directory; give the path of a CSV file") from None
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not a column name
    except UnicodeDecodeError as exc:
        raise HarnessError(
            f"{path} is not UTF-8 text (byte {exc.start}); export the CSV as UTF-8"
        ) from None
    return text, hashlib.sha256(raw).hexdigest()


def _with_close_match(name: str) -> str:
    match = difflib.get_close_matches(name, [*REQUIRED, *OPTIONAL, *METRICS], n=1)
    return f"{name} (did you mean {match[0]}?)" if match else name


def _check_header(path: Path, header: list[str]) -> list[str]:
    """The metric columns of a valid header; HarnessError naming what is wrong otherwise."""
    if not header:
        raise HarnessError(
            f"{path} is empty; its first row must name the columns ({', '.join(REQUIRED)} "
            "and metrics such as top1)"
        )
    valid = f"columns: {', '.join(REQUIRED)}, optional {', '.join(OPTIONAL)}, metrics " + (
        ", ".join(METRICS)
    )
    blank = [str(i) for i, name in enumerate(header, start=1) if not name]
    if blank:
        raise HarnessError(f"{path}: column {', '.join(blank)} of the header has no name; "
                           "delete the empty column or name it")  # fmt: skip
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise HarnessError(f"{path}: column(s) {', '.join(twice)} appear twice; keep one")
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in (*REQUIRED, *OPTIONAL, *METRICS)]
    if missing or unknown:
        what = [f"missing column(s) {', '.join(missing)}"] if missing else []
        what += [f"unknown column(s) {', '.join(map(_with_close_match, unknown))}"] if unknown else []
        hint = "; map a column with --rename OLD=NEW or leave it out with --ignore" if unknown else ""
        raise HarnessError(f"{path}: {'; '.join(what)}{hint}; {valid}")
    metrics = [c for c in header if c in METRICS]
    if not metrics:
        raise HarnessError(f"{path} has no metric column; add one of {', '.join(METRICS)}")
    return metrics


def _refuse(path: Path, errors: list[str]) -> HarnessError:
    """One line for one bad row; a count and the first MAX_ERRORS, one per line, for more."""
    if len(errors) == 1:
        return HarnessError(f"{path}: {errors[0]}; nothing imported")
    more = f", first {MAX_ERRORS} shown" if len(errors) > MAX_ERRORS else ""
    return HarnessError(f"{path}: {len(errors)} bad rows, nothing imported{more}:\n  "
                        + "\n  ".join(errors[:MAX_ERRORS]))  # fmt: skip


@dataclass(frozen=True)
class ColumnMap:
    """How another tool's header maps onto ours: renamed columns and columns left out."""

    rename: dict[str, str] = field(default_factory=dict)  # the file's name -> the DB's name
    ignore: tuple[str, ...] = ()

    def apply(self, path: Path, header: list[str]) -> list[str]:
        """The header as the database names it; ignored columns get a name no check reads."""
        absent = [c for c in (*self.rename, *self.ignore) if c not in header]
        if absent:
            raise HarnessError(f"{path}: --rename/--ignore name column(s) {', '.join(absent)} "
                               f"that the file lacks; its columns: {', '.join(header)}")  # fmt: skip
        both = sorted(set(self.rename) & set(self.ignore))
        if both:
            raise HarnessError(f"column(s) {', '.join(both)} both renamed and ignored; pick one")
        taken = sorted({new for old, new in self.rename.items()
                        if new in header and new not in self.rename and new not in self.ignore})  # fmt: skip
        if taken:
            raise HarnessError(f"{path}: --rename gives name(s) {', '.join(taken)} that another "
                               "column already has; ignore or rename that column too")  # fmt: skip
        return [IGNORED + c if c in self.ignore else self.rename.get(c, c) for c in header]


def parse_csv(path: Path, columns: ColumnMap | None = None) -> tuple[list[ImportedRun], str]:
    """Every row of the file, checked, and its sha256; HarnessError naming the mistakes.

    Rows are numbered as a spreadsheet shows them (header = row 1; the line a row ends on).
    A row repeated with identical values is kept once; repeated with other values, refused.
    """
    text, digest = _read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise HarnessError(f"{path}: row 1 is not CSV ({exc}); fix the header") from None
    if columns is not None and header:
        header = columns.apply(path, header)
    metrics = _check_header(path, [c for c in header if not c.startswith(IGNORED)])
    reader.fieldnames = header
    runs: list[ImportedRun] = []
    errors: list[str] = []
    first: dict[tuple[str, str, str, int, int], ImportedRun] = {}
    while True:
        starts = reader.line_num + 1  # blank lines before a row are skipped, not counted here
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(f"row {starts}: not CSV ({exc}); fix the quotes from here on")
            break  # the reader cannot resynchronise after a broken quote
        number = reader.line_num
        if None in row:
            errors.append(f"row {number}: more cells than the header's {len(header)} columns; "
                          "delete the extra cells or name their column")  # fmt: skip
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
            errors.append(f"row {number}: repeats row {earlier.row} ({run.describe()}) with "
                          "different values; keep one of the two rows")  # fmt: skip
    if errors:
        raise _refuse(path, errors)
    if not runs:
        raise HarnessError(f"{path} has a header but no rows; add one row per run")
    return runs, digest


def _differs(run: ImportedRun, result: Result | None) -> str | None:
    """Where the stored run's values differ from the row's (None when they agree)."""
    for name, value in run.metrics.items():
        stored = getattr(result, name) if result is not None else None
        if stored != value:
            return f"{name} {value!r} here, {stored!r} in the database"
    return None


def _clash(run: ImportedRun, imported: Job | None, other: Job | None) -> str | None:
    """Why the database refuses the run (None: new, or imported before with these values)."""
    if other is not None:
        return (f"is already in the database as a harness job (grid {other.grid}, "
                f"{other.status}); import into another --db or rename the model")  # fmt: skip
    if imported is not None and (why := _differs(run, imported.result)) is not None:
        return (f"is already imported with other values ({why}); fix the row or import into "
                "another --db")  # fmt: skip
    return None


def _existing(session: Session, runs: list[ImportedRun]) -> tuple[dict, dict]:
    """Imported jobs with these runs' keys, and other jobs of the same runs, by key / ident."""
    by_key: dict[str, Job] = {}
    keys = [run.key for run in runs]
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        by_key.update(
            (job.key, job) for job in session.scalars(select(Job).where(Job.key.in_(chunk)))
        )
    others: dict[tuple[str, str, str, int, int], Job] = {}
    pairs = sorted({(run.model, run.dataset) for run in runs})
    for model, dataset in pairs:
        stmt = select(Job).where(Job.model == model, Job.dataset == dataset)
        for job in session.scalars(stmt):
            if job.key not in by_key and not (job.config or {}).get("imported"):
                others.setdefault(
                    (job.protocol, job.model, job.dataset, job.seed, job.split_seed), job
                )
    return by_key, others


@dataclass(frozen=True)
class ImportSummary:
    """What `import_runs` did: runs in the file, how many were new, the file's sha256."""

    runs: list[ImportedRun]
    new: int
    digest: str

    @property
    def already(self) -> int:
        return len(self.runs) - self.new

    def shape(self) -> str:
        """'3 models x 1 dataset x 8 seeds' (distinct values in the file)."""
        counts = [
            (len({getattr(r, f) for r in self.runs}), f) for f in ("model", "dataset", "seed")
        ]
        return " x ".join(f"{n} {what}{'s' if n != 1 else ''}" for n, what in counts)


def import_runs(
    engine: Engine, path: str | Path, columns: ColumnMap | None = None
) -> ImportSummary:
    """Check every row, then write the new runs in one transaction (all or none)."""
    path = Path(path)
    columns = columns or ColumnMap()
    runs, digest = parse_csv(path, columns)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    try:
        with Session(engine) as session, session.begin():
            by_key, others = _existing(session, runs)
            errors: list[str] = []
            new: list[ImportedRun] = []
            for run in runs:
                clash = _clash(run, by_key.get(run.key), others.get(run.ident))
                if clash:
                    errors.append(f"row {run.row}: {run.describe()} {clash}")
                elif run.key not in by_key:
                    new.append(run)
            if errors:
                raise _refuse(path, errors)
            for run in new:
                session.add(_job(run, path, digest, now, columns))
    except IntegrityError:
        # Another `harness import` of the same runs committed between our check and our write.
        raise HarnessError(
            f"{path}: another process imported some of these runs meanwhile; nothing imported "
            "from this file: run the import again"
        ) from None
    return ImportSummary(runs, len(new), digest)


def _job(run: ImportedRun, path: Path, digest: str, now: datetime, columns: ColumnMap) -> Job:
    """The done Job and its Result for one imported run; the column map goes into provenance."""
    mapping = {"renamed": columns.rename, "ignored": list(columns.ignore)}
    job = Job(key=run.key, grid=f"import:{path.stem}"[:200], model=run.model,
              dataset=run.dataset, seed=run.seed, split_seed=run.split_seed,
              protocol=run.protocol, harness_version=__version__, status="done", attempts=0,
              max_attempts=0, config={"imported": True, "file": path.name, "sha256": digest},
              created_at=now, started_at=None, finished_at=now)  # fmt: skip
    job.result = Result(**run.metrics, slots=1, extra={}, provenance={
        "source": "import", "file": path.name, "sha256": digest, "row": run.row,
        "imported_at": now.isoformat(timespec="seconds") + "Z", "columns": mapping})  # fmt: skip
    return job
