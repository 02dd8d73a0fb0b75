"""Which sources of run-to-run variance a cell's spread covers, from its rows.

What follows which seed in this harness (harness/training/loop.py, harness/training/runtime.py,
harness/datasets/splits.py):
- model initialisation: `seed_everything(seed)` right before the model is built;
- data order: a generator seeded with derived_seed(seed, epoch, "order") every epoch;
- augmentation and dropout: the torch RNG re-seeded with derived_seed(seed, epoch, "torch")
  every epoch (loader pipeline, num_workers=0), or derived_seed(seed, epoch, "augment")
  (device pipeline); datasets without training augmentation have none to vary;
- the data split: `split_seed` (`enqueue --vary-split` sets it to the run seed). MedMNIST and
  PCam ship fixed official splits and ignore it; the dataset digest in the provenance tells.
So init, order and augmentation vary together exactly when a cell has more than one seed.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

SOURCES = ("init", "order", "augmentation", "split")
SEED_NOTE = (
    "Init (seed_everything(seed) before building the model), data order (derived_seed(seed, "
    "epoch, 'order')) and augmentation/dropout (derived_seed(seed, epoch, 'torch' or "
    "'augment')) all follow the run seed, so they vary together when a cell has more than one "
    "seed; the split follows split_seed (enqueue --vary-split: split seed = run seed). A split "
    "seed that changes nothing (MedMNIST and PCam use fixed official splits) shows as one "
    "dataset digest in the provenance and is not counted as a varied split."
)


def _digests(group: pd.DataFrame) -> list[str] | None:
    """The data digest of every run, or None when any run lacks one (older provenance)."""
    if "provenance" not in group.columns:
        return None
    digests = [p.get("dataset_digest") if isinstance(p, dict) else None for p in group.provenance]
    return None if any(not d for d in digests) else [str(d) for d in digests]


def _augmented(group: pd.DataFrame) -> bool | None:
    """Whether the runs had training augmentation (Table 2), from their provenance; None when
    a run predates the provenance's `train_augment` field."""
    if "provenance" not in group.columns:
        return None
    ops = [p.get("train_augment") if isinstance(p, dict) else None for p in group.provenance]
    if any(o is None for o in ops):
        return None
    return any(len(o) > 0 for o in ops)


def cell_sources(group: pd.DataFrame) -> dict[str, Any]:
    """Seeds, split seeds and which sources vary across the runs of one cell."""
    seeds = sorted({int(s) for s in group["seed"]})
    splits = sorted({int(s) for s in group["split_seed"]})
    digests = _digests(group)
    seeded = len(seeds) > 1
    augmented = _augmented(group)
    split = len(splits) > 1
    split_note = ""
    if seeded and augmented is False:
        split_note = "no training augmentation for this dataset (Table 2): nothing random to vary"
    if split and digests is not None and len(set(digests)) == 1:
        split = False  # the split seed changed, the data did not: a fixed official split
        split_note = "; ".join(
            filter(None, [split_note, "split seeds differ but every run saw the same data "
                          "(fixed split)"])
        )  # fmt: skip
    elif split and digests is None:
        split_note = "; ".join(
            filter(None, [split_note, "data digest not recorded: split assumed to follow the "
                          "split seed"])
        )  # fmt: skip
    return {
        "n": len(group),
        "seeds": seeds,
        "split_seeds": splits,
        "init": seeded,
        "order": seeded,
        "augmentation": seeded and augmented is not False,
        "split": split,
        "split_note": split_note,
        "vary_split": split and all(int(a) == int(b) for a, b in
                                    zip(group["seed"], group["split_seed"], strict=True)),
    }  # fmt: skip


def sources_text(info: dict[str, Any]) -> str:
    """'varies: init, order, augmentation; fixed: split (split seed 42)'."""
    if not info or not info.get("n"):
        return ""
    varied = [s for s in SOURCES if info[s]]
    fixed = [s for s in SOURCES if not info[s]]
    text = f"varies: {', '.join(varied) or 'nothing'}"
    if fixed:
        text += f"; fixed: {', '.join(fixed)}"
    text += f" (seeds {_span(info['seeds'])}; split seeds {_span(info['split_seeds'])})"
    if info.get("split_note"):
        text += f"; {info['split_note']}"
    return text


def _span(values: list[int]) -> str:
    if len(values) > 4:
        return f"{values[0]}…{values[-1]} ({len(values)})"
    return ", ".join(map(str, values))


def variance_table(results: pd.DataFrame) -> tuple[list[dict[str, Any]], str]:
    """One record per (dataset, model) of an arm, and the note on what the arm does NOT cover."""
    records = []
    for (dataset, model), group in results.groupby(["dataset", "model"], sort=True):
        info = cell_sources(group)
        records.append({"dataset": dataset, "model": model, **info,
                        "text": sources_text(info)})  # fmt: skip
    if not records:
        return [], ""
    never = [s for s in SOURCES if not any(r[s] for r in records)]
    partly = [s for s in SOURCES if s not in never and not all(r[s] for r in records)]
    parts = []
    if never:
        parts.append(f"not covered in any cell: {', '.join(never)}")
    if partly:
        parts.append(f"covered in some cells only: {', '.join(partly)}")
    note = "; ".join(parts) or "every cell covers init, order, augmentation and split"
    return records, note[0].upper() + note[1:] + ". " + SEED_NOTE
