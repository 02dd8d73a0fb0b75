"""The "device" pipeline (DeviceSplit + BatchAugment + FastStep) inside run_job, on the CPU.

Three kinds of evidence that it trains the same model as the "loader" pipeline:
1. Data: on digits (no augmentation) both pipelines serve the same normalised validation
   batches, and every training epoch covers the same (image, label) pairs, each once.
2. Outcomes over seeds: for top-1, ECE, best epoch and epochs run, the mean paired difference
   (device - loader) over SEEDS lies inside the seed spread (max - min over seeds) of the two
   pipelines, plus one test sample of slack for accuracy. The runs are tiny (CPU budget), so
   this is a coarse check; the GPU equivalence run in docs/PERFORMANCE.md is the real one.
3. Resume: a device-pipeline run interrupted after epoch 1 and resumed from its checkpoint
   equals the uninterrupted run exactly (bitwise on the CPU), learning-rate changes included.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import pytest
import torch

from harness.config import JobSpec, TrainConfig, resolve_config
from harness.errors import HarnessError
from harness.runtime import DeviceBatches, device_splits, load_data, make_loader
from harness.train import EpochRecord, JobInterrupted, run_job

MODEL = "gradattn_nope"
SEEDS = (1, 2, 3)
OVERRIDES = {
    "max_epochs": 3,
    "max_train_batches": 2,
    "batch_size": 32,
    "grad_batches": 1,
    "lr": 1e-2,
    "lr_patience": 1,  # the plateau callback can cut the rate mid-run (set_learning_rate)
    "model.d_model": 16,
    "model.nhead": 2,
    "model.dim_feedforward": 16,
    "model.num_layers": 1,
}
NO_DATA = Path("/nonexistent-data-root")  # digits is embedded
TEST_SAMPLES = 270


def _spec(seed: int, pipeline: str) -> JobSpec:
    config = resolve_config("paper", "digits", MODEL, {**OVERRIDES, "pipeline": pipeline})
    return JobSpec(MODEL, "digits", seed, 42, "paper", config)


def _without_times(records: list[EpochRecord]) -> list[dict]:
    return [
        {k: v for k, v in dataclasses.asdict(r).items() if not k.endswith("seconds")}
        for r in records
    ]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("fastpath")
    try:
        runs = {
            (pipeline, seed): run_job(
                _spec(seed, pipeline), data_root=NO_DATA, checkpoint_path=tmp / f"{pipeline}{seed}.pt"
            )
            for pipeline in ("loader", "device") for seed in SEEDS
        }
        # The first device seed again, stopped after epoch 1 and resumed from its checkpoint.
        path = tmp / "resumed.pt"
        finished: list[int] = []
        with pytest.raises(JobInterrupted):
            run_job(_spec(SEEDS[0], "device"), data_root=NO_DATA, checkpoint_path=path,
                    on_epoch=lambda record: finished.append(record.epoch),
                    should_stop=lambda: len(finished) >= 1)
        runs["resumed"] = run_job(_spec(SEEDS[0], "device"), data_root=NO_DATA, checkpoint_path=path)
    finally:
        torch.set_num_threads(threads)
    return runs


def test_both_pipelines_serve_the_same_data() -> None:
    spec = _spec(0, "device")
    data = load_data(spec, NO_DATA)
    config: TrainConfig = spec.config
    train_split, val_split, _test = device_splits(data, torch.device("cpu"))
    device_val = torch.cat([images for images, _ in DeviceBatches(val_split, data.meta, config, train=False)])
    loader_val = torch.cat([images for images, _ in make_loader(data.val, data.meta, config, train=False, device="cpu")])
    torch.testing.assert_close(device_val, loader_val)

    order = torch.Generator().manual_seed(7)
    served = list(DeviceBatches(train_split, data.meta, config, train=True, order=order))
    images = torch.cat([b[0] for b in served])
    labels = torch.cat([b[1] for b in served])
    assert len(served) == -(-len(data.train) // config.batch_size)

    # Same pairs, each once: compare the sorted (label, pixels) rows of both.
    def rows(x: torch.Tensor, y: torch.Tensor) -> list[tuple]:
        pixels = torch.round(x.flatten(1), decimals=4).tolist()
        return sorted((int(label), *row) for label, row in zip(y.tolist(), pixels, strict=True))

    ref_labels = torch.as_tensor(data.train.labels)
    ref_images = torch.cat([b[0] for b in make_loader(data.train, data.meta, config, train=False, device="cpu")])
    assert rows(images, labels) == rows(ref_images, ref_labels)
    assert not torch.equal(labels, ref_labels)  # shuffled


def test_outcomes_agree_within_seed_noise(outcomes: dict) -> None:
    def value(outcome, name: str) -> float:
        return float(outcome.metrics[name] if name in ("top1", "ece") else getattr(outcome, name))

    for name, slack in (("top1", 1 / TEST_SAMPLES), ("ece", 1 / TEST_SAMPLES),
                        ("best_epoch", 0.0), ("epochs_run", 0.0)):
        loader = [value(outcomes["loader", s], name) for s in SEEDS]
        device = [value(outcomes["device", s], name) for s in SEEDS]
        mean_difference = statistics.mean(d - x for d, x in zip(device, loader, strict=True))
        spread = max(max(loader) - min(loader), max(device) - min(device))
        assert abs(mean_difference) <= spread + slack, (name, loader, device)


def test_device_pipeline_is_recorded_and_differs_from_loader(outcomes: dict) -> None:
    device, loader = outcomes["device", SEEDS[0]], outcomes["loader", SEEDS[0]]
    assert device.epochs_run == len(device.epochs) >= 1
    assert all(0.0 <= r.train_acc <= 1.0 and r.train_loss > 0 for r in device.epochs)
    # Another batch order: the histories are not the loader's (the pipeline really switched).
    assert _without_times(device.epochs) != _without_times(loader.epochs)


def test_resume_is_exact_with_the_device_pipeline(outcomes: dict) -> None:
    whole, resumed = outcomes["device", SEEDS[0]], outcomes["resumed"]
    assert resumed.extra["resumed_after_epoch"] == 1
    assert _without_times(resumed.epochs) == _without_times(whole.epochs)
    assert resumed.metrics == whole.metrics
    # lr_patience 1 makes the plateau callback cut the rate whenever val accuracy stalls; the
    # recorded rates (read back from the optimizer) follow the callback in both runs alike.
    assert [r.lr for r in resumed.epochs] == [r.lr for r in whole.epochs]


def test_unknown_pipeline_is_a_clear_error() -> None:
    spec = _spec(0, "loader")
    bad = JobSpec(spec.model, spec.dataset, 0, 42, "paper",
                  dataclasses.replace(spec.config, pipeline="gpu"))
    with pytest.raises(HarnessError, match="unknown pipeline 'gpu'; valid: loader, device"):
        run_job(bad, data_root=NO_DATA)
