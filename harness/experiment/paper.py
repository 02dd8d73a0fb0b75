"""The paper's published numbers and claims, read from the package's own copies.

`harness/paperdata/tables.csv` holds every number of Tables 3-9 as printed (percent in percent);
`paper_values()` adds `value_db`, the same number in the results database's units (fractions),
so a report can put a paper value next to our mean without converting by hand.
`harness/paperdata/claims.yaml` holds the paper's claims, structured for the claim audit.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import pandas as pd
import yaml

from harness.errors import HarnessError

# tables.csv unit -> factor that turns the printed value into the database's unit.
UNIT_TO_DB: dict[str, float] = {
    "percent": 0.01,
    "percentage_points": 0.01,
    "fraction": 1.0,
    "seconds": 1.0,
    "norm": 1.0,
    "layers": 1.0,
}

# Numbers the claims rely on that appear only in the paper's running text, not in a table
# (key: (metric, dataset or None for "every dataset", model) -> (value in db units, source)).
PAPER_TEXT_VALUES: dict[tuple[str, str | None, str], tuple[float, str]] = {
    ("params", None, "resnet18"): (11.2e6, "4.7: ResNet-18 has ~11.2 M parameters"),
    ("best_epoch", "fashionmnist", "resnet18"): (5.0, "4.5.1: ResNet-18 converges in five epochs"),
    ("best_epoch", "fashionmnist", "gradattn_learnable"): (
        11.0,
        "4.5.1: Learnable PE requires 11 epochs",
    ),
}


def _read_text(name: str) -> str:
    return resources.files("harness").joinpath("paperdata", name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _paper_values_cached() -> pd.DataFrame:
    import io

    frame = pd.read_csv(io.StringIO(_read_text("tables.csv")))
    unknown = sorted(set(frame["unit"]) - set(UNIT_TO_DB))
    if unknown:
        raise HarnessError(
            f"tables.csv has unknown unit(s) {', '.join(unknown)}; "
            f"known: {', '.join(UNIT_TO_DB)} (add the conversion to harness.experiment.paper.UNIT_TO_DB)"
        )
    frame["table"] = frame["table"].astype(int)
    frame["value"] = frame["value"].astype(float)
    frame["value_db"] = frame["value"] * frame["unit"].map(UNIT_TO_DB)
    return frame


@functools.lru_cache(maxsize=1)
def _paper_index() -> dict[tuple[str, str, str], list[tuple[int, float]]]:
    index: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    frame = _paper_values_cached()
    for table, dataset, model, metric, value in frame[
        ["table", "dataset", "model", "metric", "value_db"]
    ].itertuples(index=False, name=None):
        index.setdefault((dataset, model, metric), []).append((int(table), float(value)))
    return index


def paper_values() -> pd.DataFrame:
    """Tables 3-9 in long format: table, dataset, model, metric, value, unit, value_db."""
    return _paper_values_cached().copy()


def paper_claims() -> list[dict[str, Any]]:
    """The claims of claims.yaml, in file order (a fresh copy on every call)."""
    data = yaml.safe_load(_read_text("claims.yaml"))
    claims = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(claims, list):
        raise HarnessError("harness/paperdata/claims.yaml has no `claims:` list; restore the file")
    return claims


def paper_value(
    table: int, dataset: str, model: str, metric: str, *, db_units: bool = True
) -> float:
    """One published number, in database units unless `db_units` is False (then as printed)."""
    frame = _paper_values_cached()
    rows = frame[
        (frame["table"] == int(table))
        & (frame["dataset"] == dataset)
        & (frame["model"] == model)
        & (frame["metric"] == metric)
    ]
    if rows.empty:
        in_table = frame[frame["table"] == int(table)]
        if in_table.empty:
            tables = sorted(frame["table"].unique())
            raise HarnessError(f"the paper has no Table {table}; tables: {tables}")
        raise HarnessError(
            f"Table {table} has no value for dataset={dataset!r} model={model!r} "
            f"metric={metric!r}; it has datasets {sorted(in_table['dataset'].unique())}, "
            f"models {sorted(in_table['model'].unique())}, "
            f"metrics {sorted(in_table['metric'].unique())}"
        )
    column = "value_db" if db_units else "value"
    return float(rows.iloc[0][column])


def find_paper_value(dataset: str, model: str, metric: str) -> tuple[str, float] | None:
    """(source, value in db units) for a metric of (dataset, model), wherever the paper gives it.

    Tables first (the lowest-numbered table that has it: Table 3 before Table 9 for top-1),
    then the running text (PAPER_TEXT_VALUES). None if the paper does not state it.
    """
    found = _paper_index().get((dataset, model, metric))
    if found:
        table, value = min(found)
        return f"Table {table}", value
    for key in ((metric, dataset, model), (metric, None, model)):
        if key in PAPER_TEXT_VALUES:
            value, source = PAPER_TEXT_VALUES[key]
            return f"Section {source}", value
    return None
