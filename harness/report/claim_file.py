"""Claims a user writes (`harness report --claims FILE.yaml`): read and checked before use.

The schema is harness/paperdata/claims.yaml's (docs/CLAIMS.md). Every mistake in the file is
reported at once, one line each, naming the claim and the field; nothing is evaluated or
written until the whole file is valid.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from harness.errors import HarnessError
from harness.report.stats import METRIC_DIRECTIONS

KINDS = ("point", "range", "directional", "count", "every")
UNITS = ("pp", "rel", "abs")
FIELDS = ("id", "text", "kind", "metric", "dataset", "datasets", "pairs", "baseline",
          "candidate", "model", "value", "low", "high", "unit", "direction", "at_least",
          "source")  # fmt: skip
PAIR_FIELDS = ("dataset", "baseline", "candidate", "value", "low", "high")
SPECIAL_CANDIDATES = ("best_gradattn_variant", "each_gradattn_variant")
# Metrics stored as fractions, where "pp" (percentage points) is meaningful.
FRACTION_METRICS = ("top1", "top3", "top5", "precision_macro", "recall_macro", "f1_macro",
                    "precision_weighted", "recall_weighted", "f1_weighted", "f1", "ece",
                    "gen_gap", "gen_gap_best", "gen_gap_last")  # fmt: skip


def _close(word: str, options: list[str] | tuple[str, ...]) -> str:
    match = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_claim(claim: Any, label: str, models: set[str], datasets: set[str]) -> list[str]:
    if not isinstance(claim, dict):
        return [f"{label}: a claim is a mapping of fields (got {type(claim).__name__})"]
    errors = [f"{label}: unknown field {key!r}{_close(key, FIELDS)}; fields: {', '.join(FIELDS)}"
              for key in claim if key not in FIELDS]  # fmt: skip
    kind = claim.get("kind")
    if kind not in KINDS:
        errors.append(f"{label}: kind {kind!r} is not one of {', '.join(KINDS)}")
    metric = claim.get("metric")
    if metric is None:
        errors.append(f"{label}: missing field 'metric'")
    elif metric not in METRIC_DIRECTIONS:
        errors.append(f"{label}: unknown metric {metric!r}{_close(metric, METRIC_DIRECTIONS)}; "
                      f"metrics: {', '.join(METRIC_DIRECTIONS)}")  # fmt: skip
    unit = claim.get("unit", "abs")
    if unit not in UNITS:
        errors.append(f"{label}: unit {unit!r} is not one of {', '.join(UNITS)}")
    elif unit == "pp" and metric in METRIC_DIRECTIONS and metric not in FRACTION_METRICS:
        errors.append(f"{label}: unit 'pp' needs a metric stored as a fraction; {metric!r} is "
                      "not: use 'abs' or 'rel'")  # fmt: skip
    specs = claim.get("pairs") or [claim]
    if "pairs" in claim and not (isinstance(claim["pairs"], list) and claim["pairs"]):
        errors.append(f"{label}: 'pairs' must be a non-empty list of mappings")
        specs = []
    for index, spec in enumerate(specs):
        where = f"{label}" + (f" pair {index + 1}" if "pairs" in claim else "")
        if not isinstance(spec, dict):
            errors.append(f"{where}: a pair is a mapping (dataset, baseline, candidate)")
            continue
        if "pairs" in claim:
            errors += [f"{where}: unknown field {key!r}; pair fields: {', '.join(PAIR_FIELDS)}"
                       for key in spec if key not in PAIR_FIELDS]  # fmt: skip
            spec = {**claim, **spec}
        errors += _check_values(spec, kind, where)
        errors += _check_names(spec, where, models, datasets)
    if kind == "count":
        if not isinstance(claim.get("datasets"), list):
            errors.append(f"{label}: a count claim needs 'datasets' (a list)")
        if not (isinstance(claim.get("at_least"), int) and claim.get("at_least", 0) >= 1):
            errors.append(f"{label}: a count claim needs 'at_least' (a whole number >= 1)")
    return errors


def _check_values(spec: dict[str, Any], kind: Any, where: str) -> list[str]:
    errors = []
    for key in ("value", "low", "high"):
        if key in spec and not _number(spec[key]):
            errors.append(f"{where}: {key} must be a finite number (got {spec[key]!r})")
    needs_value = kind == "point" or (kind == "every" and "model" in spec)
    if needs_value and "value" not in spec:
        errors.append(f"{where}: missing field 'value' (the stated size)")
    if kind == "range":
        if "low" not in spec or "high" not in spec:
            errors.append(f"{where}: a range claim needs 'low' and 'high'")
        elif spec["low"] == spec["high"]:
            errors.append(f"{where}: low equals high ({spec['low']}); use a point claim")
    if spec.get("direction") not in (None, "higher", "lower"):
        errors.append(f"{where}: direction must be 'higher' or 'lower'")
    return errors


def _check_names(
    spec: dict[str, Any], where: str, models: set[str], datasets: set[str]
) -> list[str]:
    errors = []
    listed_models, listed_datasets = sorted(models), sorted(datasets)
    names = [("dataset", d) for d in (spec.get("datasets") or [spec.get("dataset")]) if d]
    # Parameter counts and "not slower" claims are checked on every dataset the baseline ran.
    every_dataset = spec.get("metric") == "params" or (
        spec.get("metric") == "epoch_seconds" and spec.get("kind") == "directional")
    if not names and "model" not in spec and not every_dataset:
        errors.append(f"{where}: missing field 'dataset' (or 'datasets')")
    for _, dataset in names:
        if dataset not in datasets:
            errors.append(f"{where}: dataset {dataset!r} has no runs in the database"
                          f"{_close(dataset, listed_datasets)}; datasets with runs: "
                          f"{', '.join(listed_datasets) or 'none'}")  # fmt: skip
    roles = ["model"] if "model" in spec else ["baseline", "candidate"]
    for role in roles:
        values = spec.get(role)
        if values is None:
            errors.append(f"{where}: missing field {role!r}")
            continue
        for model in values if isinstance(values, list) else [values]:
            if model in SPECIAL_CANDIDATES and role == "candidate":
                continue
            if model not in models:
                errors.append(f"{where}: {role} {model!r} has no runs in the database"
                              f"{_close(model, listed_models)}; models with runs: "
                              f"{', '.join(listed_models) or 'none'}")  # fmt: skip
    return errors


def load_claims_file(path: str | Path, results: pd.DataFrame) -> tuple[list[dict[str, Any]], str]:
    """The file's claims, checked against the models and datasets with results, and a line
    naming the file and its digest (shown in the report)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw.decode("utf-8"))
    except FileNotFoundError:
        raise HarnessError(f"claims file {path} not found; give the path of a YAML file "
                           "(see docs/CLAIMS.md)") from None  # fmt: skip
    except UnicodeDecodeError:
        raise HarnessError(f"claims file {path} is not UTF-8 text; save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise HarnessError(f"claims file {path} is not valid YAML{where}: "
                           f"{getattr(exc, 'problem', exc)}") from None  # fmt: skip
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list) or not data["claims"]:
        raise HarnessError(f"claims file {path} needs a top-level 'claims:' list with at least "
                           "one claim (see docs/CLAIMS.md)")  # fmt: skip
    models = set(results["model"]) if len(results) else set()
    datasets = set(results["dataset"]) if len(results) else set()
    errors, seen = [], set()
    for index, claim in enumerate(data["claims"]):
        ident = claim.get("id") if isinstance(claim, dict) else None
        label = f"claim {ident}" if isinstance(ident, str) and ident else f"claim #{index + 1}"
        if not (isinstance(ident, str) and ident):
            errors.append(f"{label}: missing field 'id' (a short name such as D1)")
        elif ident in seen:
            errors.append(f"{label}: id {ident!r} is used twice; ids must be unique")
        seen.add(ident)
        errors += _check_claim(claim, label, models, datasets)
    if errors:
        raise HarnessError(f"{len(errors)} mistake(s) in claims file {path}:\n" + "\n".join(errors))
    claims = [{"text": c["id"], "source": path.name, **c} for c in data["claims"]]
    return claims, f"{path} (sha256 {hashlib.sha256(raw).hexdigest()[:12]})"
