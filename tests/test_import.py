"""`harness import FILE.csv`: foreign per-seed results in, all or nothing, then audited."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.cli import main
from harness.db import Job, Result, make_engine
from harness.report.load import load_results

HEADER = "model,dataset,seed,top1,f1_macro\n"
ROWS = "".join(f"vit_small,cifar100,{s},{0.61 + 0.001 * s},0.6\n"
               f"resnet50,cifar100,{s},{0.59 + 0.001 * s},0.58\n" for s in range(6))  # fmt: skip


def _count(url: str) -> int:
    with Session(make_engine(url)) as session:
        return session.scalar(select(func.count()).select_from(Job))


def test_import_is_idempotent_and_keeps_provenance(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    path = tmp_path / "wandb-export.csv"
    path.write_text(HEADER + ROWS, encoding="utf-8")
    assert main(["import", str(path), "--db", url]) == 0
    assert "imported 12 new run(s), 0 already imported" in capsys.readouterr().out
    assert main(["import", str(path), "--db", url]) == 0
    assert "imported 0 new run(s), 12 already imported" in capsys.readouterr().out
    df = load_results(make_engine(url))
    assert len(df) == 12 and set(df["model"]) == {"vit_small", "resnet50"}
    assert df["params"].isna().all() and (df["split_seed"] == 42).all()
    prov = df["provenance"].iloc[0]
    assert prov["source"] == "import" and len(prov["sha256"]) == 64 and prov["row"] >= 2
    with Session(make_engine(url)) as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 12


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEADER + "vit_small,cifar100,,0.6,0.6\n", "row 2: seed is missing"),
        (HEADER + "vit_small,cifar100,-1,0.6,0.6\n", "row 2: seed -1 is negative"),
        (HEADER + "vit_small,cifar100,x,0.6,0.6\n", "row 2: seed 'x' is not a whole number"),
        (HEADER + "vit_small,cifar100,0,61.2,0.6\n", "row 2: top1 61.2 is outside [0, 1] "
                                                     "(fractions); it looks like percent"),
        (HEADER + "vit_small,cifar100,0,nan,0.6\n", "row 2: top1 is nan"),
        (HEADER + "vit_small,cifar100,0,abc,0.6\n", "row 2: top1 'abc' is not a number"),
        (HEADER + ",cifar100,0,0.6,0.6\n", "row 2: model '' is empty"),
        (HEADER + "vit_small,cifar100,0,,\n", "row 2: no metric value"),
        (HEADER + "a,b,0,0.6,0.6\na,b,0,0.7,0.6\n", "row 3: repeats row 2"),
        ("model,dataset,seed,top_1\n", "unknown column(s) top_1"),
        ("model,seed,top1\n", "missing column(s) dataset"),
        ("model,dataset,seed\n", "has no metric column"),
        ("", "is empty"),
        (HEADER + "a,b,0,0.6,0.6,extra\n", "row 2: more cells than columns"),
        ("model,dataset,seed,top1,protocol\na,b,0,0.6,mine\n", "row 2: protocol 'mine'"),
    ],
)  # fmt: skip
def test_bad_rows_are_refused_with_their_row_number_and_nothing_written(
    tmp_path, capsys, text, expected
):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    good = tmp_path / "good.csv"
    good.write_text(HEADER + ROWS, encoding="utf-8")
    assert main(["import", str(good), "--db", url]) == 0
    before = _count(url)
    bad = tmp_path / "bad.csv"
    bad.write_text(text + (ROWS if text.startswith(HEADER) else ""), encoding="utf-8")
    capsys.readouterr()
    assert main(["import", str(bad), "--db", url]) != 0
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and expected in err and "Traceback" not in err
    assert _count(url) == before  # all or nothing


def test_other_values_for_an_imported_run_are_refused(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(HEADER + ROWS, encoding="utf-8")
    second.write_text(HEADER + "vit_small,cifar100,0,0.5,0.6\n", encoding="utf-8")
    assert main(["import", str(first), "--db", url]) == 0
    assert main(["import", str(second), "--db", url]) != 0
    assert "row 2: vit_small, cifar100, seed 0 is already imported with other values" in (
        capsys.readouterr().err)  # fmt: skip
    assert main(["import", str(tmp_path / "none.csv"), "--db", url]) != 0
    assert "no file" in capsys.readouterr().err
