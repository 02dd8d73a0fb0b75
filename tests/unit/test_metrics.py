"""harness.training.metrics against independent computations (hand examples, scikit-learn, brute force)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, log_loss, top_k_accuracy_score

from harness.training.metrics import METRIC_KEYS, classification_metrics, expected_calibration_error


def _brute_force_ece(confidences: list[float], correct: list[bool], n_bins: int = 10) -> float:
    """ECE with exact rational bin assignment: bin = ceil(conf * n_bins) - 1 for conf in (0, 1]."""
    bins: dict[int, list[tuple[float, bool]]] = {}
    for conf, ok in zip(confidences, correct, strict=True):
        index = math.ceil(Fraction(conf) * n_bins) - 1
        bins.setdefault(index, []).append((conf, ok))
    total = 0.0
    for members in bins.values():
        accuracy = sum(ok for _, ok in members) / len(members)
        mean_conf = sum(conf for conf, _ in members) / len(members)
        total += len(members) / len(confidences) * abs(accuracy - mean_conf)
    return total


def test_hand_example() -> None:
    # 4 samples, 4 classes; predictions: 0 (right), 1 (right), 1 (wrong: label 2), 3 (right).
    logits = torch.tensor(
        [
            [4.0, 1.0, 0.0, 0.0],
            [0.0, 3.0, 2.0, 0.0],
            [0.0, 2.0, 1.0, 0.5],
            [0.0, 0.0, 1.0, 5.0],
        ]
    )
    labels = torch.tensor([0, 1, 2, 3])
    m = classification_metrics(logits, labels, num_classes=4)
    assert list(m) == list(METRIC_KEYS)
    assert m["top1"] == pytest.approx(0.75)
    assert m["top3"] == pytest.approx(1.0)  # label 2 is second in row 3
    assert m["top5"] is None  # 5 >= 4 classes: trivially 1
    # Per class precision: c0 1/1, c1 1/2, c2 0/0 -> 0, c3 1/1; recall: 1, 1, 0, 1.
    assert m["precision_macro"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert m["recall_macro"] == pytest.approx(0.75)
    f1s = [1.0, 2 * 0.5 * 1 / 1.5, 0.0, 1.0]
    assert m["f1_macro"] == pytest.approx(sum(f1s) / 4)
    assert m["f1_weighted"] == pytest.approx(sum(f1s) / 4)  # one sample per class
    expected_nll = torch.nn.functional.cross_entropy(logits.double(), labels).item()
    assert m["nll"] == pytest.approx(expected_nll, rel=1e-12)


def test_top_k_none_when_trivial() -> None:
    logits = np.array([[0.2, 0.8], [0.9, 0.1], [0.3, 0.7]])
    m = classification_metrics(logits, np.array([1, 1, 1]), num_classes=2)
    assert m["top1"] == pytest.approx(2 / 3)
    assert m["top3"] is None and m["top5"] is None
    m6 = classification_metrics(np.random.default_rng(0).normal(size=(8, 6)), np.arange(8) % 6, 6)
    assert m6["top3"] is not None and m6["top5"] is not None


def test_against_sklearn_random() -> None:
    rng = np.random.default_rng(7)
    n, k = 500, 10
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) + 2.5 * np.eye(k)[labels] * rng.random((n, 1))
    m = classification_metrics(torch.from_numpy(logits).float(), torch.from_numpy(labels), k)
    logits32 = torch.from_numpy(logits).float().double().numpy()
    assert m["top1"] == pytest.approx(accuracy_score(labels, logits32.argmax(1)))
    for top in (3, 5):
        expected = top_k_accuracy_score(labels, logits32, k=top, labels=np.arange(k))
        assert m[f"top{top}"] == pytest.approx(expected)
    predictions = logits32.argmax(1)
    per_class = f1_score(labels, predictions, average=None, zero_division=0)
    support = np.bincount(labels, minlength=k)
    assert m["f1_macro"] == pytest.approx(per_class.mean())
    assert m["f1_weighted"] == pytest.approx((per_class * support).sum() / support.sum())
    probabilities = torch.softmax(torch.from_numpy(logits32), 1).numpy()
    assert m["nll"] == pytest.approx(log_loss(labels, probabilities, labels=np.arange(k)))
    confidences = probabilities.max(1)
    assert m["ece"] == pytest.approx(
        _brute_force_ece(confidences.tolist(), (predictions == labels).tolist()), abs=1e-12
    )
    assert all(0.0 <= m[key] <= 1.0 for key in METRIC_KEYS if key != "nll")


@pytest.mark.parametrize("case", ["random", "missing classes", "one class", "all wrong"])
def test_precision_recall_f1_equal_sklearn(case: str) -> None:
    from sklearn.metrics import precision_recall_fscore_support

    from harness.training.metrics import precision_recall_f1

    rng = np.random.default_rng(3)
    truth, predictions = {
        "random": (rng.integers(0, 7, 300), rng.integers(0, 7, 300)),
        # class 6 only predicted, class 0 only true, 2 and 4 never appear at all
        "missing classes": (rng.choice([0, 1, 3, 5], 200), rng.choice([1, 3, 5, 6], 200)),
        "one class": (np.full(20, 4), np.full(20, 4)),
        "all wrong": (np.zeros(10, dtype=int), np.ones(10, dtype=int)),
    }[case]
    for average in ("macro", "weighted"):
        expected = precision_recall_fscore_support(
            truth, predictions, average=average, zero_division=0
        )[:3]
        assert precision_recall_f1(truth, predictions, average) == pytest.approx(expected)


def test_ece_bin_edge_goes_to_lower_bin() -> None:
    # Uniform logits over 10 classes: softmax is exactly 0.1, the upper edge of bin 1.
    logits = np.zeros((4, 10))
    labels = np.array([0, 0, 3, 5])  # argmax is class 0: two correct
    m = classification_metrics(logits, labels, 10)
    assert m["ece"] == pytest.approx(abs(0.5 - 0.1))
    # Direct: 0.1 and 0.2 are upper edges -> bins 1 and 2; 0.1 must not share a bin with 0.15.
    conf = np.array([0.1, 0.15, 0.2, 0.2])
    ok = np.array([1.0, 0.0, 1.0, 0.0])
    # bins: {0.1: acc 1} (0.9), {0.15, 0.2, 0.2: acc 1/3, conf 0.55/3}
    expected = 0.25 * abs(1 - 0.1) + 0.75 * abs(1 / 3 - 0.55 / 3)
    assert expected_calibration_error(conf, ok) == pytest.approx(expected)
    assert expected_calibration_error(conf, ok) == pytest.approx(
        _brute_force_ece(conf.tolist(), ok.astype(bool).tolist())
    )


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        classification_metrics(np.zeros((2, 4)), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="labels must lie"):
        classification_metrics(np.zeros((2, 3)), np.array([0, 3]), 3)
