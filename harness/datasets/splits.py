"""The one split helper every source uses: a seeded 70/15/15 split, by item or by group.

Sizes follow the two-stage rule of scikit-learn's train_test_split (hold out ceil(30%), then
give the test split ceil(half) of it), computed in integers so that 70,000 images split into
exactly 49,000/10,500/10,500 and 60,000 into 42,000/9,000/9,000.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.datasets._core import Split

TRAIN_VAL_TEST = (70, 15, 15)


def split_sizes(n: int, percent: Sequence[int] = TRAIN_VAL_TEST) -> tuple[int, int, int]:
    """Sizes (train, val, test) for n items, percentages summing to 100."""
    if sum(percent) != 100 or len(percent) != 3:
        raise ValueError(f"split percentages must be three numbers summing to 100, got {percent}")
    holdout = -(-n * (percent[1] + percent[2]) // 100)  # ceil without float rounding
    n_test = -(-holdout * percent[2] // (percent[1] + percent[2])) if holdout else 0
    return n - holdout, holdout - n_test, n_test


def split_indices(
    n: int,
    split_seed: int,
    groups: Sequence[object] | np.ndarray | None = None,
    percent: Sequence[int] = TRAIN_VAL_TEST,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (train, val, test), each sorted, deterministic given split_seed.

    With `groups` (e.g. patient ids) whole groups go to one split: groups are shuffled and
    filled into train, then val, until each reaches its target size; no group is split.
    """
    rng = np.random.default_rng(split_seed)
    n_train, n_val, _ = split_sizes(n, percent)
    if groups is None:
        order = rng.permutation(n)
        parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
        return tuple(np.sort(p) for p in parts)  # type: ignore[return-value]
    group_ids = np.asarray(groups)
    if len(group_ids) != n:
        raise ValueError(f"{len(group_ids)} group ids for {n} items")
    unique, inverse = np.unique(group_ids, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(unique))
    assignment = np.empty(len(unique), dtype=np.int64)
    filled = [0, 0, 0]
    targets = (n_train, n_train + n_val)
    for g in rng.permutation(len(unique)):
        total = filled[0] + filled[1] + filled[2]
        part = 0 if total < targets[0] else 1 if total < targets[1] else 2
        assignment[g] = part
        filled[part] += int(counts[g])
    item_part = assignment[inverse]
    return tuple(np.flatnonzero(item_part == k) for k in range(3))  # type: ignore[return-value]


def take(images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> Split:
    return Split(images=images[index], labels=labels[index])


def random_split(
    images: np.ndarray,
    labels: np.ndarray,
    split_seed: int,
    groups: Sequence[object] | np.ndarray | None = None,
) -> tuple[Split, Split, Split]:
    """Merge-then-split sources (CIFAR-10, FashionMNIST, SVHN, Tiny ImageNet, PAD-UFES-20)."""
    parts = split_indices(len(labels), split_seed, groups)
    return tuple(take(images, labels, p) for p in parts)  # type: ignore[return-value]
