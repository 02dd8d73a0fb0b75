"""The report's audit sections on real SQLite databases written by synthetic_db: arms, protocol
differences and switch attribution, claims by arm, tuned vs paper hyper-parameters, variance
sources. Every expected number is computed here by hand from the per-seed values below."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy import stats as sps
from synthetic_db import SyntheticRun, fill_synthetic, replace

from harness.report import export, html
from harness.report.arms import Arm, arm_of, split_arms
from harness.report.audit import build_audit
from harness.report.load import load_results
from harness.report.render import collect
from harness.report.tables import TABLE_SPECS, build_table
from harness.report.variance import variance_table
from harness.store.engine import make_engine

SEEDS = (1, 2, 3)
SILENT = [0.1, None, 0.2, 1e-8]  # two healthy, one silent, one vanishing layer
# (protocol, hparams, quirks, dataset, model) -> top-1 per seed, as fractions.
VALUES = {
    ("paper", "paper", (), "bloodmnist", "resnet18"): [0.80, 0.82, 0.81],
    ("paper", "paper", (), "bloodmnist", "gradattn_rope"): [0.83, 0.84, 0.86],
    ("reference-code", "paper", (), "bloodmnist", "resnet18"): [0.78, 0.79, 0.80],
    ("reference-code", "paper", (), "bloodmnist", "gradattn_rope"): [0.80, 0.83, 0.82],
    ("paper", "tuned", (), "bloodmnist", "resnet18"): [0.84, 0.85, 0.85],
    ("paper", "tuned", (), "bloodmnist", "gradattn_rope"): [0.84, 0.86, 0.85],
    ("paper", "paper", (), "svhn", "resnet18"): [0.90, 0.91, 0.93],
    ("paper", "paper", (), "svhn", "gradattn_rope"): [0.92, 0.92, 0.95],
    ("reference-code", "paper", (), "svhn", "resnet18"): [0.85, 0.87, 0.86],
    ("reference-code", "paper", (), "svhn", "gradattn_rope"): [0.86, 0.88, 0.85],
    # single-switch runs: paper + one quirk on; reference-code with one quirk off
    ("paper", "paper", (("svhn_merge_extra", True),), "svhn", "resnet18"): [0.88, 0.90, 0.90],
    ("reference-code", "paper", (("last_epoch_weights", False),), "svhn", "resnet18"): [
        0.86, 0.89, 0.90,
    ],
}  # fmt: skip
TUNED = {"lr": 3e-4, "weight_decay": 1e-5}


def _runs() -> list[SyntheticRun]:
    runs = []
    for (protocol, hparams, quirks, dataset, model), values in VALUES.items():
        overrides = dict(TUNED) if hparams == "tuned" else {}
        if hparams == "tuned" and model == "gradattn_rope":
            overrides["model.dropout"] = 0.2
        for seed, top1 in zip(SEEDS, values, strict=True):
            runs.append(
                SyntheticRun(
                    model, dataset, seed, protocol=protocol, hparams=hparams,
                    quirks=dict(quirks), overrides=overrides, metrics={"top1": top1},
                    grad_means=SILENT if model == "gradattn_rope" else None,
                    # the paper's bloodmnist rows predate the hparams field
                    legacy_config=(protocol, hparams, dataset) == ("paper", "paper", "bloodmnist"),
                )
            )  # fmt: skip
    return runs


def _diffs(a: tuple, b: tuple) -> np.ndarray:
    return np.array(VALUES[b]) - np.array(VALUES[a])


def _ci(d: np.ndarray) -> tuple[float, float]:
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean() - half, d.mean() + half


@pytest.fixture(scope="module")
def audit_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    engine = make_engine(f"sqlite:///{root / 'audit.db'}")
    ids = fill_synthetic(engine, _runs())
    data = collect(engine, None, "audit", None)  # no figures: they are tested elsewhere
    html.write_html(data, root / "index.html")
    return data, ids, (root / "index.html").read_text(encoding="utf-8")


def _table(data, title_part: str):
    return _table_of(data.audit, title_part)


def _table_of(audit, title_part: str):
    tables = [t for t in audit.tables() if title_part in t.title]
    assert len(tables) == 1, [t.title for t in audit.tables()]
    return tables[0]


def _record(table, **match):
    found = [r for r in table.records if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, match
    return found[0]


def test_arm_of_rows():
    assert arm_of("paper", None, {}) == Arm("paper")  # old rows: paper hyper-parameters
    assert arm_of("paper", "tuned", {}).label == "paper, tuned hyper-parameters"
    on = dict.fromkeys(("corrupt_train_images", "last_epoch_weights", "small_nope_encoder",
                        "svhn_merge_extra", "ghs_count_silent"), True)  # fmt: skip
    assert arm_of("reference-code", "paper", on).is_base
    off = arm_of("reference-code", "paper", {**on, "last_epoch_weights": False})
    assert off.single_switch() == ("last_epoch_weights", False) and not off.has_section
    assert arm_of("paper", "paper", {"svhn_merge_extra": True}).single_switch() == (
        "svhn_merge_extra", True,
    )  # fmt: skip


def test_arms_split_and_variants_stay_out_of_base_tables(audit_data):
    data, ids, page = audit_data
    assert [s.label for s in data.protocols] == [
        "paper", "reference-code", "paper, tuned hyper-parameters",
    ]  # fmt: skip
    paper, ref, tuned = data.protocols
    # 2 datasets x 2 models x 3 seeds in each base arm; the legacy bloodmnist rows are paper.
    assert len(paper.results) == len(ref.results) == 12 and len(tuned.results) == 6
    variant_jobs = {j for run, j in zip(_runs(), ids, strict=True) if run.quirks}
    assert len(variant_jobs) == 6
    for section in data.protocols:
        assert not variant_jobs & set(section.results["job_id"])
        for table in section.tables:
            used = {j for jobs in table.cells["job_ids"] for j in jobs}
            assert not variant_jobs & used
    table3 = paper.tables[0]
    assert table3.cell(("svhn",), "resnet18")["mean"] == pytest.approx(91.333333)
    assert "paper, quirk.svhn_merge_extra=true (3)" in " ".join(data.notes)
    # The tuned section is marked wherever it appears.
    assert 'id="p-paper-tuned-table3"' in page and 'id="p-paper-tuned-claim-C1"' in page
    heading = re.search(r'<h3 id="p-paper-tuned-table3">(.*?)</h3>', page).group(1)
    assert "tuned hyper-parameters" in heading
    assert "tuned hyper-parameters" not in re.search(
        r'<h3 id="p-paper-table3">(.*?)</h3>', page
    ).group(1)


def test_differences_side_by_side_equal_hand_computation(audit_data):
    data, _, _ = audit_data
    side = _table(data, "BloodMNIST: paper vs reference-code")
    rec = _record(side, model="resnet18")
    paper_key = ("paper", "paper", (), "bloodmnist", "resnet18")
    ref_key = ("reference-code", "paper", (), "bloodmnist", "resnet18")
    d = _diffs(paper_key, ref_key)
    top = rec["top1"]
    assert top["n_a"] == top["n_b"] == top["n_pairs"] == 3
    assert top["mean_a"] == pytest.approx(np.mean(VALUES[paper_key]))
    assert top["mean_b"] == pytest.approx(np.mean(VALUES[ref_key]))
    assert top["delta"] == pytest.approx(d.mean())
    assert (top["ci_low"], top["ci_high"]) == pytest.approx(_ci(d))
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert top["p_value"] == pytest.approx(2 * sps.t.sf(abs(t), 2))
    assert top["p_permutation"] == pytest.approx(0.25)  # all 3 negative: 2 of 8 patterns
    assert rec["ece"]["delta"] == pytest.approx(0.0) and rec["epochs_run"]["delta"] == 0
    row = side.plain_rows()[[r["model"] for r in side.records].index("resnet18")]
    assert row[1] == "81.00% (3)" and row[2] == "79.00% (3)" and row[3].startswith("-2.00 pp")
    # The reference-code GHS counts the silent layer (2/4), the paper's does not (2/3).
    rope = _record(_table(data, "SVHN: paper vs reference-code"), model="gradattn_rope")
    assert rope["ghs_1e-6_1e1"]["delta"] == pytest.approx(2 / 4 - 2 / 3)


def _switch(data, dataset: str, model: str, quirk: str) -> dict:
    return _record(_table(data, f"{dataset}: which switch"), model=model, quirk=quirk)


def test_switch_attribution(audit_data):
    data, _, page = audit_data
    # Single-switch runs: paper + svhn_merge_extra - paper, paired by seed.
    rec = _switch(data, "SVHN", "resnet18", "svhn_merge_extra")
    assert rec["applies"] and rec["status"] == "measured"
    (est,) = rec["estimates"]
    d = _diffs(("paper", "paper", (), "svhn", "resnet18"),
               ("paper", "paper", (("svhn_merge_extra", True),), "svhn", "resnet18"))  # fmt: skip
    assert est["delta"] == pytest.approx(d.mean()) and est["n_pairs"] == 3
    assert est["source"].startswith("single-switch runs: paper + quirk.svhn_merge_extra=true")
    # reference-code - reference-code with last_epoch_weights off.
    (est,) = _switch(data, "SVHN", "resnet18", "last_epoch_weights")["estimates"]
    d = _diffs(("reference-code", "paper", (("last_epoch_weights", False),), "svhn", "resnet18"),
               ("reference-code", "paper", (), "svhn", "resnet18"))  # fmt: skip
    assert est["delta"] == pytest.approx(d.mean()) and (est["ci_low"], est["ci_high"]) == (
        pytest.approx(_ci(d))
    )
    # Two training switches apply to SVHN/RoPE and none was run alone: not separated.
    rec = _switch(data, "SVHN", "gradattn_rope", "svhn_merge_extra")
    assert rec["estimates"] == [] and rec["status"].startswith(
        "not separated: run `harness enqueue"
    )
    assert "--models gradattn_rope --seed-list 1,2,3" in rec["status"]
    assert rec["status"].endswith("--set quirk.svhn_merge_extra=true`")
    # BloodMNIST: last_epoch_weights is the only training switch, so it takes the whole Δ.
    rec = _switch(data, "BloodMNIST", "gradattn_rope", "last_epoch_weights")
    assert rec["status"] == "attributed" and "only training switch" in rec["estimates"][0]["source"]
    d = _diffs(("paper", "paper", (), "bloodmnist", "gradattn_rope"),
               ("reference-code", "paper", (), "bloodmnist", "gradattn_rope"))  # fmt: skip
    assert rec["estimates"][0]["delta"] == pytest.approx(d.mean())
    rec = _switch(data, "BloodMNIST", "resnet18", "corrupt_train_images")
    assert not rec["applies"] and rec["status"] == "does not apply"
    assert "only training switch that applies here" in page


def test_ghs_count_silent_effect_from_gradient_rows(audit_data):
    data, _, _ = audit_data
    rec = _switch(data, "SVHN", "gradattn_rope", "ghs_count_silent")
    assert rec["kind"] == "report-time" and len(rec["estimates"]) == 2  # paper and ref runs
    for est in rec["estimates"]:
        assert est["delta"] == pytest.approx(2 / 4 - 2 / 3) and est["runs_with_silent"] == 3
    (paper_est, _) = rec["estimates"]
    assert "stored gradient rows of the paper runs" in paper_est["source"]
    rec = _switch(data, "SVHN", "resnet18", "ghs_count_silent")  # no silent layer: no effect
    assert all(e["delta"] == 0 and e["runs_with_silent"] == 0 for e in rec["estimates"])


def test_claims_by_arm_links_to_each_arms_details(audit_data):
    data, _, page = audit_data
    table = data.audit.claims_by_arm
    assert table.header == ["Claim", "paper", "reference-code", "paper, tuned hyper-parameters"]
    ids = [c.id for c in data.protocols[0].claims]
    assert [r["claim"] for r in table.records] == ids
    for section, column in zip(data.protocols, range(1, 4), strict=True):
        verdicts = {c.id: c.verdict for c in section.claims}
        for row, rec in zip(table.rows, table.records, strict=True):
            assert row[column]["text"] == verdicts[rec["claim"]]
            anchor = row[column]["href"].removeprefix("#")
            assert anchor == f"{section.anchor}-claim-{rec['claim']}" and f'id="{anchor}"' in page


def test_tuned_vs_paper_and_the_gap_under_both(audit_data):
    data, _, _ = audit_data
    cells = _table(data, "top-1 with paper vs tuned")
    rec = _record(cells, dataset="bloodmnist", model="gradattn_rope")
    d = _diffs(("paper", "paper", (), "bloodmnist", "gradattn_rope"),
               ("paper", "tuned", (), "bloodmnist", "gradattn_rope"))  # fmt: skip
    assert rec["delta"]["delta"] == pytest.approx(d.mean()) and rec["delta"]["n_pairs"] == 3
    assert (rec["lr"], rec["weight_decay"], rec["dropout"]) == ("0.0003", "1e-05", "0.2")
    assert rec["paper_hparams"] == "0.001 / 0.0001 / model default"
    assert _record(cells, dataset="bloodmnist", model="resnet18")["dropout"] == "model default"
    gaps = _record(_table(data, "GradAttn variant − ResNet-18"), variant="gradattn_rope")
    before = _diffs(("paper", "paper", (), "bloodmnist", "resnet18"),
                    ("paper", "paper", (), "bloodmnist", "gradattn_rope"))  # fmt: skip
    after = _diffs(("paper", "tuned", (), "bloodmnist", "resnet18"),
                   ("paper", "tuned", (), "bloodmnist", "gradattn_rope"))  # fmt: skip
    assert gaps["gap_paper"] == pytest.approx(before.mean())
    assert gaps["gap_tuned"] == pytest.approx(after.mean())
    assert gaps["gap_tuned_ci"] == pytest.approx(list(_ci(after)))
    assert gaps["change"] == pytest.approx(after.mean() - before.mean())
    assert gaps["verdict"] == "gain not shown with tuned hyper-parameters (interval includes 0)"
    assert gaps["equal_budget"] == "no tuning study in this database"


def test_exports_carry_the_audit_sections(audit_data):
    data, _, _ = audit_data
    report = json.loads(json.dumps(export.report_json(data)))
    assert set(report["protocols"]) == {"paper", "reference-code", "paper, tuned hyper-parameters"}
    assert report["protocols"]["paper, tuned hyper-parameters"]["arm"]["hparams"] == "tuned"
    titles = [t["title"] for t in report["audit"]["differences"]]
    assert "SVHN: which switch moves which number" in titles
    assert report["audit"]["claims_by_arm"]["header"][3] == "paper, tuned hyper-parameters"
    markdown = export.markdown(data)
    for heading in ("## Protocol differences", "### SVHN: paper vs reference-code",
                    "## Tuned vs paper hyper-parameters", "### Variance sources per cell",
                    "## Protocol paper, tuned hyper-parameters",
                    "### Table 3. Top-1 accuracy (%) (tuned hyper-parameters)"):  # fmt: skip
        assert heading in markdown
    latex = export.latex(data)
    for heading in (r"\subsection*{Protocol differences}", "SVHN: paper vs reference-code",
                    r"\subsection*{Tuned vs paper hyper-parameters}", "Variance sources per cell"):  # fmt: skip
        assert heading in latex
    assert latex.count(r"\begin{longtable}") == latex.count(r"\end{longtable}")
    csv = export.cells_frame(data)
    assert set(csv["hparams"]) == {"paper", "tuned"}


def test_variance_sources_fixed_varied_and_official_splits(sqlite_url):
    engine = make_engine(sqlite_url)
    same = {"dataset_digest": "d0"}
    runs = [SyntheticRun("resnet18", "digits", s, split_seed=42) for s in SEEDS]
    runs += [SyntheticRun("gradattn_rope", "digits", s, split_seed=s) for s in SEEDS]
    # MedMNIST-like: the split seed follows the run seed, the data digest does not change.
    runs += [
        SyntheticRun("resnet18", "bloodmnist", s, split_seed=s, provenance=same) for s in SEEDS
    ]
    runs += [SyntheticRun("gradattn_rope", "svhn", 1)]
    # Runs that recorded their Table 2 augmentation: none for SVHN, so nothing random to vary.
    plain = {"dataset_digest": "d1", "train_augment": []}
    runs += [SyntheticRun("resnet18", "svhn", s, provenance=plain) for s in SEEDS]
    fill_synthetic(engine, runs)
    results = load_results(engine)
    records, note = variance_table(results)
    by_cell = {(r["dataset"], r["model"]): r for r in records}
    fixed = by_cell[("digits", "resnet18")]
    assert (fixed["init"], fixed["order"], fixed["augmentation"], fixed["split"]) == (
        True, True, True, False,
    )  # fmt: skip
    varied = by_cell[("digits", "gradattn_rope")]
    assert varied["split"] and varied["vary_split"] and varied["split_seeds"] == [1, 2, 3]
    official = by_cell[("bloodmnist", "resnet18")]
    assert not official["split"] and "same data" in official["split_note"]
    single = by_cell[("svhn", "gradattn_rope")]
    assert not any(single[s] for s in ("init", "order", "augmentation", "split"))
    unaugmented = by_cell[("svhn", "resnet18")]
    assert unaugmented["init"] and not unaugmented["augmentation"]
    assert "no training augmentation" in unaugmented["split_note"]
    assert note.startswith("Covered in some cells only: init, order, augmentation, split")
    cell = build_table(TABLE_SPECS[0], results).cell(("digits",), "resnet18")  # Table 3
    assert cell["variance"].startswith("varies: init, order, augmentation; fixed: split")


def _study(url: str, dataset: str, model: str, values: list[float | None], epochs: int) -> None:
    """A real Optuna study as `harness tune` names it; a None value is a pruned trial."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from harness.tuning.studies import study_name

    study = optuna.create_study(
        storage=url, study_name=study_name("paper", dataset, model), direction="maximize"
    )
    for key, value in {"protocol": "paper", "dataset": dataset, "model": model,
                       "epochs": epochs, "seed": 42}.items():  # fmt: skip
        study.set_user_attr(key, value)
    for value in values:
        state = TrialState.PRUNED if value is None else TrialState.COMPLETE
        study.add_trial(
            create_trial(
                params={"lr": 1e-3}, distributions={"lr": FloatDistribution(1e-5, 1e-2, log=True)},
                value=value, state=state,
            )
        )  # fmt: skip


