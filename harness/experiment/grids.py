"""Experiment grids: which (model, dataset, seed) jobs to queue, and under which protocol.

Built-in grids:
- ``paper``: the paper's 38 cells -- the four main models on the eight datasets (Tables 3-9)
  plus SE-ResNet-18 and CBAM-ResNet-18 on Tiny ImageNet, SVHN and FashionMNIST (Table 5).
  One seed (42, the paper's) unless ``--seeds N`` (N seeds from 42: 42, 43, ...).
- ``demo``: the embedded digits dataset x ResNet-18 and GradAttn RoPE x 8 seeds, with a
  short epoch cap, so
  that the whole loop runs on a laptop CPU in minutes (``harness demo``).

A grid file (YAML) has the keys ``name, models, datasets, seeds, protocol, overrides`` and the
optional ``split_seed``, ``vary_split`` and ``sweep``: settings to vary, each over a list of
values, expanded as a product (``sweep: {lr: [0.1, 0.01], weight_decay: [0, 5.0e-4]}`` gives
four settings per cell and seed); see docs/QUEUE.md.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.datasets import PAPER_DATASETS
from harness.errors import HarnessError
from harness.experiment.config import PROTOCOLS, JobSpec, resolve_config

MAIN_MODELS = ("resnet18", "gradattn_nope", "gradattn_learnable", "gradattn_rope")
ATTENTION_BASELINES = ("se_resnet18", "cbam_resnet18")
BASELINE_DATASETS = ("tinyimagenet", "svhn", "fashionmnist")  # Table 5's three datasets

PAPER_SEED = 42  # Table 1: "Random Seed 42"; also the seed of the paper's data splits
DEMO_SEEDS = tuple(range(42, 50))
# Two models over 8 seeds: enough pairs for the exact test to decide the demo's claims
# (docs/examples/digits-claims.yaml; 6 pairs is the least that can reach alpha = 0.05).
DEMO_MODELS = ("resnet18", "gradattn_rope")
# Chosen so that `harness demo` (16 jobs, two worker processes) stays under 10 minutes on 2
# CPU cores: a full digits epoch costs about 20 s per job there, so the demo runs 2 full
# epochs at batch 32 (40 updates an epoch; batch 128 gives only 10, too few to learn digits in
# two epochs). docs/QUEUE.md has the measurement.
DEMO_MAX_EPOCHS = 2
DEMO_OVERRIDES = {"batch_size": 32, "grad_batches": 4}
BUILTIN_GRIDS = ("paper", "demo")
GRID_FILE_KEYS = (
    "name",
    "models",
    "datasets",
    "seeds",
    "protocol",
    "overrides",
    "split_seed",
    "vary_split",
    "sweep",
)
MAX_SWEEP_SETTINGS = 1000  # a product past this is almost surely a typo in a list


@dataclass(frozen=True)
class Grid:
    """A set of (model, dataset) cells run over seeds under one protocol and overrides."""

    name: str
    cells: tuple[tuple[str, str], ...]
    seeds: tuple[int, ...]
    protocol: str = "paper"
    overrides: dict[str, Any] = field(default_factory=dict)
    split_seed: int = PAPER_SEED
    # The split seed follows the run seed, so the spread over seeds includes split variance.
    vary_split: bool = False
    # Settings varied as a product: key -> values (each combination is one setting).
    sweep: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def settings(self) -> list[dict[str, Any]]:
        """Every combination of the swept values ([{}] without a sweep)."""
        keys = list(self.sweep)
        return [dict(zip(keys, values, strict=True))
                for values in itertools.product(*(self.sweep[k] for k in keys))]  # fmt: skip

    def jobs(
        self, cell_overrides: Mapping[tuple[str, str], dict[str, Any]] | None = None
    ) -> list[JobSpec]:
        """One JobSpec per (setting, cell, seed), configured by the protocol, the overrides and
        the swept setting; `cell_overrides[(model, dataset)]` adds a cell's own settings (tuned
        hyper-parameters)."""
        specs = []
        for setting in self.settings():
            for (model, dataset), seed in itertools.product(self.cells, self.seeds):
                own = (cell_overrides or {}).get((model, dataset), {})
                settings = {**self.overrides, **setting, **own}
                config = resolve_config(self.protocol, dataset, model, settings)
                split_seed = seed if self.vary_split else self.split_seed
                specs.append(JobSpec(model, dataset, seed, split_seed, self.protocol, config))
        return specs


def model_names() -> tuple[str, ...]:
    from harness.models import MODEL_NAMES

    return tuple(MODEL_NAMES)


def dataset_names() -> tuple[str, ...]:
    from harness.datasets import DATASET_NAMES

    return tuple(DATASET_NAMES)


def seeds_from_count(count: int) -> tuple[int, ...]:
    """`--seeds N`: N seeds starting at the paper's 42 (42, 43, ...), so seed 42 is always in."""
    if count < 1:
        raise HarnessError(f"--seeds must be at least 1 (got {count})")
    return tuple(range(PAPER_SEED, PAPER_SEED + count))


