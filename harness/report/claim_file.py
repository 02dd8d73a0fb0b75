"""Claims a user writes (`harness report --claims FILE.yaml`): read and checked before use.

The schema is harness/paperdata/claims.yaml's (docs/CLAIMS.md). Every mistake in the file is
reported at once, one line each, naming the claim and the field; nothing is evaluated or
written until the whole file is valid.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from harness.errors import HarnessError
from harness.report import verdicts
from harness.report.arms import Arm, setting_text, split_arms
from harness.report.claim_parts import SPECIAL_CANDIDATES
from harness.report.load import (
    DERIVED_COLUMNS,
    GHS_RANGES,
    PARAM_GHS_COLUMN,
    RESULT_COLUMNS,
    SILENT_COLUMNS,
)
from harness.report.stats import METRIC_DIRECTIONS

KINDS = ("point", "range", "directional", "count", "every")
UNITS = ("pp", "rel", "abs")
FIELDS = ("id", "text", "kind", "metric", "dataset", "datasets", "pairs", "baseline",
          "candidate", "model", "value", "low", "high", "unit", "direction", "at_least",
          "source", "setting")  # fmt: skip
PAIR_FIELDS = ("dataset", "baseline", "candidate", "value", "low", "high")
# Metrics stored as fractions (0-1), where "pp" (percentage points) is meaningful: accuracies,
# F1/precision/recall, ECE (a mean |accuracy - confidence|), the train-validation gaps (a
# difference of accuracies) and GHS (a fraction of layers). Not nll, seconds, counts, params.
FRACTION_METRICS = ("top1", "top3", "top5", "precision_macro", "recall_macro", "f1_macro",
                    "precision_weighted", "recall_weighted", "f1_weighted", "f1", "ece",
                    "gen_gap", "gen_gap_best", "gen_gap_last", *GHS_RANGES, PARAM_GHS_COLUMN,
                    *SILENT_COLUMNS)  # fmt: skip
# Job bookkeeping stored beside the results, not outcomes a claim can be about.
NOT_METRICS = ("slots", "evaluated_epoch")
# Every results column a claim may name; those outside METRIC_DIRECTIONS (gradient-norm
# summaries, ...) have no better direction and so no directional or count claim.
METRICS = tuple(dict.fromkeys(
    [*METRIC_DIRECTIONS, *(c for c in (*RESULT_COLUMNS, *DERIVED_COLUMNS) if c not in NOT_METRICS)]
))  # fmt: skip
LEVEL_KINDS = ("point", "every")  # a model's own value: one stated value per dataset


def _close(word: str, options: list[str] | tuple[str, ...]) -> str:
    match = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_choice(label: str, field: str, value: Any, choices: tuple[str, ...]) -> list[str]:
    """A required field whose value must be one of `choices`: [] or the one line saying why."""
    listed = ", ".join(choices)
    if value is None:
        return [f"{label}: missing field {field!r}; {field}s: {listed}"]
    if value not in choices:
        return [f"{label}: unknown {field} {value!r}{_close(value, choices)}; {field}s: {listed}"]
    return []


@dataclass(frozen=True)
class NameScope:
    """Where a claims file's model and dataset names are looked up, in the error's words."""

    missing: str  # "dataset 'x' <missing>"
    listed: str  # "datasets <listed>: a, b"


DATABASE = NameScope("has no runs in the database", "with runs")
AUDIT_GRID = NameScope("is not in the audit's grid", "in the grid")


def _check_claim(
    claim: Any, label: str, models: set[str], datasets: set[str], scope: NameScope
) -> list[str]:
    if not isinstance(claim, dict):
        return [f"{label}: a claim is a mapping of fields (got {type(claim).__name__})"]
    errors = [f"{label}: unknown field {key!r}{_close(key, FIELDS)}; fields: {', '.join(FIELDS)}"
              for key in claim if key not in FIELDS]  # fmt: skip
    kind, metric = claim.get("kind"), claim.get("metric")
    errors += _check_choice(label, "kind", kind, KINDS)
    errors += _check_choice(label, "metric", metric, METRICS)
    unit = claim.get("unit", "abs")
    if unit not in UNITS:
        errors.append(f"{label}: unit {unit!r} is not one of {', '.join(UNITS)}")
    elif unit == "pp" and metric in METRICS and metric not in FRACTION_METRICS:
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
            errors += [f"{where}: unknown field {key!r}{_close(key, PAIR_FIELDS)}; pair fields: "
                       f"{', '.join(PAIR_FIELDS)}"
                       for key in spec if key not in PAIR_FIELDS]  # fmt: skip
            spec = {**claim, **spec}
        errors += _check_values(spec, kind, where)
        errors += _check_names(spec, where, models, datasets, scope)
    if kind == "count":
        if not isinstance(claim.get("datasets"), list):
            errors.append(f"{label}: a count claim needs 'datasets' (a list)")
        at_least = claim.get("at_least")
        if not (isinstance(at_least, int) and not isinstance(at_least, bool) and at_least >= 1):
            errors.append(f"{label}: a count claim needs 'at_least' (a whole number >= 1)")
        elif isinstance(claim.get("datasets"), list) and at_least > len(claim["datasets"]):
            errors.append(f"{label}: at_least {at_least} is more than the "
                          f"{len(claim['datasets'])} dataset(s) listed in 'datasets'")  # fmt: skip
    if kind in KINDS and metric in METRICS and unit in UNITS:
        errors += check_rules(claim, label)
    return errors


def _check_values(spec: dict[str, Any], kind: Any, where: str) -> list[str]:
    errors = []
    for key in ("value", "low", "high"):
        if key in spec and not _number(spec[key]):
            errors.append(f"{where}: {key} must be a finite number (got {spec[key]!r})")
    errors += check_sizes(spec, where)
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
    spec: dict[str, Any], where: str, models: set[str], datasets: set[str], scope: NameScope
) -> list[str]:
    errors = []
    listed_models, listed_datasets = sorted(models), sorted(datasets)
    given = spec.get("datasets") or [spec.get("dataset")]
    if not isinstance(given, list) or not all(isinstance(d, str | None) for d in given):
        key = "datasets" if spec.get("datasets") else "dataset"
        return [f"{where}: {key} must be {'a list of names' if key == 'datasets' else 'a name'}"
                f" (got {spec[key]!r}); write datasets: [a, b] or dataset: a"]  # fmt: skip
    names = [("dataset", d) for d in given if d]
    # Parameter counts and "not slower" claims are checked on every dataset the baseline ran.
    every_dataset = spec.get("metric") == "params" or (
        spec.get("metric") == "epoch_seconds" and spec.get("kind") == "directional")
    if not names and "model" not in spec and not every_dataset:
        errors.append(f"{where}: missing field 'dataset' (or 'datasets')")
    for _, dataset in names:
        if dataset not in datasets:
            errors.append(f"{where}: dataset {dataset!r} {scope.missing}"
                          f"{_close(dataset, listed_datasets)}; datasets {scope.listed}: "
                          f"{', '.join(listed_datasets) or 'none'}")  # fmt: skip
    roles = ["model"] if "model" in spec else ["baseline", "candidate"]
    for role in roles:
        values = spec.get(role)
        if values is None:
            errors.append(f"{where}: missing field {role!r}")
            continue
        many = isinstance(values, list) and role == "baseline" and "pairs" not in spec
        if isinstance(values, list) and not many:
            errors.append(f"{where}: {role} must be one model name (got a list); only a "
                          "claim's top-level 'baseline' may list several")  # fmt: skip
            continue
        for model in values if isinstance(values, list) else [values]:
            if not isinstance(model, str):
                errors.append(f"{where}: {role} must be a model name (got {model!r})")
                continue
            if model in SPECIAL_CANDIDATES and role == "candidate":
                continue
            if model not in models:
                errors.append(f"{where}: {role} {model!r} {scope.missing}"
                              f"{_close(model, listed_models)}; models {scope.listed}: "
                              f"{', '.join(listed_models) or 'none'}")  # fmt: skip
    return errors


def check_sizes(spec: dict[str, Any], where: str) -> list[str]:
    """Stated sizes the unit cannot mean (most often a unit mix-up: 4.65 'abs' for 4.65 pp)."""
    metric, unit, errors = spec.get("metric"), spec.get("unit", "abs"), []
    for key in ("value", "low", "high"):
        v = spec.get(key)
        if not _number(v):
            continue
        if unit == "rel":
            # A stated reduction ("direction: lower") flips the sign, as claim_parts reads it.
            change = -v if spec.get("direction") == "lower" else v
            if change <= -1:
                errors.append(f"{where}: {key} {v} with unit 'rel' is a {change * 100:+.0f}% "
                              f"change, which takes {metric} to zero or below; rel is a "
                              "fraction of the baseline (0.35 = 35%)")  # fmt: skip
        elif unit == "abs" and metric in FRACTION_METRICS and abs(v) > 1:
            fix = (f"write {v / 100:g} for {v:g}%" if "model" in spec
                   else f"did you mean unit: pp ({v:g} pp = {v / 100:g} abs)?")  # fmt: skip
            errors.append(f"{where}: {key} {v} is out of range: {metric} is stored as a "
                          f"fraction (0-1); {fix}")  # fmt: skip
    return errors


def check_rules(claim: dict[str, Any], label: str) -> list[str]:
    """Combinations of fields the evaluation cannot read (kind, metric, unit all known)."""
    kind, metric, unit = claim["kind"], claim["metric"], claim.get("unit", "abs")
    pairs = [p for p in claim.get("pairs") or [] if isinstance(p, dict)]
    specs = [{**claim, **p} for p in pairs] or [claim]
    sized = any(k in s for s in specs for k in ("value", "low", "high"))
    errors: list[str] = []

    def err(text: str) -> None:
        errors.append(f"{label}: {text}")

    if "dataset" in claim and "datasets" in claim:
        err("give 'dataset' (one) or 'datasets' (a list), not both")
    if "pairs" in claim:
        for key in ("dataset", "datasets"):
            if key in claim:
                err(f"'{key}' conflicts with 'pairs' (each pair names its dataset); remove it")
        if kind == "count":
            err("a count claim lists 'datasets', not 'pairs'")
    if any("value" in s and ("low" in s or "high" in s) for s in specs):
        err("give 'value' (a point) or 'low' and 'high' (a range), not both")
    if kind in ("directional", "count") and sized:
        err(f"a {kind} claim states no size: remove value/low/high, or use kind point or range")
    if metric not in METRIC_DIRECTIONS:
        if kind in ("directional", "count") or (kind == "every" and not sized):
            err(f"metric {metric!r} has no better direction (higher or lower), so a {kind} claim "
                f"can't use it: state a size (kind point or range) or use one of "
                f"{', '.join(METRIC_DIRECTIONS)}")  # fmt: skip
        if any(s.get("candidate") == "best_gradattn_variant" for s in specs):
            err(f"candidate 'best_gradattn_variant' picks the best mean, but metric {metric!r} "
                "has no better direction: name the variant or use each_gradattn_variant")
    if "model" in claim:
        if kind not in LEVEL_KINDS:
            err(f"kind {kind!r}: a level claim ('model') is kind point or every")
        for key in ("baseline", "candidate", "pairs", "low", "high"):
            if key in claim:
                err(f"'{key}' can't be used with 'model' (a level claim compares one model's own "
                    "value with 'value'); remove it")  # fmt: skip
        if unit != "abs":
            err(f"unit {unit!r}: a level claim's value is in {metric}'s own units; use unit: abs")
    elif metric == "params":
        if unit != "rel":
            err(f"unit {unit!r}: a params claim states the relative increase in parameters; "
                "use unit: rel (0.143 = +14.3%)")
        if kind not in LEVEL_KINDS or "pairs" in claim or "low" in claim or "high" in claim:
            err("a params claim is kind point with 'value' and one baseline (parameter counts "
                "are exact: no range, pairs or direction)")
        elif "value" not in claim and kind == "every":
            err("missing field 'value' (the relative increase in parameters)")
    # A difference in absolute units is judged against the metric's smallest effect of
    # interest; without one the evaluation would fail for the whole claims section.
    sesoi_diff = getattr(verdicts, "SESOI_DIFF", None)
    not_slower = kind == "directional" and metric == "epoch_seconds"
    on_diff = "model" in claim or unit != "rel"
    if sesoi_diff is not None and on_diff and metric != "params" and not not_slower \
            and metric not in sesoi_diff:  # fmt: skip
        fix = ("a level claim can't use it" if "model" in claim
               else "state the claim with unit: rel (a relative change)")  # fmt: skip
        err(f"metric {metric!r} has no smallest effect of interest in absolute units (only "
            f"{', '.join(sesoi_diff)} have one); {fix}")
    return errors


def _check_setting(setting: Any, label: str, arms: list[Arm]) -> list[str]:
    """A claim's `setting` (which swept setting it is about) must name one the runs have."""
    if not isinstance(setting, dict) or not setting:
        return [f"{label}: 'setting' must be a mapping of swept keys to values, such as "
                f"{{lr: 0.01}} (got {setting!r})"]  # fmt: skip
    if any(arm.matches(setting) for arm in arms):
        return []
    known = sorted({", ".join(f"{k}={v}" for k, v in arm.setting) for arm in arms if arm.setting})
    shown = ", ".join(f"{k}={setting_text(v)}" for k, v in setting.items())
    listed = "; ".join(known) if known else "none: no key varies between the runs"
    return [f"{label}: no runs have the setting {shown}; the settings with runs: {listed}"]


