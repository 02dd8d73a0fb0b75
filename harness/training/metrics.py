"""Test-set metrics of one model, all fractions in [0, 1] (the database stores fractions).

The choices (REFERENCE_NOTES.md, "Test metrics"):
- top-k accuracy counts a sample correct when its label is among the k largest logits. With
  k >= num_classes every sample is trivially correct, so top-k is ``None`` there (PCam has two
  classes: no top-3/top-5; a 3-class set has top-1 only among {1, 3}).
- precision/recall/F1, macro and weighted: scikit-learn, ``zero_division=0``, over the labels
  present in the labels or the predictions (scikit-learn's default, as the authors' code).
- ECE: 10 equal-width bins over the max-softmax confidence; bin i is (i/10, (i+1)/10], so a
  confidence of exactly 0.1 falls in the first bin; ECE = sum over bins |B|/n * |acc(B) - conf(B)|.
- NLL: mean cross-entropy (natural log) of the true label.
Softmax, ECE and NLL are computed in float64 from the logits so that bin edges are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch and scikit-learn load lazily: workers import METRIC_KEYS early
    import torch

METRIC_KEYS = (
    "top1",
    "top3",
    "top5",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "ece",
    "nll",
)
ECE_BINS = 10


def _is_tensor(values: object) -> bool:
    return type(values).__module__.startswith("torch") and hasattr(values, "detach")


def _as_float64(values: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    if _is_tensor(values):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _as_int64(values: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    if _is_tensor(values):
        return values.detach().cpu().long().numpy()
    return np.asarray(values, dtype=np.int64)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (max-shifted for stability)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k largest logits (ties: lower index first)."""
    # A stable sort on the negated logits ranks equal logits by class index, like argmax does.
    ranked = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(ranked == labels[:, None], axis=1)))


def expected_calibration_error(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """ECE over equal-width bins (lo, hi]; empty bins contribute nothing."""
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    # i / n_bins is the float nearest the true edge (linspace's 3 * 0.1 is not).
    edges = np.arange(n_bins + 1) / n_bins
    n = len(confidences)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidences > lo) & (confidences <= hi)
        count = int(in_bin.sum())
        if count:
            gap = abs(correct[in_bin].mean() - confidences[in_bin].mean())
            ece += count / n * gap
    return float(ece)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy, via a float64 log-sum-exp."""
    peak = logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
    return float(np.mean(log_norm - logits[np.arange(len(labels)), labels]))


def classification_metrics(
    logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, num_classes: int
) -> dict[str, float | None]:
    """All test metrics of `logits` (N, num_classes) against integer `labels` (N,)."""
    scores = _as_float64(logits)
    truth = _as_int64(labels)
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(f"logits must have shape (N, {num_classes}); got {tuple(scores.shape)}")
    if truth.shape != (scores.shape[0],) or len(truth) == 0:
        raise ValueError(
            f"labels must have shape ({scores.shape[0]},) and be non-empty; got {truth.shape}"
        )
    if truth.min() < 0 or truth.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]")

    predictions = scores.argmax(axis=1)
    metrics: dict[str, float | None] = {}
    for k in (1, 3, 5):
        metrics[f"top{k}"] = top_k_accuracy(scores, truth, k) if k < num_classes or k == 1 else None
    for average in ("macro", "weighted"):
        precision, recall, f1 = precision_recall_f1(truth, predictions, average)
        metrics[f"precision_{average}"] = precision
        metrics[f"recall_{average}"] = recall
        metrics[f"f1_{average}"] = f1
    probabilities = softmax(scores)
    metrics["ece"] = expected_calibration_error(probabilities.max(axis=1), predictions == truth)
    metrics["nll"] = negative_log_likelihood(scores, truth)
    return {key: metrics[key] for key in METRIC_KEYS}


def precision_recall_f1(
    truth: np.ndarray, predictions: np.ndarray, average: str
) -> tuple[float, float, float]:
    """sklearn.metrics.precision_recall_fscore_support(truth, predictions, average=average,
    zero_division=0) for "macro" and "weighted", in numpy (scikit-learn's import costs a
    worker seconds; tests/unit/test_metrics.py checks the two agree). Over the labels present in
    either array; a ratio with a zero denominator counts 0."""
    labels = np.union1d(truth, predictions)
    hits = predictions[:, None] == labels[None, :]
    actual = truth[:, None] == labels[None, :]
    true_positive = (hits & actual).sum(axis=0).astype(float)
    predicted, support = hits.sum(axis=0).astype(float), actual.sum(axis=0).astype(float)

    def ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)

    precision = ratio(true_positive, predicted)
    recall = ratio(true_positive, support)
    f1 = ratio(2 * true_positive, predicted + support)
    if average == "macro":
        weights = np.ones_like(support)
    elif average == "weighted":
        weights = support
    else:
        raise ValueError(f"average must be 'macro' or 'weighted', not {average!r}")
    if weights.sum() == 0:
        return 0.0, 0.0, 0.0
    return tuple(float(np.average(v, weights=weights)) for v in (precision, recall, f1))
