"""`harness import FILE.csv`: foreign per-seed results in, all or nothing, then audited."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from harness.cli import main
from harness.report.load import load_results
from harness.store.engine import make_engine
from harness.store.schema import Job, Result

HEADER = "model,dataset,seed,top1,f1_macro\n"
ROWS = "".join(f"vit_small,cifar100,{s},{0.61 + 0.001 * s},0.6\n"
               f"resnet50,cifar100,{s},{0.59 + 0.001 * s},0.58\n" for s in range(6))  # fmt: skip


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _counts(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    with Session(engine) as session:
        jobs = session.scalar(select(func.count()).select_from(Job))
        results = session.scalar(select(func.count()).select_from(Result))
    engine.dispose()
    return jobs, results


def _import_and_check(capsys, url: str, tmp_path) -> None:
    path = tmp_path / "wandb-export.csv"
    path.write_text(HEADER + ROWS, encoding="utf-8")
    code, out, _ = _cli(capsys, "import", str(path), "--db", url)
    assert code == 0
    assert out.startswith("imported 12 runs (2 models x 1 dataset x 6 seeds; 12 new, 0 already")
    assert out.count("\n") == 1 and "wandb-export.csv (sha256 " in out
    code, out, _ = _cli(capsys, "import", str(path), "--db", url)
    assert code == 0 and "0 new, 12 already imported" in out
    assert _counts(url) == (12, 12)
    engine = make_engine(url)
    df = load_results(engine)
    assert len(df) == 12 and set(df["model"]) == {"vit_small", "resnet50"}
    assert set(df["grid"]) == {"import:wandb-export"} and (df["split_seed"] == 42).all()
    assert df["params"].isna().all() and df["top1"].notna().all()  # params NULL: migration 0003
    prov = df["provenance"].iloc[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["source"] == "import" and prov["sha256"] == digest and prov["file"] == path.name
    assert sorted(df["provenance"].map(lambda p: p["row"])) == list(range(2, 14))
    with Session(engine) as session:
        job = session.scalars(select(Job)).first()
        assert job.status == "done" and job.config["imported"] is True and len(job.key) == 32
    engine.dispose()


def test_import_is_idempotent_and_keeps_provenance(tmp_path, capsys, sqlite_url):
    _import_and_check(capsys, sqlite_url, tmp_path)


def test_import_on_postgresql(tmp_path, capsys, postgres_url):
    _import_and_check(capsys, postgres_url, tmp_path)


def test_report_runs_on_imported_runs_only(tmp_path, capsys, sqlite_url):
    path = tmp_path / "f1.csv"  # f1_macro only: top1, epochs and params are NULL
    path.write_text("model,dataset,seed,f1_macro,protocol\n"
                    + "".join(f"{m},cifar100,{s},0.{50 + s},paper\n"
                              for m in ("vit_small", "resnet50") for s in range(3)),
                    encoding="utf-8")  # fmt: skip
    assert _cli(capsys, "import", str(path), "--db", sqlite_url)[0] == 0
    out_dir = tmp_path / "reports"
    code, out, err = _cli(capsys, "report", "--db", sqlite_url, "--out", str(out_dir),
                          "--format", "md")  # fmt: skip
    assert code == 0, err
    assert "vit_small" in next(out_dir.glob("*/report.md")).read_text(encoding="utf-8")


def test_identical_duplicate_rows_are_imported_once(tmp_path, capsys, sqlite_url):
    path = tmp_path / "dup.csv"
    path.write_text(HEADER + "a,b,0,0.6,0.5\n\na,b,0,0.6,0.5\na,b,1,0.6,0.5\n", encoding="utf-8")
    code, out, _ = _cli(capsys, "import", str(path), "--db", sqlite_url)
    assert code == 0 and "imported 2 runs (1 model x 1 dataset x 2 seeds; 2 new" in out


def _percent_cell() -> str:
    return HEADER + "vit_small,cifar100,0,61%,0.6\n"


BAD_FILES = [
    # (file text -- good rows are appended after a text that starts with HEADER, expected)
    (HEADER + "vit_small,cifar100,,0.6,0.6\n", "row 2: seed is missing"),
    (HEADER + "vit_small,cifar100,-1,0.6,0.6\n", "row 2: seed -1 is negative"),
    (HEADER + "vit_small,cifar100,x,0.6,0.6\n", "row 2: seed 'x' is not a whole number"),
    (HEADER + "vit_small,cifar100,1.5,0.6,0.6\n", "row 2: seed '1.5' is not a whole number"),
    (HEADER + "vit_small,cifar100,0,61.2,0.6\n", "row 2: top1 61.2 is outside [0, 1] "
                                                 "(fractions); it looks like percent: divide"),
    (HEADER + "vit_small,cifar100,0,1.2,0.6\n", "row 2: top1 1.2 is outside [0, 1]"),
    (_percent_cell(), "row 2: top1 '61%' is not a number; give it as a fraction"),
    (HEADER + "vit_small,cifar100,0,nan,0.6\n", "row 2: top1 is nan: give a finite number"),
    (HEADER + "vit_small,cifar100,0,inf,0.6\n", "row 2: top1 is inf"),
    (HEADER + "vit_small,cifar100,0,abc,0.6\n", "row 2: top1 'abc' is not a number"),
    (HEADER + ",cifar100,0,0.6,0.6\n", "row 2: model is empty"),
    (HEADER + "vit small,cifar100,0,0.6,0.6\n", "row 2: model 'vit small' is not a name"),
    (HEADER + "vit_small,,0,0.6,0.6\n", "row 2: dataset is empty"),
    (HEADER + "vit_small,cifar100,0,,\n", "row 2: no metric value"),
    (HEADER + "a,b,0,0.6,0.6\na,b,0,0.7,0.6\n", "row 3: repeats row 2 (a, b, seed 0) with "
                                                "different values"),
    (HEADER + "a,b,0,0.6,0.6,extra\n", "row 2: more cells than the header's 5 columns"),
    ("model,dataset,seed,top1,protocol\na,b,0,0.6,mine\n", "row 2: protocol 'mine' is not one"),
    ("model,dataset,seed,params\na,b,0,1.5e3\na,b,1,12.5\n", "row 3: params '12.5' is not a "
                                                              "whole number"),
    ("model,dataset,seed,best_epoch\na,b,0,0\n", "row 2: best_epoch is 0"),
    ("model,dataset,seed,gen_gap_best\na,b,0,-1.5\n", "row 2: gen_gap_best -1.5 is outside"),
    ("model,dataset,seed,nll\na,b,0,-0.1\n", "row 2: nll -0.1 is negative"),
    ("model,dataset,seed,split_seed,top1\na,b,0,-2,0.5\n", "row 2: split_seed -2 is negative"),
    (HEADER + 'a,b,0,"0.6,0.6\n', "row 2: not CSV (unexpected end of data)"),
    (HEADER + 'a,b,0,"0.6"x,0.6\n', "row 2: not CSV"),
    ("model,dataset,seed,top_1\n", "unknown column(s) top_1 (did you mean top1?); map a column "
                                   "with --rename OLD=NEW"),
    ("model,seed,top1\n", "missing column(s) dataset"),
    ("model,dataset,seed\n", "has no metric column; add one of top1"),
    ("model,dataset,seed,top1,top1\n", "column(s) top1 appear twice"),
    ("model,dataset,seed,top1,\n", "column 5 of the header has no name"),
    ("model,dataset,seed,top1\n", "has a header but no rows"),
    ("", "is empty; its first row must name the columns"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), BAD_FILES, ids=[e for _, e in BAD_FILES])
def test_bad_rows_are_refused_with_their_row_number_and_nothing_written(
    tmp_path, capsys, sqlite_url, body, expected
):
    good = tmp_path / "good.csv"
    good.write_text(HEADER + ROWS, encoding="utf-8")
    assert _cli(capsys, "import", str(good), "--db", sqlite_url)[0] == 0
    before = _counts(sqlite_url)
    bad = tmp_path / "bad.csv"
    more = ROWS.replace("vit_small", "vit_base") if body.startswith(HEADER) else ""
    bad.write_text(body + more, encoding="utf-8")
    code, out, err = _cli(capsys, "import", str(bad), "--db", sqlite_url)
    assert code != 0 and out == ""
    assert err.startswith("harness: error: ") and expected in err and "Traceback" not in err
    assert err.count("\n") == 1  # one bad row: one line
    assert _counts(sqlite_url) == before  # all or nothing


def test_many_bad_rows_are_listed_one_line_each(tmp_path, capsys, sqlite_url):
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "".join(f"m,d,{s},{s + 10},0.5\n" for s in range(7)), encoding="utf-8")
    code, _, err = _cli(capsys, "import", str(bad), "--db", sqlite_url)
    lines = err.splitlines()
    assert code != 0 and "7 bad rows, nothing imported, first 5 shown" in lines[0]
    assert len(lines) == 6 and lines[1].strip().startswith("row 2: top1 10 is outside")
    assert _counts(sqlite_url) == (0, 0)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "no file"),
        (lambda p: p.write_bytes(b"model,dataset,seed,top1\nr\xe9s,b,0,0.5\n"), "is not UTF-8"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"\xef\xbb\xbfmodel,dataset,seed,top1\na,b,0,0.5\n"), None),
    ],
    ids=["missing", "latin-1", "directory", "utf-8 with BOM is fine"],
)
def test_unreadable_files_are_refused(tmp_path, capsys, sqlite_url, make, expected):
    path = tmp_path / "runs.csv"
    make(path)
    code, _, err = _cli(capsys, "import", str(path), "--db", sqlite_url)
    if expected is None:
        assert code == 0
    else:
        assert code != 0 and expected in err and err.count("\n") == 1
        assert _counts(sqlite_url) == (0, 0)


def test_other_values_for_an_existing_run_are_refused(tmp_path, capsys, sqlite_url):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(HEADER + ROWS, encoding="utf-8")
    assert _cli(capsys, "import", str(first), "--db", sqlite_url)[0] == 0
    # The same runs from another file, same values: nothing new (keys ignore the file).
    second.write_text(HEADER + ROWS.splitlines(keepends=True)[0], encoding="utf-8")
    code, out, _ = _cli(capsys, "import", str(second), "--db", sqlite_url)
    assert code == 0 and "0 new, 1 already imported" in out
    second.write_text(HEADER + "vit_base,cifar100,0,0.5,0.6\nvit_small,cifar100,0,0.5,0.6\n",
                      encoding="utf-8")  # fmt: skip
    code, _, err = _cli(capsys, "import", str(second), "--db", sqlite_url)
    assert code != 0 and err.count("\n") == 1
    assert ("row 3: vit_small, cifar100, seed 0 is already imported with other values "
            "(top1 0.5 here, 0.61 in the database)") in err  # fmt: skip
    assert _counts(sqlite_url) == (12, 12)  # vit_base (row 2) was not written either


def test_a_run_the_harness_made_is_not_imported_over(tmp_path, capsys, sqlite_url):
    assert _cli(capsys, "enqueue", "--grid", "demo", "--db", sqlite_url)[0] == 0
    before = _counts(sqlite_url)
    path = tmp_path / "mine.csv"
    path.write_text("model,dataset,seed,top1\nresnet18,digits,42,0.9\n", encoding="utf-8")
    code, _, err = _cli(capsys, "import", str(path), "--db", sqlite_url)
    assert code != 0 and "row 2: resnet18, digits, seed 42 is already in the database as a " \
        "harness job (grid demo, queued)" in err  # fmt: skip
    assert _counts(sqlite_url) == before


def test_upgrade_from_0002_keeps_rows_and_then_imports(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert _cli(capsys, "db", "upgrade", "--db", url, "--revision", "0002")[0] == 0
    engine = make_engine(url, create=False)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO jobs (key, grid, model, dataset, seed, split_seed, protocol, config,"
            " harness_version, status, attempts, max_attempts) VALUES ('k1', 'demo', 'resnet18',"
            " 'digits', 42, 42, 'paper', '{}', '0.1.0', 'done', 1, 3)"))  # fmt: skip
        conn.execute(text(
            "INSERT INTO results (job_id, top1, best_epoch, epochs_run, evaluated_epoch, params,"
            " slots, provenance, extra) VALUES (1, 0.875, 2, 2, 2, 11172810, 1, :p, '{}')"),
            {"p": json.dumps({"git": "e9aa527"})})  # fmt: skip
    engine.dispose()
    path = tmp_path / "f1.csv"
    path.write_text("model,dataset,seed,f1_macro\nvit_small,digits,42,0.8\n", encoding="utf-8")
    code, _, err = _cli(capsys, "import", str(path), "--db", url)
    assert code != 0 and "harness db upgrade" in err  # a 0002 database is not written to
    assert _cli(capsys, "db", "upgrade", "--db", url)[0] == 0
    assert _cli(capsys, "import", str(path), "--db", url)[0] == 0
    df = load_results(make_engine(url)).set_index("model")
    assert df.loc["resnet18", "top1"] == 0.875 and df.loc["resnet18", "params"] == 11172810
    assert df.loc["vit_small", "f1_macro"] == 0.8 and df.loc["vit_small", "top1"] != 0.875


# Another tool's own header (a result-collector export): renamed and ignored columns.
OTHER_TOOL = (
    "model,dataset,seed,method,accuracy,f1_score,wall_time_seconds\n"
    + "".join(f"transformer,cifar10,{s},proposed,{0.92 + s / 10000},0.91,3842.5\n"
              f"resnet50,cifar10,{s},baseline,{0.91 + s / 10000},0.90,1245.3\n"
              for s in (42, 123, 456))
)  # fmt: skip


def test_another_tools_columns_are_renamed_and_ignored(tmp_path, capsys, sqlite_url):
    path = tmp_path / "results.csv"
    path.write_text(OTHER_TOOL, encoding="utf-8")
    code, _, err = _cli(capsys, "import", str(path), "--db", sqlite_url)
    assert code != 0 and "unknown column(s) method, accuracy, f1_score (did you mean f1_macro?)" in err
    assert "--rename OLD=NEW" in err and _counts(sqlite_url) == (0, 0)
    code, out, _ = _cli(capsys, "import", str(path), "--db", sqlite_url, "--rename",
                        "accuracy=top1,f1_score=f1_macro", "wall_time_seconds=train_seconds",
                        "--ignore", "method")  # fmt: skip
    assert code == 0 and "6 new" in out
    df = load_results(make_engine(sqlite_url))
    assert len(df) == 6 and set(df["model"]) == {"transformer", "resnet50"}
    ours = df.set_index(["model", "seed"])
    assert ours.loc[("transformer", 123), "top1"] == pytest.approx(0.9323)
    assert ours.loc[("resnet50", 42), "f1_macro"] == pytest.approx(0.90)
    assert ours.loc[("resnet50", 42), "train_seconds"] == pytest.approx(1245.3)
    columns = df["provenance"].iloc[0]["columns"]
    assert columns["renamed"]["accuracy"] == "top1" and columns["ignored"] == ["method"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--rename", "acuracy=top1", "--ignore", "method"],
         "name column(s) acuracy that the file lacks"),
        (["--rename", "accuracy"], "--rename 'accuracy' is not OLD=NEW"),
        (["--rename", "accuracy=top1", "accuracy=top3"], "--rename names column 'accuracy' twice"),
        (["--rename", "accuracy=seed"], "gives name(s) seed that another column already has"),
        (["--rename", "accuracy=top1", "--ignore", "accuracy,method"], "both renamed and ignored"),
    ],
)
def test_bad_column_maps_are_refused(tmp_path, capsys, sqlite_url, options, expected):
    path = tmp_path / "results.csv"
    path.write_text(OTHER_TOOL, encoding="utf-8")
    code, out, err = _cli(capsys, "import", str(path), "--db", sqlite_url, *options)
    assert code != 0 and out == "" and expected in err and err.count("\n") == 1
    assert _counts(sqlite_url) == (0, 0)
