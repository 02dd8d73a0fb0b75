"""The Gradient Health Score and layer counts from stored layer means: torch-free, so the
report reads them without loading the training stack (harness.training.gradients measures)."""

from __future__ import annotations

from collections.abc import Sequence


def health_score(
    layer_means: Sequence[float | None], low: float, high: float, count_silent: bool = False
) -> float:
    """GHS: the fraction of layers whose mean norm lies strictly inside (low, high).

    A ``None`` mean is a silent layer: left out of the denominator, unless `count_silent`
    (the reference-code quirk ``ghs_count_silent``), which counts it as unhealthy.
    """
    if not low < high:
        raise ValueError(f"health_score needs low < high, got ({low}, {high})")
    measured = [m for m in layer_means if m is not None]
    total = len(layer_means) if count_silent else len(measured)
    if total == 0:
        raise ValueError("health_score needs at least one measured layer (all were silent)")
    healthy = sum(1 for m in measured if low < m < high)
    return healthy / total


def vanishing_count(layer_means: Sequence[float | None], low: float) -> int:
    """Measured layers with mean norm <= low (not healthy at the low end); silent ones excluded."""
    return sum(1 for m in layer_means if m is not None and m <= low)


def exploding_count(layer_means: Sequence[float | None], high: float) -> int:
    """Measured layers with mean norm >= high; silent ones excluded."""
    return sum(1 for m in layer_means if m is not None and m >= high)