def test_tuning_summary_and_equal_budget_check(sqlite_url):
    import optuna

    from harness.report.tuned import tuning_table

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    engine = make_engine(sqlite_url)
    table, why = tuning_table(engine)
    assert table is None  # a database that was never tuned has no summary
    _study(sqlite_url, "bloodmnist", "resnet18", [0.8, 0.9, None], epochs=10)
    _study(sqlite_url, "bloodmnist", "gradattn_rope", [0.85, 0.7], epochs=10)
    _study(sqlite_url, "svhn", "resnet18", [0.95], epochs=5)
    _study(sqlite_url, "svhn", "gradattn_rope", [None], epochs=5)
    table, why = tuning_table(engine)
    assert why == "" and len(table.records) == 4
    blood = _record(table, dataset="bloodmnist", model="resnet18")
    assert (blood["trials_complete"], blood["trials_pruned"]) == (2, 1)
    assert blood["best_value"] == pytest.approx(0.9)
    assert blood["equal_budget"] == (
        "no: gradattn_rope 2 trials, 10 epochs; resnet18 3 trials, 10 epochs"
    )
    assert _record(table, dataset="svhn", model="gradattn_rope")["equal_budget"] == "yes"
    # The gap table names the budget check of its (protocol, dataset).
    fill_synthetic(engine, [run for run in _runs() if run.dataset == "svhn" and not run.quirks
                            and run.protocol == "paper"])  # fmt: skip
    fill_synthetic(engine, [replace(run, hparams="tuned") for run in _runs()
                            if run.dataset == "svhn" and run.protocol == "paper" and not run.quirks])  # fmt: skip
    audit = build_audit(split_arms(load_results(engine)), [], engine)
    gap = _record(_table_of(audit, "GradAttn variant"), dataset="svhn")
    assert gap["equal_budget"] == "yes" and audit.tuning is not None
