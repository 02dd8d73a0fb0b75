"""The read side of `harness tune`: best settings per cell, study summaries, the equal-budget
check of `harness enqueue --hparams tuned` (docs/TUNING.md).

Reading never creates Optuna's tables: a database that was never tuned reads as "no studies".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.errors import HarnessError
from harness.tuning.studies import (
    STUDY_PREFIX,
    best_trial,
    finished_counts,
    study_name,
    tune_command,
)

SUMMARY_COLUMNS = (
    "protocol",
    "dataset",
    "model",
    "study",
    "trials_complete",
    "trials_pruned",
    "best_value",
    "best_params",
    "epochs",
    "seed",
)


def _read_storage(db_url_or_engine: Any) -> Any | None:
    """Optuna's storage on the database, or None when it holds no Optuna tables."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.engine import Engine

    from harness.tuning.storage import open_storage, storage_url

    url = storage_url(db_url_or_engine)
    engine = db_url_or_engine if isinstance(db_url_or_engine, Engine) else create_engine(url)
    try:
        present = inspect(engine).has_table("studies")
    except Exception as exc:
        from harness.store.connection import mask_url

        raise HarnessError(
            f"cannot read tuning studies from {mask_url(url)}: {str(exc).splitlines()[0]}; "
            "check --db / HARNESS_DB"
        ) from None
    finally:
        if engine is not db_url_or_engine:
            engine.dispose()
    return open_storage(url) if present else None


def _load(storage: Any, name: str) -> Any | None:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no study of that name
        return None


def best_hparams(
    db_url_or_engine: Any, protocol: str, dataset: str, model: str
) -> dict[str, float] | None:
    """The best complete trial's settings as dotted overrides ({"lr": ..., "weight_decay": ...,
    "model.dropout": ...}), or None when the cell has no study or no complete trial."""
    storage = _read_storage(db_url_or_engine)
    if storage is None:
        return None
    study = _load(storage, study_name(protocol, dataset, model))
    if study is None:
        return None
    value, params = best_trial(study)
    return params if value is not None else None


def study_summaries(db_url_or_engine: Any) -> Any:
    """One row per tuning study (columns SUMMARY_COLUMNS; best_value is the best validation
    top-1 as a fraction); an empty frame with the same columns when nothing was tuned."""
    import optuna
    import pandas as pd

    storage = _read_storage(db_url_or_engine)
    rows = []
    names = (
        []
        if storage is None
        else sorted(
            s.study_name
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
            if s.study_name.startswith(f"{STUDY_PREFIX}/")
        )
    )
    for name in names:
        study = _load(storage, name)
        if study is None:  # deleted in between
            continue
        attrs = study.user_attrs
        _, protocol, dataset, model = (name.split("/", 3) + ["", "", ""])[:4]
        complete, pruned = finished_counts(study)
        best_value, best_params = best_trial(study)
        rows.append(
            {
                "protocol": attrs.get("protocol", protocol),
                "dataset": attrs.get("dataset", dataset),
                "model": attrs.get("model", model),
                "study": name,
                "trials_complete": complete,
                "trials_pruned": pruned,
                "best_value": best_value,
                "best_params": best_params,
                "epochs": attrs.get("epochs"),
                "seed": attrs.get("seed"),
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def tuned_overrides(
    db_url_or_engine: Any,
    protocol: str,
    cells: Iterable[tuple[str, str]],
    *,
    db_option: str = "",
) -> dict[tuple[str, str], dict[str, float]]:
    """The best settings of every (model, dataset) cell, under an equal budget.

    Refused (one HarnessError listing the cells and the `harness tune` command to run): a
    cell without a study or a complete trial, a cell with fewer finished trials than another
    model's study of the same (protocol, dataset), or studies of one dataset tuned with
    different epoch counts. `db_option` (e.g. " --db URL") is appended to the command."""
    summaries = study_summaries(db_url_or_engine)
    summaries = summaries[summaries["protocol"] == protocol]
    cells = list(cells)
    studies = {(r.model, r.dataset): r for r in summaries.itertuples(index=False)}
    problems: list[str] = []
    commands: list[str] = []
    for dataset in dict.fromkeys(d for _, d in cells):
        wanted = [m for m, d in cells if d == dataset]
        siblings = [r for (m, d), r in studies.items() if d == dataset]
        budget = max((r.trials_complete + r.trials_pruned for r in siblings), default=None)
        epoch_counts = sorted({int(r.epochs) for r in siblings if r.epochs is not None})
        if len(epoch_counts) > 1:
            problems.append(
                f"{dataset}: studies tuned with different --epochs ({', '.join(map(str, epoch_counts))}:"
                f" {', '.join(f'{r.model}={r.epochs}' for r in siblings)}); tune every model of "
                "the cell with one --epochs, in another database"
            )
            continue
        short: list[str] = []
        for model in wanted:
            row = studies.get((model, dataset))
            if row is None:
                short.append(model)
                problems.append(f"{model}/{dataset} (not tuned)")
            elif row.trials_complete + row.trials_pruned < (budget or 0):
                short.append(model)
                problems.append(
                    f"{model}/{dataset} ({row.trials_complete + row.trials_pruned} of "
                    f"{budget} trials)"
                )
            elif row.trials_complete == 0:
                problems.append(
                    f"{model}/{dataset} (no complete trial: tune every model of the cell "
                    "with a larger --trials)"
                )
        if short:
            epochs = epoch_counts[0] if epoch_counts else None
            trials = budget if budget is not None else "N"
            commands.append(
                tune_command(protocol, dataset, short, trials, epochs)  # type: ignore[arg-type]
                + db_option
            )
    if problems:
        run = f"; run: {' ; '.join(commands)}" if commands else ""
        raise HarnessError(
            f"--hparams tuned needs every cell tuned with the same budget: {', '.join(problems)}"
            + run
        )
    return {(m, d): dict(studies[(m, d)].best_params) for m, d in cells}
