"""The full audit of a grid (`harness demo --full-audit`): both protocols, single-switch runs
where they separate the quirks' effects, equal-budget tuning, and the tuned grid.

Each step is an ordinary harness operation (enqueue, tune, worker, report); this module only
decides what to queue. Grid names in the jobs table say which part of the audit a job belongs
to (``demo``, ``demo/reference-code``, ``demo/switch:<quirk>``, ``demo/tuned``); the job key does
not include the grid name, so an audit reuses the jobs of an earlier `harness demo`.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.experiment.config import QUIRKS, REPORT_TIME_QUIRKS, JobSpec, quirk_applies
from harness.experiment.grids import Grid


@dataclass(frozen=True)
class AuditPart:
    """One part of the audit: a grid name for the jobs table and its job specs."""

    name: str
    specs: list[JobSpec]


def training_quirks(dataset: str, model: str) -> list[str]:
    """The quirks that change the training run of (dataset, model) (report-time ones excluded)."""
    return [
        name
        for name in QUIRKS
        if name not in REPORT_TIME_QUIRKS and quirk_applies(name, dataset, model)
    ]


def switch_specs(grid: Grid, quirk: str) -> list[JobSpec]:
    """`paper` runs with `quirk` alone switched on, for the cells where it applies and where it
    is not the only training quirk (there, reference-code minus paper already is its effect)."""
    cells = tuple(
        (model, dataset)
        for model, dataset in grid.cells
        if quirk in (applicable := training_quirks(dataset, model)) and len(applicable) >= 2
    )
    if not cells:
        return []
    overrides = {**grid.overrides, f"quirk.{quirk}": True}
    return replace(grid, protocol="paper", cells=cells, overrides=overrides).jobs()


def protocol_parts(grid: Grid) -> list[AuditPart]:
    """The grid under `paper` and `reference-code`, and the single-switch runs."""
    paper = replace(grid, protocol="paper")
    reference = replace(grid, protocol="reference-code")
    parts = [
        AuditPart(grid.name, paper.jobs()),
        AuditPart(f"{grid.name}/reference-code", reference.jobs()),
    ]
    for quirk in QUIRKS:
        if quirk in REPORT_TIME_QUIRKS:
            continue
        specs = switch_specs(grid, quirk)
        if specs:
            parts.append(AuditPart(f"{grid.name}/switch:{quirk}", specs))
    return parts


def _tune_one(job: dict[str, Any]) -> Any:
    """One cell's study, in a worker process (one thread: 8x8 digits gain nothing from more)."""
    import torch

    from harness.tuning.tune import tune_cell

    torch.set_num_threads(1)

    def say(trial: Any) -> None:  # a line per trial: tuning is most of an audit's quiet time
        value = "-" if trial.value is None else f"{100 * trial.value:.2f}%"
        print(f"  tune {job['model']}: trial {trial.number + 1}/{job['trials']} "
              f"{trial.state.name.lower()}, val top-1 {value}", flush=True)  # fmt: skip

    return tune_cell(
        job["db_url"],
        job["protocol"],
        job["dataset"],
        job["model"],
        job["trials"],
        job["epochs"],
        seed=job["seed"],
        data_root=job["data_root"],
        device="cpu",
        overrides=job["overrides"],
        on_trial=say,
    )


def tune_grid(
    grid: Grid,
    db_url: str,
    trials: int,
    epochs: int,
    data_root: Path,
    processes: int,
    seed: int = 42,
) -> list[Any]:
    """Tune every model of every cell under the grid's protocol with the same budget.

    Studies are independent (one per cell), so they run `processes` at a time."""
    overrides = {k: v for k, v in grid.overrides.items() if k != "max_epochs"}
    jobs = [
        {
            "db_url": db_url,
            "protocol": grid.protocol,
            "dataset": dataset,
            "model": model,
            "trials": trials,
            "epochs": epochs,
            "seed": seed,
            "data_root": data_root,
            "overrides": overrides,
        }  # fmt: skip
        for model, dataset in grid.cells
    ]
    if processes <= 1:
        return [_tune_one(job) for job in jobs]
    # spawn: a forked child would inherit this process's database connections and torch state.
    import multiprocessing

    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        with ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            return list(pool.map(_tune_one, jobs))
    finally:
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)


def tuned_part(grid: Grid, db_url: str) -> AuditPart:
    """The grid with each model's best tuned settings (`enqueue --hparams tuned`)."""
    from harness.tuning.results import tuned_overrides

    best = tuned_overrides(db_url, grid.protocol, grid.cells)
    cells = {cell: {**params, "hparams": "tuned"} for cell, params in best.items()}
    return AuditPart(f"{grid.name}/tuned", grid.jobs(cells))
