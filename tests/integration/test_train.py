"""run_job end to end on the embedded digits set (CPU): restore, resume, seeds, interruption.

Three short real trainings are shared by the tests of this module (about 6 s of CPU each):
A = a seed whose run stops early, uninterrupted; B = the same seed stopped after epoch 1 and
resumed from its checkpoint; C = another such seed with the quirk last_epoch_weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from harness.errors import HarnessError
from harness.experiment.config import JobSpec, resolve_config
from harness.training.checkpoint import save_checkpoint
from harness.training.loop import EpochRecord, JobInterrupted, evaluate, restore_model, run_job
from harness.training.metrics import METRIC_KEYS, classification_metrics
from harness.training.runtime import determinism, load_data, make_loader

MODEL = "gradattn_nope"
# Small and noisy on purpose: a high learning rate and es_patience 1 make early stopping
# likely, so that the best epoch and the last epoch differ. Seeds 4 and 6 stop early on the
# development machine; other CPUs may round differently, so the fixture takes the first
# candidate seed that does (and fails loudly if none does).
CANDIDATE_SEEDS = (4, 6, 3, 5)
OVERRIDES = {
    "max_epochs": 3,
    "max_train_batches": 2,
    "batch_size": 32,
    "grad_batches": 1,
    "lr": 3e-2,
    "es_patience": 1,
    "model.d_model": 32,
    "model.nhead": 4,
    "model.dim_feedforward": 32,
}
NO_DATA = Path("/nonexistent-data-root")  # digits is embedded: nothing is read from disk
LAST = {"quirk.last_epoch_weights": True}


def _spec(seed: int, **extra: object) -> JobSpec:
    config = resolve_config("paper", "digits", MODEL, {**OVERRIDES, **extra})
    return JobSpec(MODEL, "digits", seed, 42, "paper", config)


def _without_times(records: list[EpochRecord]) -> list[dict]:
    return [
        {k: v for k, v in dataclasses.asdict(r).items() if not k.endswith("seconds")}
        for r in records
    ]


def _recorded_run(seed: int, path: Path, **extra: object) -> dict:
    reported: list[EpochRecord] = []
    checkpoint_epochs: list[int] = []

    def on_epoch(record: EpochRecord) -> None:
        reported.append(record)
        # The checkpoint of this epoch is on disk before the worker hears of it.
        checkpoint_epochs.append(torch.load(path, weights_only=True)["epoch"])

    outcome = run_job(
        _spec(seed, **extra), data_root=NO_DATA, checkpoint_path=path, on_epoch=on_epoch
    )
    return {
        "seed": seed,
        "outcome": outcome,
        "checkpoint": path,
        "reported": reported,
        "checkpoint_epochs": checkpoint_epochs,
    }


def _first_early_stop(seeds: tuple[int, ...], tmp: Path, tag: str, **extra: object) -> dict:
    for seed in seeds:
        run = _recorded_run(seed, tmp / f"{tag}-{seed}.pt", **extra)
        if run["outcome"].best_epoch < run["outcome"].epochs_run:
            return run
    pytest.fail(f"no seed of {seeds} stopped early on this machine: choose other seeds")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("train")
    a = _first_early_stop(CANDIDATE_SEEDS, tmp, "a")
    c = _first_early_stop(tuple(s for s in CANDIDATE_SEEDS if s != a["seed"]), tmp, "c", **LAST)

    done: list[int] = []
    with pytest.raises(JobInterrupted):
        run_job(
            _spec(a["seed"]),
            data_root=NO_DATA,
            checkpoint_path=tmp / "b.pt",
            on_epoch=lambda r: done.append(r.epoch),
            should_stop=lambda: bool(done),
        )
    b_before_resume = torch.load(tmp / "b.pt", weights_only=True)
    b = run_job(_spec(a["seed"]), data_root=NO_DATA, checkpoint_path=tmp / "b.pt")
    return {"a": a, "c": c, "b": b, "b_before_resume": b_before_resume}


def _fresh_test_metrics(spec: JobSpec, state: dict) -> dict:
    """Evaluate `state` on the test split from scratch, outside run_job."""
    data = load_data(spec, NO_DATA)
    model = restore_model(spec, data.meta, state)
    loader = make_loader(data.test, data.meta, spec.config, train=False, device="cpu")
    with determinism(True, "cpu"):
        result = evaluate(model, loader, torch.device("cpu"))
    return classification_metrics(result.logits, result.labels, data.meta.num_classes)


def test_outcome_shape(runs: dict) -> None:
    run = runs["a"]
    a = run["outcome"]
    assert list(a.metrics) == list(METRIC_KEYS)
    assert a.epochs_run == len(a.epochs) and 1 <= a.best_epoch <= a.epochs_run
    assert [r.epoch for r in a.epochs] == list(range(1, a.epochs_run + 1))
    assert a.epochs == run["reported"]  # on_epoch saw every record
    assert run["checkpoint_epochs"] == [r.epoch for r in a.epochs]
    best, last = a.epochs[a.best_epoch - 1], a.epochs[-1]
    assert a.gen_gap_best == best.train_acc - best.val_acc
    assert a.gen_gap_last == last.train_acc - last.val_acc
    assert a.best_epoch == max(a.epochs, key=lambda r: r.val_acc).epoch  # first maximum
    assert a.epochs[0].lr == pytest.approx(3e-2)
    state = torch.load(run["checkpoint"], weights_only=True)
    spec = _spec(run["seed"])
    model = restore_model(spec, load_data(spec, NO_DATA).meta, state["model"])
    assert a.params == sum(p.numel() for p in model.parameters())
    attention = a.extra["attention_by_token"]
    assert len(attention) == 3 and all(len(layer) == 5 for layer in attention)
    assert all(sum(layer) == pytest.approx(1.0) for layer in attention)
    assert a.provenance["dataset_digest"] == load_data(spec, NO_DATA).meta.digest
    assert a.provenance["determinism"]["deterministic_algorithms"] is True
    assert a.provenance["train_augment"] == []  # digits: Table 2 gives it no augmentation
    # run_job restores the process's determinism flags afterwards.
    assert not torch.are_deterministic_algorithms_enabled()


def test_early_stopping_restores_the_best_weights(runs: dict) -> None:
    run = runs["a"]
    a = run["outcome"]
    assert a.epochs_run == a.best_epoch + 1  # es_patience 1
    assert a.evaluated_epoch == a.best_epoch
    state = torch.load(run["checkpoint"], weights_only=True)
    assert a.metrics == _fresh_test_metrics(_spec(run["seed"]), state["best_state"])
    # The last epoch's weights (the live model in the checkpoint) give other numbers.
    assert a.metrics != _fresh_test_metrics(_spec(run["seed"]), state["model"])


def test_quirk_evaluates_the_last_epoch(runs: dict) -> None:
    run = runs["c"]
    c = run["outcome"]
    assert c.evaluated_epoch == c.epochs_run > c.best_epoch
    state = torch.load(run["checkpoint"], weights_only=True)
    assert c.metrics == _fresh_test_metrics(_spec(run["seed"], **LAST), state["model"])
    assert c.metrics != _fresh_test_metrics(_spec(run["seed"], **LAST), state["best_state"])


def test_resume_equals_an_uninterrupted_run(runs: dict) -> None:
    # Also the same-seed check: B's first epoch ran from scratch with A's seed.
    a, b = runs["a"]["outcome"], runs["b"]
    assert runs["b_before_resume"]["epoch"] == 1  # epoch 2 was abandoned mid-way
    assert b.extra["resumed_after_epoch"] == 1
    assert b.metrics == a.metrics  # bitwise on the CPU
    assert _without_times(b.epochs) == _without_times(a.epochs)
    assert (b.best_epoch, b.epochs_run, b.evaluated_epoch) == (
        a.best_epoch,
        a.epochs_run,
        a.evaluated_epoch,
    )
    assert b.gradient_layers == a.gradient_layers
    assert b.extra["attention_by_token"] == a.extra["attention_by_token"]


def test_seed_changes_the_run(runs: dict) -> None:
    a, c = runs["a"]["outcome"], runs["c"]["outcome"]
    assert runs["a"]["seed"] != runs["c"]["seed"]
    assert a.epochs[0].train_loss != c.epochs[0].train_loss
    assert a.gradient_layers != c.gradient_layers


def test_checkpoint_of_another_job_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    save_checkpoint(path, {"job_key": "someone-else", "epoch": 1})
    with pytest.raises(HarnessError, match="belongs to job someone-else"):
        run_job(_spec(4), data_root=NO_DATA, checkpoint_path=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(HarnessError, match="delete it"):
        run_job(_spec(4), data_root=NO_DATA, checkpoint_path=path)


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(HarnessError, match="max_epochs=0"):
        run_job(_spec(0, max_epochs=0), data_root=NO_DATA)
    with pytest.raises(HarnessError, match="precision"):
        run_job(_spec(0, precision="fp8"), data_root=NO_DATA)
    with pytest.raises(HarnessError, match="device"):
        run_job(_spec(4), device="tpu", data_root=NO_DATA)
    # digits trains on 1257 images: 157 x 8 + 1 would end each epoch on a batch of one.
    with pytest.raises(HarnessError, match=r"batch_size=8 leaves a last training batch of one"):
        run_job(_spec(0, batch_size=8, max_train_batches=None), data_root=NO_DATA)


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "job.pt"
    save_checkpoint(path, {"job_key": "k", "epoch": 1})
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for a lambda
        save_checkpoint(path, {"job_key": "k", "epoch": 2, "bad": lambda: None})
    # The failed write left the previous checkpoint whole and no temporary file behind.
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["job.pt"]


def test_dataset_is_cached_per_job_data() -> None:
    first = load_data(_spec(4), NO_DATA)
    assert load_data(_spec(5), NO_DATA) is first  # same set, another seed: no reload
    other_split = JobSpec(MODEL, "digits", 4, 7, "paper", _spec(4).config)
    reloaded = load_data(other_split, NO_DATA)
    assert reloaded is not first and reloaded.meta.digest != first.meta.digest


def test_training_only_run_never_touches_the_test_split(monkeypatch):
    """evaluate_test=False (tuning trials): same epochs as a full run, no test metrics."""
    import harness.training.loop

    def no_test(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the test split was evaluated")

    spec = _spec(4, max_epochs=2)
    full = run_job(spec, data_root=NO_DATA)
    monkeypatch.setattr(harness.training.loop, "classification_metrics", no_test)
    monkeypatch.setattr(harness.training.loop, "measure_gradients", no_test)
    trained = run_job(spec, data_root=NO_DATA, evaluate_test=False)
    assert trained.metrics == {} and trained.gradient_layers == []
    assert trained.extra["test_evaluated"] is False
    assert _without_times(trained.epochs) == _without_times(full.epochs)
    assert trained.best_epoch == full.best_epoch and trained.gen_gap_best == full.gen_gap_best
