"""Hyper-parameter tuning with Optuna under an equal trial budget (docs/TUNING.md).

One Optuna study per (protocol, dataset, model), named ``tune/<protocol>/<dataset>/<model>``,
stored through the harness database URL (Optuna adds its own tables; none clash with ours).
Each trial is one real run of the one training loop (harness.training.loop.run_job) with sampled
lr / weight_decay (/ model.dropout) and is scored by its best validation top-1 -- never the
test set: trials call run_job with evaluate_test=False, and a pruned trial stops through
run_job's should_stop path. The read side (best_hparams, study_summaries, the enqueue check) is
harness/tuning/results.py, study names and trial counts harness/tuning/studies.py; the storage and the seeded sampler are harness/tuning/storage.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__
from harness.errors import HarnessError
from harness.tuning.storage import open_storage, seeded_sampler
from harness.tuning.studies import best_trial, finished_counts, study_name

DEFAULT_SEED = 42
PAPER_SPLIT_SEED = 42  # the paper's split (harness.experiment.grids.PAPER_SEED); trials never vary it
# MedianPruner: no pruning until this many trials have finished, so the median is taken over
# enough curves to mean something (Optuna's default).
PRUNE_STARTUP_TRIALS = 5
# Keys the search owns: refused as user overrides of a tuning run and with --hparams tuned.
# max_epochs and hparams are set by the tuner itself.
RESERVED_OVERRIDES = ("max_epochs", "hparams")


@dataclass(frozen=True)
class SearchParam:
    """One searched setting: a dotted override key of harness.experiment.config.resolve_config."""

    name: str
    low: float
    high: float
    log: bool
    model_key: str | None = None  # searched only for models that accept this build override


# The search space, in one place (issue 8): recorded in every study's user attributes.
SEARCH_SPACE: tuple[SearchParam, ...] = (
    SearchParam("lr", 1e-4, 1e-2, log=True),
    SearchParam("weight_decay", 1e-6, 1e-3, log=True),
    SearchParam("model.dropout", 0.0, 0.5, log=False, model_key="dropout"),
)
SEARCHED_KEYS = tuple(p.name for p in SEARCH_SPACE)


def space_for(model: str) -> tuple[SearchParam, ...]:
    """The parameters searched for `model`: dropout only where the model takes it (GradAttn)."""
    from harness import models

    accepted = models.default_overrides(model)
    return tuple(p for p in SEARCH_SPACE if p.model_key is None or p.model_key in accepted)


def default_warmup(epochs: int) -> int:
    """MedianPruner's n_warmup_steps: the first epoch at which a trial may be pruned.

    A quarter of the epochs (at least 1): Adam's early validation accuracy favours large
    learning rates that plateau later, so very early curves are a poor predictor."""
    return max(1, math.ceil(epochs / 4))


@dataclass
class TuneSummary:
    protocol: str
    dataset: str
    model: str
    study: str
    trials_complete: int
    trials_pruned: int
    best_value: float | None  # best validation top-1 (fraction) of a complete trial
    best_params: dict[str, float] = field(default_factory=dict)
    epochs: int = 0
    seed: int = DEFAULT_SEED
    ran: int = 0  # trials this call finished


# --------------------------------------------------------------------------- tuning


class _SurplusTrial(Exception):
    """Another tuner filled the budget between our check and this trial's creation."""


def _check_identity(study: Any, attrs: dict[str, Any]) -> None:
    """A study keeps one set of settings: topping it up with others would mix budgets."""
    stored = study.user_attrs
    differing = [
        f"{key} {stored[key]!r} (now {attrs[key]!r})"
        for key in ("epochs", "seed", "split_seed", "overrides", "space", "pruner")
        if key in stored and stored[key] != attrs[key]
    ]
    if differing:
        raise HarnessError(
            f"study {study.study_name} was tuned with other settings: {'; '.join(differing)}; "
            "rerun with the study's settings, or tune into another database (--db)"
        )


