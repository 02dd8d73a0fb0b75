"""`harness tune` and `harness enqueue --hparams tuned`: real Optuna studies in the results
database (SQLite and PostgreSQL), real training trials on the embedded digits set (tiny)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from sqlalchemy import create_engine, inspect, select
from sqlalchemy.orm import Session

from harness.cli import main
from harness.store.engine import make_engine
from harness.store.schema import Job
from harness.tuning.results import best_hparams, study_summaries
from harness.tuning.studies import study_name
from harness.tuning.tune import SEARCH_SPACE, tune_cell

NO_DATA = Path("/nonexistent-data-root")  # digits is embedded
# Two training batches an epoch: each trial costs about a second of CPU.
TINY = {"max_train_batches": 2, "batch_size": 32, "grad_batches": 1}
TINY_SET = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
CELL = ["--dataset", "digits", "--epochs", "2", *TINY_SET]
SPACE = {p.name: p for p in SEARCH_SPACE}


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(states=states)


def _in_space(params: dict[str, float]) -> bool:
    return all(SPACE[k].low <= v <= SPACE[k].high for k, v in params.items())


@pytest.fixture(scope="module")
def tuned_db(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """resnet18 and gradattn_nope on digits: `tune --trials 2`, then topped up to 3."""
    import harness.training.loop

    path = tmp_path_factory.mktemp("tune") / "runs.db"
    url = f"sqlite:///{path}"
    models = ["--models", "resnet18", "gradattn_nope"]
    # A spy, not a stand-in: classification_metrics runs only after a test-split evaluation.
    calls: list[int] = []
    original = harness.training.loop.classification_metrics
    harness.training.loop.classification_metrics = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        first = main(["tune", "--db", url, *models, *CELL, "--trials", "2", "--data", "/x"])
        second = main(["tune", "--db", url, *models, *CELL, "--trials", "3", "--data", "/x"])
    finally:
        harness.training.loop.classification_metrics = original
    return {"url": url, "path": path, "codes": (first, second), "test_evaluations": calls}


def test_tune_tops_up_to_exactly_n_trials_in_the_same_database(tuned_db, capsys):
    url = tuned_db["url"]
    assert tuned_db["codes"] == (0, 0)
    assert tuned_db["test_evaluations"] == []  # tuning never evaluated the test split
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"jobs", "results"} <= tables and {"studies", "trials"} <= tables  # one file

    for model in ("resnet18", "gradattn_nope"):
        study = optuna.load_study(study_name=study_name("paper", "digits", model), storage=url)
        trials = _finished(study)
        assert len(trials) == 3  # 2, then topped up to 3 -- not 2 + 3
        # The top-up did not repeat the first run's proposals (per-trial-number seeding).
        assert len({tuple(sorted(t.params.items())) for t in trials}) == 3
        attrs = study.user_attrs
        assert attrs["epochs"] == 2 and attrs["seed"] == 42 and attrs["split_seed"] == 42
        assert attrs["overrides"] == TINY
        assert all(t.user_attrs["epochs_run"] <= 2 for t in trials)
        best = best_hparams(url, "paper", "digits", model)
        assert best is not None and _in_space(best)
        expected = {"lr", "weight_decay"} | ({"model.dropout"} if "gradattn" in model else set())
        assert set(best) == expected  # dropout only for GradAttn
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert best == max(complete, key=lambda t: t.value).params
        # The objective is the best validation top-1 of the trial's epochs.
        assert all(math.isclose(t.value, max(t.user_attrs["val_acc"])) for t in complete)

    # A third call with the same N runs nothing.
    assert main(["tune", "--db", url, "--model", "resnet18", *CELL, "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "resnet18: 0 trial(s) run now" in out and "best val top-1" in out

    frame = study_summaries(url)
    assert sorted(frame["model"]) == ["gradattn_nope", "resnet18"]
    assert set(frame["trials_complete"] + frame["trials_pruned"]) == {3}
    assert frame["best_value"].between(0, 1).all() and set(frame["epochs"]) == {2}


def test_summaries_of_an_untuned_database_are_empty(sqlite_url):
    make_engine(sqlite_url)
    frame = study_summaries(sqlite_url)
    assert frame.empty and "best_params" in frame.columns and "trials_pruned" in frame.columns
    assert best_hparams(sqlite_url, "paper", "digits", "resnet18") is None
    assert "studies" not in inspect(create_engine(sqlite_url)).get_table_names()  # read only


def test_same_seed_proposes_the_same_first_trial(tmp_path):
    def first_params(name: str, seed: int) -> dict:
        url = f"sqlite:///{tmp_path / name}"
        tune_cell(
            url, "paper", "digits", "resnet18", 1, 1, seed=seed, data_root=NO_DATA,
            overrides={**TINY, "max_train_batches": 1},
        )  # fmt: skip
        study = optuna.load_study(study_name=study_name("paper", "digits", "resnet18"), storage=url)
        return study.trials[0].params

    assert first_params("a.db", 42) == first_params("b.db", 42)
    assert first_params("c.db", 7) != first_params("a.db", 42)


def test_a_poor_trial_is_pruned_and_stops_early(sqlite_url):
    """MedianPruner with n_startup_trials=1 and no warm-up, against a finished trial that
    reached val top-1 1.0 at every epoch: a real trial is worse at epoch 1, so it is pruned
    there and its run stops after 1 of its 3 epochs."""
    make_engine(sqlite_url)
    name = study_name("paper", "digits", "resnet18")
    study = optuna.create_study(storage=sqlite_url, study_name=name, direction="maximize")
    dist = {p.name: optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
            for p in SEARCH_SPACE[:2]}  # fmt: skip
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 1e-3, "weight_decay": 1e-4},
            distributions=dist,
            value=1.0,
            intermediate_values={1: 1.0, 2: 1.0, 3: 1.0},
        )
    )
    summary = tune_cell(
        sqlite_url, "paper", "digits", "resnet18", 2, 3, data_root=NO_DATA, overrides=TINY,
        prune_startup=1, prune_warmup=0,
    )  # fmt: skip
    assert (summary.trials_complete, summary.trials_pruned, summary.ran) == (1, 1, 1)
    pruned = optuna.load_study(study_name=name, storage=sqlite_url).trials[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert pruned.user_attrs["epochs_run"] == 1 and list(pruned.intermediate_values) == [1]


def test_running_trials_of_another_tuner_hold_their_places(sqlite_url):
    """Two trials running elsewhere fill a budget of 2: this tuner's trial is surplus (FAIL,
    not counted) and it trains nothing, so concurrent tuners never exceed N."""
    make_engine(sqlite_url)
    name = study_name("paper", "digits", "resnet18")
    study = optuna.create_study(storage=sqlite_url, study_name=name, direction="maximize")
    study.ask(), study.ask()  # another process's two running trials
    summary = tune_cell(
        sqlite_url, "paper", "digits", "resnet18", 2, 1, data_root=NO_DATA, overrides=TINY
    )
    assert (summary.ran, summary.trials_complete, summary.trials_pruned) == (0, 0, 0)
    third = optuna.load_study(study_name=name, storage=sqlite_url).trials[2]
    assert third.state == optuna.trial.TrialState.FAIL and third.user_attrs["surplus"] is True
    assert "epochs_run" not in third.user_attrs  # no training happened


def _enqueue(url: str, *argv: str) -> int:
    return main(["enqueue", "--grid", "demo", "--db", url, "--seeds", "1", *argv])


def test_enqueue_tuned_uses_each_cells_best_trial(tuned_db, capsys):
    url = tuned_db["url"]
    pair = ["--models", "resnet18", "gradattn_nope"]
    assert _enqueue(url, *pair, "--hparams", "tuned") == 0
    with Session(make_engine(url)) as session:
        jobs = list(session.scalars(select(Job).where(Job.grid == "demo")))
    assert len(jobs) == 2
    for job in jobs:
        best = best_hparams(url, "paper", "digits", job.model)
        assert job.config["hparams"] == "tuned"
        assert job.config["lr"] == best["lr"] and job.config["weight_decay"] == best["weight_decay"]
        assert job.config["model"].get("dropout") == best.get("model.dropout")
        assert job.config["max_epochs"] == 2 and job.config["batch_size"] == 32  # the grid's
    # The paper's settings are other jobs (hparams is part of the key), not a duplicate.
    assert _enqueue(url, *pair) == 0 and "2 new" in capsys.readouterr().out


def test_enqueue_tuned_refuses_untuned_or_unequal_cells(tuned_db, capsys):
    url = tuned_db["url"]
    code = _enqueue(url, "--models", "resnet18", "se_resnet18", "--hparams", "tuned")
    err = capsys.readouterr().err
    assert code == 1 and "se_resnet18/digits (not tuned)" in err
    assert (
        f"harness tune --dataset digits --models se_resnet18 --trials 3 --epochs 2 --db {url}"
        in err
    )

    # A study with fewer finished trials than its siblings: unequal budget.
    study = optuna.create_study(
        storage=url, study_name=study_name("paper", "digits", "cbam_resnet18"),
        direction="maximize",
    )  # fmt: skip
    study.set_user_attr("epochs", 2)
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3}, distributions=dist, value=0.5))
    code = _enqueue(url, "--models", "resnet18", "cbam_resnet18", "--hparams", "tuned")
    err = capsys.readouterr().err
    assert code == 1 and "cbam_resnet18/digits (1 of 3 trials)" in err

    code = _enqueue(url, "--models", "resnet18", "--hparams", "tuned", "--set", "lr=0.01")
    err = capsys.readouterr().err
    assert code == 1 and "--set lr=..." in err and err.count("\n") == 1
    with Session(make_engine(url)) as session:
        assert not list(session.scalars(select(Job).where(Job.model == "cbam_resnet18")))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "resnet99", "--dataset", "digits", "--trials", "2"], "valid: resnet18"),
        (["--model", "resnet18", "--dataset", "nope", "--trials", "2"], "valid: "),
        (["--model", "resnet18", "--dataset", "digits", "--trials", "0"], "--trials must be"),
        (["--model", "resnet18", "--dataset", "digits", "--trials", "1", "--epochs", "0"],
         "--epochs must be"),
        (["--model", "resnet18", "--dataset", "digits", "--trials", "1", "--set", "lr=0.1"],
         "the tuner sets these itself"),
        (["--model", "resnet18", "--dataset", "digits", "--trials", "1",
          "--db", "postgresql+psycopg://u:secret@127.0.0.1:1/x"], "cannot reach database"),
    ],
)  # fmt: skip
def test_tune_refuses_bad_input_in_one_line(argv, message, capsys, sqlite_url):
    db = [] if "--db" in argv else ["--db", sqlite_url]
    assert main(["tune", *db, *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "secret" not in err
    if not db:
        return
    assert "studies" not in inspect(create_engine(sqlite_url)).get_table_names()


def test_tune_stores_the_study_in_postgresql(postgres_url):
    summary = tune_cell(
        postgres_url, "paper", "digits", "resnet18", 1, 1, data_root=NO_DATA,
        overrides={**TINY, "max_train_batches": 1},
    )  # fmt: skip
    assert summary.trials_complete + summary.trials_pruned == 1
    assert "studies" in inspect(create_engine(postgres_url)).get_table_names()
    frame = study_summaries(postgres_url)
    assert list(frame["study"]) == ["tune/paper/digits/resnet18"]
    assert best_hparams(postgres_url, "paper", "digits", "resnet18") == summary.best_params


@pytest.mark.parametrize("backend", ["sqlite_url", "postgres_url"])
def test_tuners_starting_together_on_a_fresh_database_all_open_the_storage(backend, request):
    """Optuna creates its tables and stamps its version without a lock; tuners racing on a
    fresh database must not fail ('table ... already exists' in `demo --full-audit`'s parallel
    tuners; a duplicate alembic_version row in CI)."""
    import subprocess
    import sys
    import time

    url = request.getfixturevalue(backend)
    start = time.time() + 4  # every process imports optuna first, then they open at once
    code = (
        "import sys, time, optuna; from harness.tuning.storage import open_storage; "
        f"time.sleep(max(0.0, {start} - time.time())); open_storage({url!r}); print('ok')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
