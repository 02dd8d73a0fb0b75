"""ReduceLROnPlateau and EarlyStopping on scripted validation-accuracy sequences."""

from __future__ import annotations

import pytest

from harness.training.callbacks import EarlyStopping, ReduceLROnPlateau


def _lrs(values: list[float], **kwargs: float) -> list[float]:
    plateau = ReduceLROnPlateau(**kwargs)
    return [plateau.step(v) for v in values]


def test_reduce_after_three_epochs_without_improvement() -> None:
    values = [0.5, 0.6, 0.6, 0.55, 0.6, 0.59, 0.61, 0.61, 0.3, 0.2, 0.7]
    lrs = _lrs(values, lr=1e-3)
    # e1 reference, e2 better, e3-e5 no (equal is no improvement): reduce after e5, wait 0;
    # e6 no (wait 1), e7 better, e8-e10 no: reduce after e10; e11 better.
    expected = [1e-3] * 4 + [2e-4] * 5 + [4e-5] * 2
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_wait_resets_after_reduction() -> None:
    # Never improves after epoch 1: reductions after e4, e7, e10 (every 3 epochs).
    lrs = _lrs([0.9] + [0.1] * 9, lr=1.0)
    assert lrs == pytest.approx([1, 1, 1, 0.2, 0.2, 0.2, 0.04, 0.04, 0.04, 0.008], rel=1e-12)


def test_first_epoch_sets_reference_even_at_zero() -> None:
    plateau = ReduceLROnPlateau(lr=1e-3)
    plateau.step(0.0)
    assert plateau.best == 0.0 and plateau.wait == 0


def test_min_lr_is_a_floor() -> None:
    lrs = _lrs([0.5] + [0.4] * 12, lr=1e-6, min_lr=1e-7)
    # 1e-6 -> 2e-7 after e4 -> max(4e-8, 1e-7) = 1e-7 after e7 -> stays.
    assert lrs[3] == pytest.approx(2e-7) and lrs[6] == pytest.approx(1e-7)
    assert lrs[-1] == pytest.approx(1e-7) and min(lrs) == pytest.approx(1e-7)


def _stop_epoch(values: list[float], patience: int = 7) -> tuple[int | None, int]:
    stopper = EarlyStopping(patience=patience)
    for epoch, value in enumerate(values, start=1):
        stopper.step(epoch, value)
        if stopper.stopped:
            return epoch, stopper.best_epoch
    return None, stopper.best_epoch


def test_early_stopping_after_seven_epochs_without_improvement() -> None:
    # Best at e2; e3..e9 do not improve (ties included) -> stop after e9 = best + 7.
    assert _stop_epoch([0.1, 0.2, 0.2, 0.15, 0.2, 0.1, 0.2, 0.19, 0.2, 0.9]) == (9, 2)
    # Improvement at e8 restarts the count: stop after e15.
    values = [0.1] * 7 + [0.2] + [0.1] * 10
    assert _stop_epoch(values) == (15, 8)
    # Six epochs without improvement are not enough.
    assert _stop_epoch([0.5] + [0.4] * 6) == (None, 1)


def test_improvement_flag_and_best_value() -> None:
    stopper = EarlyStopping(patience=2)
    flags = [stopper.step(e, v) for e, v in enumerate([0.3, 0.3, 0.31, 0.2], start=1)]
    assert flags == [True, False, True, False]
    assert stopper.best == 0.31 and stopper.best_epoch == 3 and not stopper.stopped


def test_state_dict_round_trip_continues_identically() -> None:
    values = [0.5, 0.4, 0.45, 0.5, 0.52, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    plateau, stopper = ReduceLROnPlateau(lr=1e-3), EarlyStopping()
    straight = [(plateau.step(v), stopper.step(e, v)) for e, v in enumerate(values, 1)]
    plateau, stopper = ReduceLROnPlateau(lr=1e-3), EarlyStopping()
    first = [(plateau.step(v), stopper.step(e, v)) for e, v in enumerate(values[:6], 1)]
    resumed_plateau, resumed_stopper = ReduceLROnPlateau(lr=5.0), EarlyStopping()
    resumed_plateau.load_state_dict(plateau.state_dict())
    resumed_stopper.load_state_dict(stopper.state_dict())
    rest = [
        (resumed_plateau.step(v), resumed_stopper.step(e, v)) for e, v in enumerate(values[6:], 7)
    ]
    assert first + rest == straight
    assert resumed_stopper.stopped and resumed_stopper.best_epoch == 5


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(lr=1e-3, factor=1.5)
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