def tune_cell(
    db_url: str,
    protocol: str,
    dataset: str,
    model: str,
    trials: int,
    epochs: int | None = None,
    *,
    seed: int = DEFAULT_SEED,
    data_root: Path,
    device: str = "cpu",
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
    prune_startup: int = PRUNE_STARTUP_TRIALS,
    prune_warmup: int | None = None,
    on_trial: Callable[[Any], None] | None = None,
) -> TuneSummary:
    """Top the study of (protocol, dataset, model) up to `trials` finished trials; summarise it.

    `epochs` defaults to the protocol's max_epochs; `overrides` are extra dotted settings (not
    the searched keys); `prune_warmup` is the first epoch a trial may be pruned at (default a
    quarter of the epochs). Safe to run from several processes on one database at once."""
    import optuna

    from harness.experiment.config import JobSpec, resolve_config
    from harness.store.engine import make_engine
    from harness.training.runtime import check_device, load_data

    overrides = dict(overrides or {})
    _check_cell(protocol, dataset, model, trials, epochs, overrides)
    if prune_startup < 0 or (prune_warmup is not None and prune_warmup < 0):
        raise HarnessError("pruner settings must be >= 0 (--prune-startup, --prune-warmup)")
    check_device(device)
    base = resolve_config(protocol, dataset, model, overrides)
    epochs = base.max_epochs if epochs is None else epochs
    warmup = default_warmup(epochs) if prune_warmup is None else prune_warmup
    space = space_for(model)
    # Before any study is written: the data must load (a failed trial would be half-written).
    probe = JobSpec(model, dataset, seed, PAPER_SPLIT_SEED, protocol, base)
    load_data(probe, data_root)
    make_engine(db_url)  # clear error for an unreachable database; our schema (and WAL) first

    optuna.logging.set_verbosity(optuna.logging.WARNING if progress else optuna.logging.ERROR)
    attrs = {
        "protocol": protocol,
        "dataset": dataset,
        "model": model,
        "epochs": epochs,
        "seed": seed,
        "split_seed": PAPER_SPLIT_SEED,
        "sampler_seed": seed,
        "overrides": {k: overrides[k] for k in sorted(overrides)},
        "space": [{"name": p.name, "low": p.low, "high": p.high, "log": p.log} for p in space],
        "pruner": {"type": "median", "n_startup_trials": prune_startup, "n_warmup_steps": warmup},
        "objective": "max validation top-1 over the trial's epochs",
        "harness_version": __version__,
    }
    name = study_name(protocol, dataset, model)
    study = optuna.create_study(
        storage=open_storage(db_url, heartbeat=True),
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        sampler=seeded_sampler(seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=prune_startup, n_warmup_steps=warmup),
    )
    _check_identity(study, attrs)
    for key, value in attrs.items():
        if key not in study.user_attrs:
            study.set_user_attr(key, value)

    def objective(trial: optuna.Trial) -> float:
        _claim_budget(study, trial, trials)
        sampled = {p.name: trial.suggest_float(p.name, p.low, p.high, log=p.log) for p in space}
        config = resolve_config(
            protocol, dataset, model, {**overrides, **sampled, "max_epochs": epochs}
        )
        spec = JobSpec(model, dataset, seed, PAPER_SPLIT_SEED, protocol, config)
        return _run_trial(trial, spec, device, data_root, progress)

    complete, pruned = finished_counts(study)
    mine: list[int] = []  # trials this process finished (others may tune the study too)
    if complete + pruned < trials:
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        def count(_study: Any, frozen: Any) -> None:
            if frozen.state in (TrialState.COMPLETE, TrialState.PRUNED):
                mine.append(frozen.number)
            if on_trial is not None:
                on_trial(frozen)

        study.optimize(
            objective,
            n_trials=trials - complete - pruned,
            catch=(_SurplusTrial,),
            callbacks=[
                MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                count,
            ],
        )
        complete, pruned = finished_counts(study)
    best_value, best_params = best_trial(study)
    return TuneSummary(
        protocol, dataset, model, name, complete, pruned, best_value, best_params,
        epochs, seed, len(mine),
    )  # fmt: skip


def _check_cell(
    protocol: str,
    dataset: str,
    model: str,
    trials: int,
    epochs: int | None,
    overrides: dict[str, Any],
) -> None:
    from harness import models
    from harness.datasets import DATASET_NAMES
    from harness.experiment.config import PROTOCOLS

    if model not in models.MODEL_NAMES:
        raise HarnessError(f"unknown model {model!r}; valid: {', '.join(models.MODEL_NAMES)}")
    if dataset not in DATASET_NAMES:
        raise HarnessError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASET_NAMES)}")
    if protocol not in PROTOCOLS:
        raise HarnessError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if trials < 1:
        raise HarnessError(f"--trials must be at least 1 (got {trials})")
    if epochs is not None and epochs < 1:
        raise HarnessError(f"--epochs must be at least 1 (got {epochs})")
    owned = [k for k in overrides if k in SEARCHED_KEYS or k in RESERVED_OVERRIDES]
    if owned:
        raise HarnessError(
            f"--set {', '.join(owned)}: the tuner sets these itself (the searched "
            f"{', '.join(SEARCHED_KEYS)}; --epochs for max_epochs); drop them"
        )


def _claim_budget(study: Any, trial: Any, trials: int) -> None:
    """The check before each trial: at most `trials` finished or running ones, counted by
    trial number (Optuna numbers trials in creation order), so concurrent tuners on one
    database never exceed the budget; the loser's trial is marked FAIL and does not count."""
    from optuna.trial import TrialState

    ahead = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    )
    if sum(t.number < trial.number for t in ahead) >= trials:
        trial.set_user_attr("surplus", True)
        study.stop()
        raise _SurplusTrial(f"the study already holds {trials} trials")


def _run_trial(trial: Any, spec: Any, device: str, data_root: Path, progress: bool) -> float:
    """One run of run_job that stops after training (the test split is never evaluated),
    reporting val top-1 each epoch; a pruned trial stops through should_stop."""
    import optuna

    from harness.training.loop import EpochRecord, JobInterrupted, run_job

    pruned = False
    val_acc: list[float] = []

    def on_epoch(record: EpochRecord) -> None:
        nonlocal pruned
        val_acc.append(record.val_acc)
        trial.report(record.val_acc, record.epoch)
        pruned = trial.should_prune() and record.epoch < spec.config.max_epochs

    try:
        run_job(
            spec,
            device=device,
            data_root=data_root,
            on_epoch=on_epoch,
            should_stop=lambda: pruned,
            progress=progress,
            evaluate_test=False,
        )
    except JobInterrupted:
        if not pruned:
            raise
    trial.set_user_attr("val_acc", val_acc)
    trial.set_user_attr("epochs_run", len(val_acc))
    if pruned:
        raise optuna.TrialPruned(f"pruned after epoch {len(val_acc)}")
    return max(val_acc)
