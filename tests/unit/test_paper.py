"""harness.experiment.paper: the package's copies of the paper's tables and claims."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from harness.errors import HarnessError
from harness.experiment.paper import find_paper_value, paper_claims, paper_value, paper_values

PAPERDATA = Path(__file__).resolve().parents[2] / "harness" / "paperdata"


def test_paper_values_has_every_row_with_database_units():
    with open(PAPERDATA / "tables.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    frame = paper_values()
    assert len(frame) == len(rows)
    assert list(frame.columns) == ["table", "dataset", "model", "metric", "value", "unit",
                                   "value_db"]  # fmt: skip
    for row, (_, got) in zip(rows, frame.iterrows(), strict=True):
        scale = 0.01 if row["unit"] in ("percent", "percentage_points") else 1.0
        assert got["value_db"] == pytest.approx(float(row["value"]) * scale)
    frame.loc[0, "value"] = -1.0  # a caller's edit must not leak into the next call
    assert paper_values().loc[0, "value"] != -1.0


def test_paper_value_lookups():
    assert paper_value(3, "tinyimagenet", "resnet18", "top1") == pytest.approx(0.3302)
    assert paper_value(3, "tinyimagenet", "resnet18", "top1", db_units=False) == 33.02
    assert paper_value(6, "tinyimagenet", "resnet18", "gen_gap") == pytest.approx(0.6577)
    assert paper_value(4, "tissuemnist", "gradattn_learnable", "ece") == pytest.approx(0.039)
    assert paper_value(8, "svhn", "resnet18", "epoch_seconds") == pytest.approx(174.61)
    with pytest.raises(HarnessError, match="Table 3 has no value.*datasets"):
        paper_value(3, "mnist", "resnet18", "top1")
    with pytest.raises(HarnessError, match="no Table 12"):
        paper_value(12, "svhn", "resnet18", "top1")


def test_find_paper_value_prefers_tables_then_text():
    assert find_paper_value("svhn", "resnet18", "top1") == ("Table 3", pytest.approx(0.9798))
    assert find_paper_value("svhn", "se_resnet18", "top1") == ("Table 9", pytest.approx(0.9794))
    source, value = find_paper_value("pcam", "resnet18", "params")
    assert source.startswith("Section 4.7") and value == 11.2e6
    assert find_paper_value("svhn", "gradattn_rope", "nll") is None


def test_paper_claims_match_the_yaml_file():
    raw = yaml.safe_load((PAPERDATA / "claims.yaml").read_text())["claims"]
    claims = paper_claims()
    assert claims == raw
    assert [c["id"] for c in claims] == [f"C{i}" for i in range(1, 20)]
    kinds = {c["kind"] for c in claims}
    assert kinds <= {"count", "point", "range", "every", "directional"}
