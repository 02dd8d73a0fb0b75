"""The worker's line per finished epoch (docs/QUEUE.md, "Watching and repairing")."""

from __future__ import annotations

from harness.training.outcome import EpochRecord
from harness.workers.cohort import epoch_line, format_seconds


def test_the_epoch_line_names_job_progress_loss_accuracy_seconds_and_eta():
    record = EpochRecord(2, 0.41234, 0.8, 0.5, 0.87346, 1e-3, 4.0, 1.0)
    line = epoch_line("job 12 resnet18/cifar10/seed 42", record, 100, [3.0, 5.0])
    # ETA: 98 epochs left at this run's mean epoch (4.0 s).
    assert line == ("job 12 resnet18/cifar10/seed 42 epoch 2/100: train loss 0.4123, "
                    "val top-1 0.8735, 5.0 s, ETA <= 6m32s")  # fmt: skip
    last = epoch_line("job 1 x/y/seed 1", EpochRecord(3, 1, 1, 1, 0.5, 1, 1, 1), 3, [2.0])
    assert last.endswith("epoch 3/3: train loss 1.0000, val top-1 0.5000, 2.0 s, last epoch")


def test_durations_read_at_a_glance():
    assert [format_seconds(s) for s in (4.25, 59.9, 60, 185, 3600 * 2 + 7 * 60)] == [
        "4.2 s", "59.9 s", "1m00s", "3m05s", "2h07m"]  # fmt: skip