def parse_seed_list(text: str) -> tuple[int, ...]:
    """`--seed-list 1,2,3` -> (1, 2, 3); a clear error for anything else."""
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise HarnessError(
            f"--seed-list {text!r} is not a comma-separated list of integers (e.g. 42,43,44)"
        ) from None
    if not seeds:
        raise HarnessError("--seed-list is empty; give integers such as 42,43,44")
    if len(set(seeds)) != len(seeds):
        raise HarnessError(f"--seed-list {text!r} repeats a seed; list each seed once")
    return seeds


def paper_grid() -> Grid:
    cells = [(m, d) for d in PAPER_DATASETS for m in MAIN_MODELS]
    cells += [(m, d) for d in BASELINE_DATASETS for m in ATTENTION_BASELINES]
    return Grid("paper", tuple(cells), (PAPER_SEED,))


def demo_grid(
    max_epochs: int = DEMO_MAX_EPOCHS,
    seeds: Sequence[int] = DEMO_SEEDS,
    models: Sequence[str] = DEMO_MODELS,
) -> Grid:
    cells = tuple((m, "digits") for m in models)
    overrides = {**DEMO_OVERRIDES, "max_epochs": max_epochs}
    return Grid("demo", cells, tuple(seeds), overrides=overrides)


def _check_names(kind: str, names: Iterable[str], valid: Sequence[str], where: str) -> None:
    for name in names:
        if name not in valid:
            raise HarnessError(f"{where}unknown {kind} {name!r}; valid: {', '.join(valid)}")