def load_claims_file(
    path: str | Path, results: pd.DataFrame, scope: NameScope = DATABASE
) -> tuple[list[dict[str, Any]], str]:
    """The file's claims, checked against the models and datasets of `results` (the runs, or
    an audit's grid cells: `scope` says which in the errors), and a line naming the file and
    its digest (shown in the report)."""
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
    arms: list[Arm] | None = None  # the settings with runs, read once if a claim names one
    errors, seen = [], set()
    for index, claim in enumerate(data["claims"]):
        ident = claim.get("id") if isinstance(claim, dict) else None
        label = f"claim {ident}" if isinstance(ident, str) and ident else f"claim #{index + 1}"
        if isinstance(claim, dict) and ident is not None and not isinstance(ident, str):
            # YAML reads `id: 1` as a number; ids are names, compared as text.
            errors.append(f"{label}: id must be a string (got {ident!r}); quote it: "
                          f"id: \"{ident}\"")  # fmt: skip
        elif not (isinstance(ident, str) and ident):
            errors.append(f"{label}: missing field 'id' (a short name such as D1)")
        elif ident in seen:
            errors.append(f"{label}: id {ident!r} is used twice; ids must be unique")
        if isinstance(ident, str):
            seen.add(ident)
        errors += _check_claim(claim, label, models, datasets, scope)
        if isinstance(claim, dict) and "setting" in claim:
            if arms is None:
                has_arms = len(results) and {"protocol", "quirks"} <= set(results.columns)
                arms = list(split_arms(results)) if has_arms else []
            errors += _check_setting(claim["setting"], label, arms)
    if errors:
        raise HarnessError(f"{len(errors)} mistake(s) in claims file {path}:\n" + "\n".join(errors))
    claims = [{"text": c["id"], "source": path.name, **c} for c in data["claims"]]
    return claims, f"{path} (sha256 {hashlib.sha256(raw).hexdigest()[:12]})"
