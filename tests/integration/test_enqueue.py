"""`harness enqueue`: grids, seeds, filters, overrides, idempotence and grid-file errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.cli import main
from harness.store.engine import make_engine
from harness.store.schema import Job


def _enqueue(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["enqueue", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _jobs(url: str) -> list[Job]:
    with Session(make_engine(url)) as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def test_paper_grid_twice_adds_nothing(capsys, sqlite_url):
    code, out, _ = _enqueue(capsys, "--grid", "paper", "--db", sqlite_url)
    assert code == 0 and "38 new, 0 already queued/done" in out
    code, out, _ = _enqueue(capsys, "--grid", "paper", "--db", sqlite_url)
    assert code == 0 and "0 new, 38 already queued/done" in out
    jobs = _jobs(sqlite_url)
    assert (
        len(jobs) == 38 and {j.seed for j in jobs} == {42} and {j.grid for j in jobs} == {"paper"}
    )


def test_seeds_count_starts_at_42_and_seed_list(capsys, sqlite_url, monkeypatch):
    monkeypatch.setenv("HARNESS_DB", sqlite_url)  # the URL also comes from the environment
    _enqueue(
        capsys,
        "--grid",
        "paper",
        "--seeds",
        "3",
        "--models",
        "resnet18",
        "--datasets",
        "svhn",
        "cifar10",
    )
    assert sorted((j.dataset, j.seed) for j in _jobs(sqlite_url)) == [
        ("cifar10", 42),
        ("cifar10", 43),
        ("cifar10", 44),
        ("svhn", 42),
        ("svhn", 43),
        ("svhn", 44),
    ]
    code, out, _ = _enqueue(
        capsys,
        "--grid",
        "paper",
        "--seed-list",
        "7,42",
        "--models",
        "resnet18",
        "--datasets",
        "svhn",
    )
    assert "1 new, 1 already queued/done" in out


def test_protocol_overrides_and_split_seed_make_new_jobs(capsys, sqlite_url):
    base = [
        "--grid",
        "paper",
        "--models",
        "gradattn_nope",
        "--datasets",
        "cifar10",
        "--db",
        sqlite_url,
    ]
    _enqueue(capsys, *base)
    _, out, _ = _enqueue(capsys, *base, "--protocol", "reference-code")
    assert "1 new" in out
    _, out, _ = _enqueue(capsys, *base, "--set", "lr=3e-4", "--set", "max_epochs=2")
    assert "1 new" in out
    _, out, _ = _enqueue(capsys, *base, "--split-seed", "7")
    assert "1 new" in out
    jobs = _jobs(sqlite_url)
    assert len(jobs) == 4
    reference = next(j for j in jobs if j.protocol == "reference-code")
    assert reference.config["model"]["d_model"] == 32  # the small No-PE encoder quirk
    tuned = next(j for j in jobs if j.config["lr"] == 3e-4)
    assert tuned.config["max_epochs"] == 2
    assert {j.split_seed for j in jobs} == {42, 7}


def test_dry_run_queues_nothing(capsys, sqlite_url):
    code, out, _ = _enqueue(capsys, "--grid", "demo", "--dry-run", "--db", sqlite_url)
    assert code == 0 and "16 jobs" in out and "nothing queued" in out
    assert _jobs(sqlite_url) == []


def test_grid_file(capsys, sqlite_url, tmp_path):
    grid = tmp_path / "small.yaml"
    grid.write_text(
        textwrap.dedent("""\
        name: small
        models: [resnet18, gradattn_rope]
        datasets: [digits]
        seeds: [1, 2]
        protocol: reference-code
        overrides: {max_epochs: 2, max_train_batches: 1}
        split_seed: 5
    """)
    )
    code, out, _ = _enqueue(capsys, "--grid", str(grid), "--db", sqlite_url)
    assert code == 0 and "4 new" in out
    jobs = _jobs(sqlite_url)
    assert {j.grid for j in jobs} == {"small"} and {j.seed for j in jobs} == {1, 2}
    assert {j.split_seed for j in jobs} == {5} and {j.protocol for j in jobs} == {"reference-code"}
    assert {j.config["max_train_batches"] for j in jobs} == {1}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("models: [resnet18\ndatasets: [digits]\n", "invalid YAML at line"),
        ("models: [resnet19]\ndatasets: [digits]\n", "unknown model 'resnet19'; valid: "),
        ("models: [resnet18]\ndatasets: [mnist]\n", "unknown dataset 'mnist'; valid: "),
        ("models: [resnet18]\ndatasets: [digits]\nepochs: 3\n", "unknown key(s) epochs"),
        ("models: resnet18\n", "missing 'datasets'"),
        ("models: [resnet18]\ndatasets: [digits]\nseeds: [1, x]\n", "'seeds' must be"),
        ("models: [resnet18]\ndatasets: [digits]\noverrides: [lr]\n", "'overrides' must be"),
        ("models: [resnet18]\ndatasets: [digits]\noverrides: {lr: fast}\n", "wrong type"),
        ("models: [resnet18]\ndatasets: [digits]\noverrides: {speed: 2}\n", "unknown override"),
        ("models: [resnet18]\ndatasets: [digits]\nprotocol: keras\n", "unknown protocol"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_malformed_grid_file_is_one_clear_error(capsys, sqlite_url, tmp_path, content, message):
    grid = tmp_path / "bad.yaml"
    grid.write_text(content)
    code, out, err = _enqueue(capsys, "--grid", str(grid), "--db", sqlite_url)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"harness: error: grid file {grid}: ")
    assert message in err
    assert _jobs(sqlite_url) == []


def test_malformed_grid_file_from_a_real_process(sqlite_url, tmp_path):
    grid = tmp_path / "bad.yaml"
    grid.write_text("name: x\nmodels: [resnet18]\ndatasets: [digits]\nseeds:\n  - 1\n - 2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "enqueue", "--grid", str(grid), "--db", sqlite_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid YAML at line 6" in lines[0], proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grid", "nope"], "unknown grid 'nope'"),
        (["--grid", "paper", "--models", "vgg"], "--models: unknown model 'vgg'"),
        (["--grid", "paper", "--datasets", "digits"], "leave no cell"),
        (["--grid", "paper", "--seeds", "0"], "--seeds must be at least 1"),
        (["--grid", "paper", "--seed-list", "1,a"], "not a comma-separated list"),
        (["--grid", "paper", "--set", "lr"], "is not KEY=VALUE"),
        (["--grid", "paper", "--protocol", "x"], "unknown protocol 'x'"),
    ],
)
def test_bad_arguments(capsys, sqlite_url, argv, message):
    code, _, err = _enqueue(capsys, *argv, "--db", sqlite_url)
    assert code == 1 and message in err and err.count("\n") == 1


def test_job_count_matches_database(capsys, sqlite_url):
    _enqueue(capsys, "--grid", "demo", "--db", sqlite_url)
    with Session(make_engine(sqlite_url)) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 16


def test_vary_split_makes_the_split_seed_follow_the_run_seed(capsys, sqlite_url):
    base = ["--grid", "paper", "--models", "resnet18", "--datasets", "svhn", "--db", sqlite_url]
    code, out, _ = _enqueue(capsys, *base, "--seeds", "3", "--vary-split")
    assert code == 0 and "3 new" in out and "split seed = run seed" in out
    jobs = _jobs(sqlite_url)
    assert [(j.seed, j.split_seed) for j in jobs] == [(42, 42), (43, 43), (44, 44)]
    code, out, _ = _enqueue(capsys, *base, "--seeds", "3")  # fixed split: 42 is already there
    assert "2 new, 1 already" in out
    with pytest.raises(SystemExit) as exited:  # argparse's mutually exclusive group
        _enqueue(capsys, *base, "--vary-split", "--split-seed", "7")
    assert exited.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_vary_split_in_a_grid_file(capsys, sqlite_url, tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "name: v\nmodels: [resnet18]\ndatasets: [svhn]\nseeds: [1, 2]\nvary_split: true\n"
    )
    _enqueue(capsys, "--grid", str(grid), "--db", sqlite_url)
    assert [(j.seed, j.split_seed) for j in _jobs(sqlite_url)] == [(1, 1), (2, 2)]
    grid.write_text(
        "name: v\nmodels: [resnet18]\ndatasets: [svhn]\nseeds: [1]\nvary_split: yes please\n"
    )
    code, _, err = _enqueue(capsys, "--grid", str(grid), "--db", sqlite_url)
    assert code == 1 and "'vary_split' must be true or false" in err