def _string_list(value: Any, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise HarnessError(f"{where}'{key}' must be a non-empty list of names, got {value!r}")
    return value


def _seeds_value(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return seeds_from_count(value)
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and len(set(value)) == len(value)
    ):
        return tuple(value)
    raise HarnessError(
        f"{where}'seeds' must be a count (e.g. 5: seeds 42..46) or a list of distinct integers, "
        f"got {value!r}"
    )


def load_grid_file(path: Path) -> Grid:
    """Read and validate a YAML grid file; every mistake is one HarnessError naming the fix."""
    import yaml

    where = f"grid file {path}: "
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"cannot read grid file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise HarnessError(
            f"{where}not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r}); "
            "save it as UTF-8 YAML"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise HarnessError(f"{where}invalid YAML at {line}{problem}") from None
    if not isinstance(data, dict):
        raise HarnessError(
            f"{where}expected a mapping with keys {', '.join(GRID_FILE_KEYS)}, "
            f"got {type(data).__name__}"
        )
    unknown = sorted(str(k) for k in data if k not in GRID_FILE_KEYS)
    if unknown:
        raise HarnessError(
            f"{where}unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(GRID_FILE_KEYS)}"
        )
    for required in ("models", "datasets"):
        if required not in data:
            raise HarnessError(f"{where}missing '{required}' (a list of names)")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise HarnessError(f"{where}'name' must be a non-empty string (<= 200 chars), got {name!r}")
    models = _string_list(data["models"], "models", where)
    datasets = _string_list(data["datasets"], "datasets", where)
    _check_names("model", models, model_names(), where)
    _check_names("dataset", datasets, dataset_names(), where)
    seeds = _seeds_value(data.get("seeds", [PAPER_SEED]), where)
    protocol = data.get("protocol", "paper")
    if protocol not in PROTOCOLS:
        raise HarnessError(f"{where}unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise HarnessError(
            f"{where}'overrides' must be a mapping such as {{lr: 0.001, max_epochs: 2}}, "
            f"got {overrides!r}"
        )
    split_seed = data.get("split_seed", PAPER_SEED)
    if not isinstance(split_seed, int) or isinstance(split_seed, bool):
        raise HarnessError(f"{where}'split_seed' must be an integer, got {split_seed!r}")
    cells = tuple((m, d) for d in datasets for m in models)
    vary_split = data.get("vary_split", False)
    if not isinstance(vary_split, bool):
        raise HarnessError(f"{where}'vary_split' must be true or false, got {vary_split!r}")
    if vary_split and "split_seed" in data:
        raise HarnessError(f"{where}give either 'split_seed' or 'vary_split: true', not both")
    sweep = parse_sweep(data.get("sweep") or {}, where)
    clash = sorted(set(sweep) & set(overrides))
    if clash:
        raise HarnessError(
            f"{where}{', '.join(clash)} is both in 'overrides' and in 'sweep'; keep it in one"
        )
    grid = Grid(
        name.strip(), cells, seeds, protocol, dict(overrides), split_seed, vary_split, sweep
    )
    _check_overrides(grid, where)
    return grid


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _number_text(value: Any) -> Any:
    """YAML 1.1 reads 5e-4 (no dot) as a string; a sweep value written so is the number."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def parse_sweep(sweep: Any, where: str = "") -> dict[str, tuple[Any, ...]]:
    """A grid file's `sweep` (or --sweep's) mapping: key -> a non-empty list of distinct scalar
    values; every mistake one HarnessError naming the fix."""
    example = "{lr: [0.1, 0.01], weight_decay: [0, 5.0e-4]}"
    if not isinstance(sweep, dict):
        raise HarnessError(f"{where}'sweep' must be a mapping such as {example}, got {sweep!r}")
    parsed: dict[str, tuple[Any, ...]] = {}
    for key, values in sweep.items():
        if not isinstance(key, str) or not key:
            raise HarnessError(f"{where}sweep key {key!r} is not a setting name; e.g. {example}")
        if key == "hparams":
            raise HarnessError(f"{where}hparams cannot be swept; use --hparams paper|tuned")
        if not isinstance(values, list) or not values:
            raise HarnessError(
                f"{where}sweep {key!r} must be a non-empty list of values, got {values!r}; "
                f"e.g. {example}"
            )
        if any(isinstance(v, (list, dict)) for v in values):
            raise HarnessError(f"{where}sweep {key!r} values must be numbers, words or true/false")
        values = [_number_text(v) for v in values]
        if len({repr(v) for v in values}) != len(values):
            raise HarnessError(f"{where}sweep {key!r} repeats a value: {values!r}; list each once")
        parsed[key] = tuple(values)
    count = 1
    for values in parsed.values():
        count *= len(values)
    if count > MAX_SWEEP_SETTINGS:
        raise HarnessError(
            f"{where}the sweep makes {count} settings (> {MAX_SWEEP_SETTINGS}); shorten its lists"
        )
    return parsed


def _check_overrides(grid: Grid, where: str = "") -> None:
    """Resolve every cell so a bad override fails before anything is queued (a data option
    or a model setting may apply to some cells and not to others)."""
    for setting in grid.settings():
        shown = ", ".join(f"{k}={v}" for k, v in setting.items())
        for model, dataset in grid.cells:
            try:
                resolve_config(grid.protocol, dataset, model, {**grid.overrides, **setting})
            except HarnessError as exc:
                at = f"(sweep setting {shown}) " if setting else ""
                raise HarnessError(f"{where}{at}{exc}") from None
    for seed in (*grid.seeds, grid.split_seed):
        check_seed(seed, where)


MAX_SEED = 2**32 - 1  # numpy's and torch's seeding accept 0 .. 2**32 - 1


def check_seed(seed: int, where: str = "") -> None:
    """Seeds are integers in 0 .. 2**32 - 1 (what numpy's seeding accepts)."""
    if not 0 <= seed <= MAX_SEED:
        raise HarnessError(
            f"{where}seed {seed} refused: seeds must be integers from 0 to {MAX_SEED}"
        )


def resolve_grid(
    grid: str,
    *,
    seeds: int | None = None,
    seed_list: Sequence[int] | None = None,
    protocol: str | None = None,
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    overrides: dict[str, Any] | None = None,
    split_seed: int | None = None,
    vary_split: bool = False,
    sweep: dict[str, tuple[Any, ...]] | None = None,
) -> Grid:
    """The grid named `grid` (paper, demo or a YAML file) with the command line's changes."""
    if grid == "paper":
        base = paper_grid()
    elif grid == "demo":
        # Two models by default; --models picks any of the six on digits (e.g. for tuning).
        base = demo_grid(models=MAIN_MODELS + ATTENTION_BASELINES if models else DEMO_MODELS)
    else:
        path = Path(grid)
        if not path.exists():
            raise HarnessError(
                f"unknown grid {grid!r}: not {' or '.join(BUILTIN_GRIDS)} and no such file; "
                "give --grid paper, --grid demo or the path of a YAML grid file"
            )
        base = load_grid_file(path)
    both = sorted(set(sweep or {}) & set(overrides or {}))
    if both:
        raise HarnessError(f"{', '.join(both)} is given to both --set and --sweep; keep one")
    if seeds is not None and seed_list is not None:
        raise HarnessError("give either --seeds N or --seed-list A,B,C, not both")
    changes: dict[str, Any] = {}
    if seeds is not None:
        changes["seeds"] = seeds_from_count(seeds)
    if seed_list is not None:
        changes["seeds"] = tuple(seed_list)
    if protocol is not None:
        if protocol not in PROTOCOLS:
            raise HarnessError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
        changes["protocol"] = protocol
    if split_seed is not None and vary_split:
        raise HarnessError("give either --split-seed S or --vary-split, not both")
    if split_seed is not None:
        changes["split_seed"] = split_seed
        changes["vary_split"] = False
    if vary_split:
        changes["vary_split"] = True
    if overrides:
        changes["overrides"] = {**base.overrides, **overrides}
    if sweep:
        changes["sweep"] = {**base.sweep, **sweep}
    # A key set by --set replaces the grid's sweep over it (and a --sweep its fixed value).
    merged_sweep = changes.get("sweep", base.sweep)
    merged_overrides = changes.get("overrides", base.overrides)
    if sweep:
        merged_overrides = {k: v for k, v in merged_overrides.items() if k not in sweep}
    if overrides:
        merged_sweep = {k: v for k, v in merged_sweep.items() if k not in overrides}
    if merged_sweep != base.sweep or merged_overrides != base.overrides:
        changes["sweep"], changes["overrides"] = merged_sweep, merged_overrides
    cells = base.cells
    if models:
        _check_names("model", models, model_names(), "--models: ")
        cells = tuple(c for c in cells if c[0] in models)
    if datasets:
        _check_names("dataset", datasets, dataset_names(), "--datasets: ")
        cells = tuple(c for c in cells if c[1] in datasets)
    if not cells:
        raise HarnessError(
            f"--models/--datasets leave no cell of grid {base.name!r}; its cells are "
            + ", ".join(sorted({f"{m}/{d}" for m, d in base.cells}))
        )
    result = replace(base, cells=cells, **changes)
    _check_overrides(result)
    return result


def grid_document(grid: Grid) -> dict[str, Any]:
    """A resolved grid without a sweep as JSON (an audit stores its grid in its row)."""
    return {"name": grid.name, "cells": [list(c) for c in grid.cells], "seeds": list(grid.seeds),
            "protocol": grid.protocol, "overrides": grid.overrides, "split_seed": grid.split_seed,
            "vary_split": grid.vary_split}  # fmt: skip


def grid_from_document(doc: dict[str, Any]) -> Grid:
    return Grid(name=doc["name"], cells=tuple(tuple(c) for c in doc["cells"]),
                seeds=tuple(doc["seeds"]), protocol=doc["protocol"], overrides=doc["overrides"],
                split_seed=doc["split_seed"], vary_split=doc["vary_split"])  # fmt: skip
