"""`harness report --claims FILE.yaml`: every mistake named, then the user's claims audited."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from synthetic_db import fill_synthetic, grid_runs

from harness.cli import main
from harness.errors import HarnessError
from harness.experiment.paper import paper_claims
from harness.report.claim_file import load_claims_file
from harness.store.engine import make_engine

RESULTS = pd.DataFrame({"model": ["resnet18", "vit_small"], "dataset": ["digits", "cifar100"]})
GOOD = {"id": "U1", "kind": "point", "metric": "top1", "dataset": "digits",
        "baseline": "resnet18", "candidate": "vit_small", "value": 2.0, "unit": "pp"}  # fmt: skip


def _write(tmp_path: Path, claims) -> Path:
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": claims}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"kind": "pont"}, "claim U1: unknown kind 'pont' (did you mean 'point'?); kinds: point, range"),
        ({"metric": "top-1"}, "claim U1: unknown metric 'top-1' (did you mean 'top1'?); metrics: top1"),
        ({"candidate": "vit_smal"}, "claim U1: candidate 'vit_smal' has no runs in the database "
                                    "(did you mean 'vit_small'?)"),
        ({"baseline": "resnet50"}, "claim U1: baseline 'resnet50' has no runs"),
        ({"dataset": "digit"}, "claim U1: dataset 'digit' has no runs in the database "
                               "(did you mean 'digits'?)"),
        ({"value": None}, "claim U1: value must be a finite number (got None)"),
        ({"value": "two"}, "claim U1: value must be a finite number (got 'two')"),
        ({"value": float("nan")}, "claim U1: value must be a finite number"),
        ({"vaule": 2.0}, "claim U1: unknown field 'vaule' (did you mean 'value'?)"),
        ({"unit": "percent"}, "claim U1: unit 'percent' is not one of pp, rel, abs"),
        ({"metric": "nll"}, "claim U1: unit 'pp' needs a metric stored as a fraction"),
        ({"kind": "range"}, "claim U1: a range claim needs 'low' and 'high'"),
        ({"kind": "range", "low": 1, "high": 1}, "claim U1: low equals high (1)"),
        ({"kind": "count", "datasets": ["digits"]}, "claim U1: a count claim needs 'at_least'"),
        ({"direction": "up"}, "claim U1: direction must be 'higher' or 'lower'"),
        ({"id": ""}, "claim #1: missing field 'id'"),
    ],
)  # fmt: skip
def test_each_mistake_gets_one_line_naming_claim_and_field(tmp_path, change, expected):
    claim = {k: v for k, v in {**GOOD, **change}.items() if not (k == "id" and v == "")}
    if "value" in change and change["value"] is None:
        claim["value"] = None
    with pytest.raises(HarnessError) as err:
        load_claims_file(_write(tmp_path, [claim]), RESULTS)
    first, *lines = str(err.value).splitlines()
    assert first.startswith("1 mistake(s) in claims file") or len(lines) > 1
    assert any(line.startswith(expected) for line in lines), lines


def test_missing_value_duplicates_and_all_mistakes_at_once(tmp_path):
    no_value = {k: v for k, v in GOOD.items() if k != "value"}
    claims = [no_value, {**GOOD, "metric": "top-1"}]  # two claims named U1
    with pytest.raises(HarnessError) as err:
        load_claims_file(_write(tmp_path, claims), RESULTS)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("3 mistake(s) in claims file")
    assert "claim U1: missing field 'value' (the stated size)" in lines
    assert "claim U1: id 'U1' is used twice; ids must be unique" in lines


@pytest.mark.parametrize(
    ("text", "expected"),
    [("claims: [\n  - id: [", "is not valid YAML at line"), ("x: 1\n", "needs a top-level 'claims:'"),
     ("claims: []\n", "needs a top-level 'claims:'")],
)  # fmt: skip
def test_file_level_mistakes(tmp_path, text, expected):
    path = tmp_path / "claims.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(HarnessError, match=expected):
        load_claims_file(path, RESULTS)
    path.write_bytes(b"claims:\n  - id: \xff\n")
    with pytest.raises(HarnessError, match="not UTF-8"):
        load_claims_file(path, RESULTS)
    with pytest.raises(HarnessError, match="not found"):
        load_claims_file(tmp_path / "nope.yaml", RESULTS)


def test_the_paper_and_demo_claims_files_are_valid():
    models = ["resnet18", "gradattn_nope", "gradattn_learnable", "gradattn_rope", "se_resnet18",
              "cbam_resnet18"]  # fmt: skip
    datasets = ["tinyimagenet", "svhn", "cifar10", "fashionmnist", "tissuemnist", "bloodmnist",
                "pcam", "padufes20", "digits"]  # fmt: skip
    every = pd.DataFrame([(m, d) for m in models for d in datasets], columns=["model", "dataset"])
    paper = Path(__file__).parents[2] / "harness" / "paperdata" / "claims.yaml"
    claims, source = load_claims_file(paper, every)
    assert [c["id"] for c in claims] == [c["id"] for c in paper_claims()]
    assert "sha256" in source
    doc = Path(__file__).parents[2] / "docs" / "examples" / "digits-claims.yaml"
    assert len(load_claims_file(doc, every)[0]) == 10


def _synthetic_db(tmp_path, name: str, means: dict, seeds: int) -> str:
    url = f"sqlite:///{tmp_path / name}"
    fill_synthetic(make_engine(url), grid_runs(means, seeds=range(seeds), sd=0.004))
    return url


def _db(tmp_path) -> str:
    means = {("cifar100", "resnet50"): 0.70, ("cifar100", "vit_small"): 0.74}
    return _synthetic_db(tmp_path, "runs.db", means, seeds=8)


def test_report_cli_refuses_a_bad_file_and_writes_nothing(tmp_path, capsys):
    url = _db(tmp_path)
    path = _write(tmp_path, [{**GOOD, "dataset": "cifar100", "baseline": "resnet50",
                              "candidate": "vit_smal"}])  # fmt: skip
    out = tmp_path / "reports"
    assert main(["report", "--db", url, "--out", str(out), "--claims", str(path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("harness: error: 1 mistake(s) in claims file")
    assert "candidate 'vit_smal'" in err[1] and "Traceback" not in "\n".join(err)
    assert not out.exists() or not any(out.iterdir())


def test_user_claims_about_any_models_are_audited_html_and_json(tmp_path, capsys):
    url = _db(tmp_path)
    claims = [{**GOOD, "dataset": "cifar100", "baseline": "resnet50", "value": 4.0},
              {"id": "U2", "kind": "directional", "metric": "top1", "dataset": "cifar100",
               "baseline": "vit_small", "candidate": "resnet50"}]  # fmt: skip
    path = _write(tmp_path, claims)
    out = tmp_path / "reports"
    assert main(["report", "--db", url, "--out", str(out), "--claims", str(path),
                 "--name", "mine"]) == 0  # fmt: skip
    page = (out / "mine" / "index.html").read_text(encoding="utf-8")
    assert page.index('id="scorecard"') < page.index("<nav>")
    assert 'href="#p-paper-claim-U1"' in page and "claims.yaml (sha256" in page
    capsys.readouterr()
    assert main(["report", "--db", url, "--out", "-", "--format", "json", "--claims",
                 str(path)]) == 0  # fmt: skip
    audit = json.loads(capsys.readouterr().out)["claims_audit"]
    assert audit["schema"] == "harness.claims/1"
    verdicts = {c["id"]: c for c in audit["claims"]}
    # +4 pp with SD 0.4 pp over 8 seeds: the interval excludes 0 and reaches [2, 8] pp.
    assert verdicts["U1"]["verdict"] == "SUPPORTED"
    assert verdicts["U2"]["verdict"] == "CONTRADICTED"  # the mirrored claim: opposite
    part = verdicts["U1"]["parts"][0]
    assert set(part) >= {"dataset", "candidate", "baseline", "metric", "n", "mean_diff",
                         "ci_low", "ci_high", "p_adjusted", "verdict", "reason",
                         "seeds_needed"}  # fmt: skip
    assert part["n"] == 8 and part["ci_low"] > 0 and part["p_adjusted"] <= 0.05
    assert not list(out.glob("*/report.json"))  # --out - writes nothing


# ---------------------------------------------------------------- combinations of fields
# (change, fields to drop, start of the expected line). Each row is one mistake a user makes.
LEVEL = {"model": "resnet18", "value": 0.9, "unit": "abs"}
BAD_COMBINATIONS = [
    ({"id": 7}, (), "claim #1: id must be a string (got 7); quote it"),
    ({}, ("kind",), "claim U1: missing field 'kind'; kinds: point, range"),
    ({"datasets": "digits"}, ("dataset",), "claim U1: datasets must be a list of names"),
    ({"datasets": ["digits"]}, (), "claim U1: give 'dataset' (one) or 'datasets'"),
    ({"kind": "directional"}, (), "claim U1: a directional claim states no size"),
    ({"kind": "range", "low": 1, "high": 3}, (), "claim U1: give 'value' (a point) or 'low'"),
    ({"value": 4.65, "unit": "abs"}, (), "claim U1: value 4.65 is out of range: top1 is stored "
                                         "as a fraction (0-1); did you mean unit: pp"),
    ({"metric": "ece", "unit": "rel", "direction": "lower", "value": 1.2}, (),
     "claim U1: value 1.2 with unit 'rel' is a -120% change"),
    ({"metric": "grad_norm_avg", "kind": "directional"}, ("value", "unit"),
     "claim U1: metric 'grad_norm_avg' has no better direction"),
    ({"metric": "grad_norm_avg", "unit": "rel", "candidate": "best_gradattn_variant"}, (),
     "claim U1: candidate 'best_gradattn_variant' picks the best mean"),
    ({"metric": "epoch_seconds", "unit": "abs", "value": 0.5}, (),
     "claim U1: metric 'epoch_seconds' has no smallest effect of interest"),
    ({**LEVEL, "kind": "range", "low": 0.8, "high": 0.9}, ("baseline", "candidate", "value"),
     "claim U1: kind 'range': a level claim ('model') is kind point or every"),
    (LEVEL, (), "claim U1: 'baseline' can't be used with 'model'"),
    ({**LEVEL, "unit": "pp"}, ("baseline", "candidate"), "claim U1: unit 'pp': a level claim"),
    ({**LEVEL, "value": 90}, ("baseline", "candidate"), "claim U1: value 90 is out of range: "
                                                        "top1 is stored as a fraction (0-1); write 0.9"),
    ({"metric": "params", "value": 0.143, "unit": "abs"}, ("dataset",),
     "claim U1: unit 'abs': a params claim states the relative increase"),
    ({"kind": "count", "datasets": ["digits"], "at_least": 3}, ("dataset", "value", "unit"),
     "claim U1: at_least 3 is more than the 1 dataset(s)"),
    ({"kind": "count", "datasets": ["digits"], "at_least": True}, ("dataset", "value", "unit"),
     "claim U1: a count claim needs 'at_least' (a whole number >= 1)"),
    ({"kind": "every", "pairs": [{"dataset": "digits", "baseline": "resnet18",
                                  "candidate": "vit_small", "vaule": 1.0}]},
     ("dataset", "baseline", "candidate"),
     "claim U1 pair 1: unknown field 'vaule' (did you mean 'value'?)"),
    ({"kind": "every", "pairs": [{"dataset": "digits", "baseline": ["resnet18"],
                                  "candidate": "vit_small"}]},
     ("dataset", "baseline", "candidate"), "claim U1 pair 1: baseline must be one model name"),
    ({"pairs": [{"dataset": "digits", "baseline": "resnet18", "candidate": "vit_small"}]},
     ("baseline", "candidate"), "claim U1: 'dataset' conflicts with 'pairs'"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "drop", "expected"), BAD_COMBINATIONS)
def test_each_bad_combination_gets_a_line_naming_claim_and_field(tmp_path, change, drop, expected):
    claim = {k: v for k, v in {**GOOD, **change}.items() if k not in drop}
    path = _write(tmp_path, [claim])
    with pytest.raises(HarnessError) as err:
        load_claims_file(path, RESULTS)
    first, *lines = str(err.value).splitlines()
    assert first == f"{len(lines)} mistake(s) in claims file {path}:"
    assert any(line.startswith(expected) for line in lines), lines


@pytest.mark.parametrize(
    "change",
    [{"kind": "range", "low": 3.0, "high": -1.0},  # reversed bounds are read as [-1, 3]
     {"metric": "grad_norm_avg", "unit": "rel", "value": 0.2},  # no direction, but a size
     {"metric": "ece", "unit": "rel", "direction": "lower", "value": 0.35},
     {"id": "U9", "text": "quoted id, default unit"}],
)  # fmt: skip
def test_valid_variations_pass(tmp_path, change):
    claim = {**GOOD, **change}
    if "low" in change:
        claim.pop("value")
    claims, _ = load_claims_file(_write(tmp_path, [claim]), RESULTS)
    assert claims[0]["id"] == claim["id"]


def _rope_db(tmp_path) -> str:
    means = {("digits", "resnet18"): 0.90, ("digits", "gradattn_rope"): 0.92}
    return _synthetic_db(tmp_path, "rope.db", means, seeds=4)


def test_report_html_names_the_users_claims_and_their_file(tmp_path, capsys):
    """Structure only: the verdicts themselves belong to harness.report.verdicts."""
    url = _rope_db(tmp_path)
    claims = [{"id": "R1", "text": "RoPE gains 2 pp", "kind": "point", "metric": "top1",
               "dataset": "digits", "baseline": "resnet18", "candidate": "gradattn_rope",
               "value": 2.0, "unit": "pp"},
              {"id": "R2", "text": "RoPE is better", "kind": "directional", "metric": "top1",
               "dataset": "digits", "baseline": "resnet18", "candidate": "gradattn_rope"}]  # fmt: skip
    path = _write(tmp_path, claims)
    out = tmp_path / "reports"
    args = ["report", "--db", url, "--out", str(out), "--claims", str(path), "--name", "r"]
    assert main(args) == 0
    page = (out / "r" / "index.html").read_text(encoding="utf-8")
    assert "R1" in page and "R2" in page and "RoPE gains 2 pp" in page
    assert f"{path} (sha256 " in page
    assert "C19" not in page  # the paper's claims are replaced, not added to


def test_a_missing_claims_file_fails_before_any_report_is_written(tmp_path, capsys):
    url = _rope_db(tmp_path)
    out = tmp_path / "reports"
    code = main(["report", "--db", url, "--out", str(out), "--claims", str(tmp_path / "x.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("harness: error: claims file")
    assert not out.exists() or not any(out.iterdir())  # not even the staging directory



def test_any_two_models_can_be_compared(tmp_path):
    url = f"sqlite:///{tmp_path / 'any.db'}"
    fill_synthetic(make_engine(url), grid_runs({("digits", "mlp_a"): 0.8,
                                                ("digits", "mlp_b"): 0.82}, seeds=range(4)))
    claim = {**GOOD, "baseline": "mlp_a", "candidate": "mlp_b"}
    out = tmp_path / "reports"
    args = ["report", "--db", url, "--out", str(out), "--claims", str(_write(tmp_path, [claim])),
            "--name", "a"]  # fmt: skip
    assert main(args) == 0
    page = (out / "a" / "index.html").read_text(encoding="utf-8")
    assert "U1" in page and "could not be evaluated" not in page


def test_a_claim_can_name_the_swept_setting_it_is_about(tmp_path, capsys):
    """Two settings of a sweep (lr 0.1: +4 pp; lr 0.01: no difference) get a section each; a
    claim naming a setting is judged in its section only, one naming none in every section."""
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    engine = make_engine(url)
    fill_synthetic(engine, grid_runs({("cifar100", "resnet50"): 0.70, ("cifar100", "vit_small"): 0.74},
                                     seeds=range(8), sd=0.004, overrides={"lr": 0.1}))  # fmt: skip
    fill_synthetic(engine, grid_runs({("cifar100", "resnet50"): 0.70, ("cifar100", "vit_small"): 0.70},
                                     seeds=range(8), sd=0.004, overrides={"lr": 0.01}))  # fmt: skip
    at_01 = {**GOOD, "id": "AT01", "dataset": "cifar100", "baseline": "resnet50",
             "value": 4.0, "setting": {"lr": 0.1}}  # fmt: skip
    anywhere = {**at_01, "id": "ANY"}
    anywhere.pop("setting")
    path = _write(tmp_path, [at_01, anywhere])
    assert main(["report", "--db", url, "--out", "-", "--format", "json", "--claims",
                 str(path)]) == 0  # fmt: skip
    claims = json.loads(capsys.readouterr().out)["claims_audit"]["claims"]
    judged = sorted((c["id"], c["arm"], c["verdict"]) for c in claims)
    assert judged == [("ANY", "paper, lr=0.01", "CONTRADICTED"),
                      ("ANY", "paper, lr=0.1", "SUPPORTED"),
                      ("AT01", "paper, lr=0.1", "SUPPORTED")], judged  # fmt: skip
    assert all(c["parts"][0]["n"] == 8 for c in claims)  # never the 16 runs pooled
    wrong = _write(tmp_path, [{**at_01, "setting": {"lr": 0.5}}])
    with pytest.raises(HarnessError) as err:
        load_claims_file(wrong, load_results_of(url))
    assert "claim AT01: no runs have the setting lr=0.5; the settings with runs: lr=0.01; " \
           "lr=0.1" in str(err.value)  # fmt: skip
    with pytest.raises(HarnessError, match="'setting' must be a mapping"):
        load_claims_file(_write(tmp_path, [{**at_01, "setting": "lr=0.1"}]), load_results_of(url))


def load_results_of(url: str) -> pd.DataFrame:
    from harness.report.load import load_results

    return load_results(make_engine(url))
