"""`harness bench` on the CPU: a smoke run writes the documented JSON (structure only, no timings)."""

from __future__ import annotations

import json
import math

import pytest

from harness.cli import main

SMOKE = [
    "bench",
    "--device",
    "cpu",
    "--model",
    "resnet18",
    "--dataset-shape",
    "fashionmnist",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--batch-size",
    "2",
    "--slots",
    "2",
    "--threads",
    "1",
    "--grid",
    "paper",
    "--grid-models",
    "resnet18",
    "--grid-datasets",
    "cifar10",
    "--data-size",
    "16",
    "--epochs",
    "3",
    "--seeds",
    "2",
]
TIMING_FIELDS = {"steps", "seconds", "steps_per_s", "ms_per_step", "images_per_s"}


@pytest.mark.slow
def test_cpu_smoke_run_writes_the_documented_json(tmp_path, capsys):
    assert main([*SMOKE, "--out", str(tmp_path / "results")]) == 0
    files = list((tmp_path / "results").glob("bench-*-cpu.json"))
    assert len(files) == 1
    report = json.loads(files[0].read_text())
    assert report["schema"] == "harness-bench/1"
    words = report["command_line"]
    assert words[:2] == ["harness", "bench"]
    for option, value in zip(SMOKE[1::2], SMOKE[2::2], strict=True):
        assert words[words.index(option) + 1] == value
    assert "--no-graph" not in words and words[words.index("--epochs") + 1] == "3"
    assert report["device"]["type"] == "cpu" and "device_name" in report["device"]
    assert report["torch"] and report["torchvision"]
    assert set(report["git"]) == {"git_commit", "git_dirty"}
    assert report["settings"]["batch_size"] == 2 and report["settings"]["cuda_graph"] is False

    for name in ("authors", "ours"):
        timing = report["pipelines"][name]
        assert set(timing) >= TIMING_FIELDS and timing["steps"] == 2
        assert timing["steps_per_s"] > 0
        assert math.isclose(timing["images_per_s"], 2 * timing["steps_per_s"])
    assert math.isclose(
        report["speedup"],
        report["pipelines"]["ours"]["steps_per_s"] / report["pipelines"]["authors"]["steps_per_s"],
    )

    runs = report["packing"]["runs"]
    # Two jobs only (no single-job run to compare with): keeps the smoke run short.
    assert [run["jobs"] for run in runs] == [2]
    assert len(runs[0]["per_job_steps_per_s"]) == 2 and runs[0]["total_steps_per_s"] > 0
    assert report["packing"]["speedup"] is None and report["projection"]["packed_hours"] is None

    projection = report["projection"]
    (cell,) = projection["cells"]
    assert (cell["model"], cell["dataset"]) == ("resnet18", "cifar10")
    assert cell["train_batches"] == 21_000 and cell["val_batches"] == 4_500  # 42,000 / 9,000 at 2
    assert cell["paper_epoch_s"] == 42.03  # Table 8
    expected_s = (21_000 * cell["train_ms_per_step"] + 4_500 * cell["eval_ms_per_step"]) / 1000
    assert math.isclose(cell["epoch_s"], expected_s)
    assert math.isclose(projection["serial_hours"], expected_s * 3 * 2 / 3600)
    assert projection["complete"] is True
    out = capsys.readouterr().out
    assert "fast path / authors' pipeline" in out and str(files[0]) in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "vgg"], "unknown --model 'vgg'; valid: resnet18"),
        (["--dataset-shape", "mnist"], "unknown --dataset-shape 'mnist'; valid: tinyimagenet"),
        (["--slots", "1,x"], "--slots '1,x' is not a comma list of integers"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--grid-datasets", "imagenet"], "--grid-datasets unknown imagenet; valid: tinyimagenet"),
    ],
)
def test_bad_options_fail_with_one_clear_line(argv, message, tmp_path, capsys):
    assert main(["bench", "--device", "cpu", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())
