"""Names and counts of tuning studies, shared by the tuner (tune) and its read side (results)."""

from __future__ import annotations

from typing import Any

STUDY_PREFIX = "tune"


def study_name(protocol: str, dataset: str, model: str) -> str:
    return f"{STUDY_PREFIX}/{protocol}/{dataset}/{model}"


def tune_command(
    protocol: str, dataset: str, models: list[str], trials: int, epochs: int | None
) -> str:
    """The exact command that tunes (or tops up) `models` of one cell."""
    parts = ["harness tune", f"--dataset {dataset}", f"--models {' '.join(models)}"]
    if protocol != "paper":
        parts.append(f"--protocol {protocol}")
    parts.append(f"--trials {trials}")
    if epochs is not None:
        parts.append(f"--epochs {epochs}")
    return " ".join(parts)


def finished_counts(study: Any) -> tuple[int, int]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    return complete, len(trials) - complete


def best_trial(study: Any) -> tuple[float | None, dict[str, float]]:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None, {}
    best = max(complete, key=lambda t: (t.value, -t.number))
    return float(best.value), dict(best.params)
