"""Every bad input of docs/ERRORS.md through the real `harness` process, one row per case.

Each row asserts what a user sees: the exit code (1 a refused input, 2 usage), exactly one line
on stderr naming the problem (no traceback), and nothing changed on disk: the results database
(a real SQLite file holding a queued demo grid and some finished runs) and every other file
under the test's directory are byte-for-byte what they were, and no directory was left behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dataset_files import write_cifar10, write_medmnist
from synthetic_db import SyntheticRun, fill_synthetic

from harness.experiment.grids import demo_grid
from harness.queue.jobs import enqueue
from harness.store.engine import make_engine

DB = "runs.db"


@dataclass
class Case:
    name: str
    argv: list[str]  # {db} -> the database URL, {tmp} -> the case's directory
    message: str  # must appear in the one stderr line
    setup: Callable[[Path], None] = field(default=lambda tmp: None)
    code: int = 1
    report: bool = False  # prints its per-file table on stdout before the one error line


def _write(relative: str, content: bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    return setup


def _cifar10_with_a_foreign_batch(tmp: Path) -> None:
    # The real on-disk layout with one batch that is not the official file.
    write_cifar10(tmp / "data", per_batch=2, n_test=2)


def _medmnist_foreign_npz(tmp: Path) -> None:
    write_medmnist(tmp / "data" / "medmnist" / "bloodmnist.npz", gray=False)


GRID = b"name: x\nmodels: [resnet18]\ndatasets: [digits]\nseeds: [1]\n"
CASES = [
    Case("F1 batch_size=0", ["enqueue", "--grid", "demo", "--db", "{db}", "--set", "batch_size=0"],
         "setting batch_size=0 refused: batch_size must be an integer >= 1"),
    Case("F1 max_epochs=-1", ["enqueue", "--grid", "demo", "--db", "{db}", "--set", "max_epochs=-1"],
         "max_epochs must be an integer >= 1"),
    Case("F1 lr=nan", ["enqueue", "--grid", "demo", "--db", "{db}", "--set", "lr=nan"],
         "setting lr=nan refused: lr must be a finite number >= 0"),
    Case("F1 precision=fp13", ["enqueue", "--grid", "demo", "--db", "{db}", "--set",
                               "precision=fp13"], "precision must be one of fp32, bf16"),
    Case("F1 data.foo", ["enqueue", "--grid", "demo", "--db", "{db}", "--set", "data.foo=1"],
         "override data.foo does not apply to digits; valid: none"),
    Case("F1 unknown key", ["enqueue", "--grid", "demo", "--db", "{db}", "--set", "lrr=0.1"],
         "unknown override 'lrr'; valid keys:"),
    Case("F1 grid file value", ["enqueue", "--grid", "{tmp}/g.yaml", "--db", "{db}"],
         "setting weight_decay=-1.0 refused", _write("g.yaml", GRID + b"overrides: {weight_decay: -1}\n")),
    Case("F1 --max-attempts 0", ["enqueue", "--grid", "demo", "--db", "{db}", "--max-attempts", "0"],
         "--max-attempts must be at least 1"),
    Case("F2 negative seed", ["enqueue", "--grid", "demo", "--db", "{db}", "--seed-list=-1,2"],
         "seed -1 refused: seeds must be integers from 0 to 4294967295"),
    Case("F2 negative seed in a grid file", ["enqueue", "--grid", "{tmp}/g.yaml", "--db", "{db}"],
         "seed -3 refused", _write("g.yaml", GRID.replace(b"[1]", b"[-3, 1]"))),
    Case("F3 grid not UTF-8", ["enqueue", "--grid", "{tmp}/g.yaml", "--db", "{db}"],
         "not UTF-8 text (byte", _write("g.yaml", GRID + b"# caf\xe9\n")),
    Case("F4 DB file not SQLite", ["enqueue", "--grid", "demo", "--db", "sqlite:///{tmp}/notes.db"],
         "notes.db is not an SQLite database", _write("notes.db", b"my notes\n" * 20)),
    Case("F4 status on a non-SQLite file", ["status", "--db", "sqlite:///{tmp}/notes.db"],
         "is not an SQLite database", _write("notes.db", b"\x00\x01binary" * 20)),
    Case("F5 non-numeric port", ["enqueue", "--grid", "demo", "--db",
                                 "postgresql+psycopg://u:secret@localhost:54x2/runs"],
         "the port must be a number"),
    Case("F6 --out is a file", ["report", "--db", "{db}", "--out", "{tmp}/afile"],
         "--out {tmp}/afile is a file, not a directory", _write("afile", b"x")),
    Case("F6 --out cannot be created", ["report", "--db", "{db}", "--out", "{tmp}/afile/sub"],
         "cannot create --out {tmp}/afile/sub", _write("afile", b"x")),
    Case("F6 bad --claims leaves no --out", ["report", "--db", "{db}", "--out", "{tmp}/new/out",
                                             "--claims", "{tmp}/c.yaml"],
         "c.yaml", _write("c.yaml", b"claims: 3\n")),
    Case("F7 in-memory SQLite", ["enqueue", "--grid", "demo", "--db", "sqlite://"],
         "sqlite:// is an in-memory database"),
    Case("F7 status on a mistyped path", ["status", "--db", "sqlite:///{tmp}/rusn.db"],
         "no database at {tmp}/rusn.db"),
    Case("F7 retry on a mistyped path", ["retry", "--failed", "--db", "sqlite:///{tmp}/rusn.db"],
         "no database at {tmp}/rusn.db"),
    Case("F9 --device mps", ["worker", "--db", "{db}", "--device", "mps", "--until-empty"],
         "--device 'mps' is not supported"),
    Case("F9 a GPU that is not there", ["worker", "--db", "{db}", "--gpu", "7", "--until-empty"],
         "cuda:7"),
    Case("F10 CIFAR-10 batch not the official one", ["data", "verify", "cifar10", "--data",
                                                     "{tmp}/data"],
         "data_batch_1 differs from the official file (md5", _cifar10_with_a_foreign_batch,
         report=True),
    Case("F10 MedMNIST npz not the official one", ["data", "verify", "bloodmnist", "--data",
                                                   "{tmp}/data"],
         "bloodmnist.npz differs from the official file (md5", _medmnist_foreign_npz,
         report=True),
    Case("unknown model", ["enqueue", "--grid", "demo", "--db", "{db}", "--models", "resnet19"],
         "unknown model 'resnet19'; valid: resnet18"),
    Case("sweep repeats a value", ["enqueue", "--grid", "demo", "--db", "{db}", "--sweep",
                                   "lr=0.1,0.1"], "--sweep: sweep 'lr' repeats a value"),
    Case("sweep not KEY=V1,V2", ["enqueue", "--grid", "demo", "--db", "{db}", "--sweep", "lr"],
         "--sweep 'lr' is not KEY=V1,V2; e.g. --sweep lr=0.1,0.01"),
    Case("a key both set and swept", ["enqueue", "--grid", "demo", "--db", "{db}", "--set",
                                      "lr=0.1", "--sweep", "lr=0.1,0.2"],
         "lr is given to both --set and --sweep; keep one"),
    Case("grid file sweep not a list", ["enqueue", "--grid", "{tmp}/g.yaml", "--db", "{db}"],
         "sweep 'lr' must be a non-empty list of values, got 0.1",
         _write("g.yaml", GRID + b"sweep: {lr: 0.1}\n")),
    Case("grid file sweep value refused", ["enqueue", "--grid", "{tmp}/g.yaml", "--db", "{db}"],
         "(sweep setting lr=-1) setting lr=-1.0 refused",
         _write("g.yaml", GRID + b"sweep: {lr: [0.1, -1]}\n")),
    Case("audit without horizon or budget", ["audit", "--db", "{db}", "--grid", "demo"],
         "give --max-seeds N, --budget GPU_HOURS or both"),
    Case("audit horizon too large", ["audit", "--db", "{db}", "--grid", "demo", "--max-seeds",
                                     "99"], "the most seeds per part must be 1..50 (got 99)"),
    Case("audit budget not positive", ["audit", "--db", "{db}", "--grid", "demo", "--budget",
                                       "0"], "--budget must be a positive number of device hours"),
    Case("audit of a sweep", ["audit", "--db", "{db}", "--grid", "{tmp}/g.yaml", "--max-seeds",
                              "5"], "an audit decides one setting; drop the grid's sweep",
         _write("g.yaml", GRID + b"sweep: {lr: [0.1, 0.01]}\n")),
    Case("audit resume unknown", ["audit", "--db", "{db}", "--resume", "nope"],
         "no audit named 'nope' in this database; audits: none"),
    Case("audit claims file missing", ["audit", "--db", "{db}", "--grid", "demo", "--max-seeds",
                                       "5", "--claims", "{tmp}/c.yaml"],
         "claims file {tmp}/c.yaml not found"),
    Case("demo --budget without --sequential", ["demo", "--db", "{db}", "--budget", "1"],
         "--budget and --max-seeds only apply with --sequential; add --sequential"),
    Case("status --json --watch", ["status", "--db", "{db}", "--json", "--watch"],
         "--json prints one document; drop --watch"),
    Case("usage: unknown option", ["enqueue", "--grid", "demo", "--db", "{db}", "--sed", "3"],
         "unrecognized arguments: --sed 3", code=2),
]  # fmt: skip


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    """A results database with the demo grid queued and two finished runs."""
    path = tmp_path_factory.mktemp("template") / DB
    engine = make_engine(f"sqlite:///{path}")
    enqueue(engine, demo_grid().jobs(), "demo")
    fill_synthetic(engine, [SyntheticRun("resnet18", "svhn", 1), SyntheticRun("resnet18", "svhn", 2)])
    engine.dispose()
    return path


def _tree(root: Path) -> dict[str, str]:
    """Every path under `root` with a digest of its bytes ('dir' for directories)."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.name.endswith(("-wal", "-shm")):
            continue  # SQLite's side files come and go with connections
        key = str(path.relative_to(root))
        state[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_refused_with_one_line_and_changes_nothing(case, template_db, tmp_path):
    shutil.copy(template_db, tmp_path / DB)
    case.setup(tmp_path)
    before = _tree(tmp_path)

    def fill(text: str) -> str:
        return text.replace("{db}", f"sqlite:///{tmp_path / DB}").replace("{tmp}", str(tmp_path))

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HARNESS_DB": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", *map(fill, case.argv)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    err = proc.stderr
    assert proc.returncode == case.code, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    if case.code == 1:
        assert len(lines) == 1 and lines[0].startswith("harness: error: "), err
    else:  # argparse: its usage text, then the one error line
        assert lines[-1].startswith("harness: error: "), err
    assert fill(case.message) in lines[-1], err
    assert (proc.stdout != "") == case.report, proc.stdout
    assert _tree(tmp_path) == before  # nothing written, nothing created, nothing removed


def test_every_listed_case_is_in_the_docs():
    # docs/ERRORS.md is the table users read; each case above is one of its rows.
    doc = (Path(__file__).parents[2] / "docs" / "ERRORS.md").read_text()
    missing = [case.name for case in CASES if f"| {case.name} |" not in doc]
    assert not missing, f"add rows to docs/ERRORS.md: {missing}"
