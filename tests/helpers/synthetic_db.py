"""Synthetic but real results databases for the report tests.

`fill_synthetic(engine, runs)` writes Job, Result, EpochRow and GradientLayer rows through
harness.store.schema's ORM, exactly as a worker would leave them, for chosen (protocol, dataset, model,
seed) cells and metric values. `grid_runs` spreads each cell's seeds symmetrically around a
chosen mean, so a test knows the mean and SD the report must print.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from harness import __version__
from harness.experiment.config import JobSpec, resolve_config
from harness.store.schema import EpochRow, GradientLayer, Job, Result

GRADATTN_MODELS = ("gradattn_nope", "gradattn_learnable", "gradattn_rope")
# Output-mode layers of a small synthetic model: (name, kind).
OUTPUT_LAYERS = [(f"layer{i}.conv", "Conv2d") for i in range(8)] + [("fc", "Linear")]


@dataclass
class SyntheticRun:
    """One job and (when status is done) its result; metrics are FRACTIONS like the DB."""

    model: str
    dataset: str
    seed: int
    protocol: str = "paper"
    split_seed: int = 0
    grid: str = "synthetic"
    status: str = "done"
    metrics: dict[str, float] = field(default_factory=dict)  # Result columns to override
    epochs: int = 4
    best_epoch: int | None = None  # default: the last epoch
    grad_means: list[float | None] | None = None  # output mode; None entry = silent layer
    param_grad_means: list[float] | None = None
    quirks: dict[str, bool] = field(default_factory=dict)
    device: str = "cpu"
    slots: int = 1
    error: str | None = None
    extra: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    key: str | None = None
    hparams: str = "paper"  # "tuned": the arm of `harness enqueue --hparams tuned`
    overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"lr": 3e-4}
    legacy_config: bool = False  # a config written before TrainConfig had `hparams`


def _default_metrics(run: SyntheticRun) -> dict[str, Any]:
    top1 = float(run.metrics.get("top1", 0.8))
    best = run.best_epoch or run.epochs
    return {
        "top1": top1,
        "top3": min(1.0, top1 + 0.1),
        "top5": min(1.0, top1 + 0.15),
        "precision_macro": top1 - 0.01,
        "recall_macro": top1 - 0.02,
        "f1_macro": top1 - 0.015,
        "precision_weighted": top1,
        "recall_weighted": top1,
        "f1_weighted": top1 - 0.005,
        "ece": 0.05,
        "nll": 0.6,
        "gen_gap_best": 0.03,
        "gen_gap_last": 0.05,
        "best_epoch": best,
        "epochs_run": run.epochs,
        "evaluated_epoch": best,
        "epoch_seconds": 10.0,
        "train_seconds": 8.0,
        "eval_seconds": 2.0,
        "params": 11_000_000,
        "slots": run.slots,
    }


def _key(run: SyntheticRun, config: Any) -> str:
    spec = JobSpec(run.model, run.dataset, run.seed, run.split_seed, run.protocol, config)
    # The grid is not part of a real job's identity; mixing it in lets a test hold the same
    # cell under two grid names without a unique-key clash.
    return hashlib.sha256(f"{spec.key()}|{run.grid}".encode()).hexdigest()[:32]


def fill_synthetic(engine: Engine, runs: Iterable[SyntheticRun | Mapping[str, Any]]) -> list[int]:
    """Write the runs as real rows; returns their job ids in order."""
    ids: list[int] = []
    start = datetime(2026, 1, 1, 12, 0, 0)
    with Session(engine) as session:
        for i, item in enumerate(runs):
            run = item if isinstance(item, SyntheticRun) else SyntheticRun(**dict(item))
            overrides = {f"quirk.{name}": on for name, on in run.quirks.items()}
            overrides.update(run.overrides)
            if run.hparams != "paper":
                overrides["hparams"] = run.hparams
            config = resolve_config(run.protocol, run.dataset, run.model, overrides)
            config_dict = config.to_dict()
            if run.legacy_config:
                config_dict.pop("hparams")
            job = Job(
                key=run.key or _key(run, config),
                grid=run.grid,
                model=run.model,
                dataset=run.dataset,
                seed=run.seed,
                split_seed=run.split_seed,
                protocol=run.protocol,
                config=config_dict,
                harness_version=__version__,
                status=run.status,
                attempts=0 if run.status == "queued" else 1,
                device=None if run.status == "queued" else run.device,
                error=run.error,
                started_at=None if run.status == "queued" else start + timedelta(minutes=i),
                finished_at=start + timedelta(minutes=i + 1) if run.status == "done" else None,
            )
            session.add(job)
            session.flush()
            ids.append(job.id)
            if run.status != "done":
                continue
            metrics = {**_default_metrics(run), **run.metrics}
            _add_epochs(session, job.id, run, metrics)
            _add_gradients(session, job.id, run)
            session.add(
                Result(
                    job_id=job.id,
                    device=run.device,
                    provenance=run.provenance
                    or {"git_commit": "abc1234", "git_dirty": False, "torch": "2.14.1"},
                    extra=run.extra if run.extra is not None else _default_extra(run),
                    **metrics,
                )
            )
        session.commit()
    return ids


def _add_epochs(session: Session, job_id: int, run: SyntheticRun, metrics: dict) -> None:
    # Curves rising towards the test top-1, with the train curve above by the gen gap.
    for epoch in range(1, run.epochs + 1):
        frac = epoch / run.epochs
        val = metrics["top1"] * (0.6 + 0.4 * frac)
        session.add(
            EpochRow(
                job_id=job_id,
                epoch=epoch,
                train_loss=1.5 - frac,
                train_acc=min(1.0, val + (metrics["gen_gap_last"] or 0.0)),
                val_loss=1.6 - frac,
                val_acc=val,
                lr=1e-3,
                train_seconds=metrics["train_seconds"] or 1.0,
                eval_seconds=metrics["eval_seconds"] or 1.0,
                slots=run.slots,
            )
        )


def _add_gradients(session: Session, job_id: int, run: SyntheticRun) -> None:
    output = run.grad_means
    if output is None:
        output = [0.05 * (i + 1) for i in range(len(OUTPUT_LAYERS))]
    for mode, means in (("output", output), ("param", run.param_grad_means or output)):
        for index, mean in enumerate(means):
            name, kind = OUTPUT_LAYERS[index % len(OUTPUT_LAYERS)]
            silent = mean is None
            session.add(
                GradientLayer(
                    job_id=job_id,
                    mode=mode,
                    layer_index=index,
                    layer=f"{name}.{index}" if mode == "output" else f"{name}.{index}.weight",
                    kind=kind,
                    batches=0 if silent else 20,
                    mean=None if silent else float(mean),
                    std=None if silent else float(mean) / 10,
                    min=None if silent else float(mean) / 2,
                    max=None if silent else float(mean) * 2,
                )
            )


def _default_extra(run: SyntheticRun) -> dict[str, Any]:
    if run.model not in GRADATTN_MODELS:
        return {}
    # Attention weight per token depth: one list of 5 floats per encoder layer.
    rng = np.random.default_rng(run.seed)
    layers = []
    for _ in range(2):
        weights = rng.random(5) + 0.5
        layers.append([float(w) for w in weights / weights.sum()])
    return {"attention_by_token": layers}


def seed_offsets(n: int) -> np.ndarray:
    """Symmetric offsets with mean 0 and sample SD 1 (ddof=1) for n >= 2 seeds."""
    if n < 2:
        return np.zeros(n)
    base = np.linspace(-1.0, 1.0, n)
    return base / base.std(ddof=1)


def grid_runs(
    cells: Mapping[tuple[str, str], float],
    seeds: Iterable[int] = (0, 1, 2),
    sd: float = 0.01,
    metric: str = "top1",
    **common: Any,
) -> list[SyntheticRun]:
    """Runs for {(dataset, model): mean} with per-seed values mean + sd * offset.

    The sample mean over seeds is exactly `mean` and the sample SD exactly `sd`.
    """
    seeds = list(seeds)
    offsets = seed_offsets(len(seeds))
    runs = []
    for (dataset, model), mean in cells.items():
        for seed, off in zip(seeds, offsets, strict=True):
            metrics = {metric: float(mean + sd * off)}
            extra_metrics = common.get("metrics", {})
            runs.append(
                SyntheticRun(
                    model=model,
                    dataset=dataset,
                    seed=seed,
                    **{k: v for k, v in common.items() if k != "metrics"},
                    metrics={**extra_metrics, **metrics},
                )
            )
    return runs


def replace(run: SyntheticRun, **changes: Any) -> SyntheticRun:
    """A copy of `run` with fields changed."""
    return dataclasses.replace(run, **changes)


EVIL = "<script>alert(1)</script>"  # a database string that must render as text


def sample_runs() -> list[SyntheticRun]:
    """A small but complete grid for the report tests: two paper datasets x six models x 3
    seeds, a dataset and a model whose names are markup, a failed and a queued job, and one
    reference-code run (a second protocol section)."""
    cells = {}
    for dataset, base in (("fashionmnist", 0.64), ("tinyimagenet", 0.33)):
        for offset, model in enumerate(
            ("resnet18", "gradattn_nope", "gradattn_learnable", "gradattn_rope",
             "se_resnet18", "cbam_resnet18")
        ):  # fmt: skip
            cells[(dataset, model)] = base + 0.01 * offset
    runs = grid_runs(cells, seeds=(42, 43, 44), sd=0.005, grid="paper")
    runs.append(SyntheticRun("resnet18", "<i>odd dataset</i>", 42, grid="<b>grid</b>"))
    runs.append(SyntheticRun(EVIL, "fashionmnist", 42, grid="paper"))
    runs.append(
        SyntheticRun(
            "gradattn_rope", "fashionmnist", 45, grid="paper", status="failed",
            error="Traceback (most recent call last):\n  File \"x\"\nRuntimeError: CUDA out of "
            "memory <img src=x onerror=alert(2)>",
        )
    )  # fmt: skip
    runs.append(SyntheticRun("gradattn_nope", "fashionmnist", 45, grid="paper", status="queued"))
    runs.append(SyntheticRun("resnet18", "fashionmnist", 42, protocol="reference-code"))
    return runs


_SAMPLE: dict[str, Any] = {}


def sample_report(root: Any) -> tuple[str, Any]:
    """(database URL, index.html path) of one report of `sample_runs`, built once per process
    and shared by the render and browser tests (a full build draws every figure)."""
    from pathlib import Path

    from harness.report.render import build_report
    from harness.store.engine import make_engine

    if "index" not in _SAMPLE:
        root = Path(root)
        url = f"sqlite:///{root / 'sample.db'}"
        fill_synthetic(make_engine(url), sample_runs())
        index = build_report(
            url, out_dir=root / "reports", formats=("html", "md", "latex", "csv", "json"),
            name="sample",
        )  # fmt: skip
        _SAMPLE.update(url=url, index=index)
    return _SAMPLE["url"], _SAMPLE["index"]
