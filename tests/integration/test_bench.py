"""`harness bench` on the CPU: a smoke run writes the documented JSON (structure only, no timings)."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from harness.bench.fused import fused_cohort_size
from harness.bench.mps import CONTROL, mps_daemon
from harness.bench.packing import measure_packing
from harness.bench.pipeline import BenchSettings
from harness.cli import main
from harness.errors import HarnessError

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
    "--fused",
    "2",
]
TIMING_FIELDS = {"steps", "seconds", "steps_per_s", "ms_per_step", "images_per_s"}


@pytest.mark.slow
def test_cpu_smoke_run_writes_the_documented_json(tmp_path, capsys):
    flags = ["--mps", "--grid-fused"]
    assert main([*SMOKE, *flags, "--out", str(tmp_path / "results")]) == 0
    files = list((tmp_path / "results").glob("bench-*-cpu.json"))
    assert len(files) == 1
    report = json.loads(files[0].read_text())
    assert report["schema"] == "harness-bench/1"
    words = report["command_line"]
    assert words[:2] == ["harness", "bench"]
    for option, value in zip(SMOKE[1::2], SMOKE[2::2], strict=True):
        assert words[words.index(option) + 1] == value
    assert "--no-graph" not in words and words[words.index("--epochs") + 1] == "3"
    assert set(flags) <= set(words)
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
    # --mps on the CPU: recorded as not used, and why; packing ran anyway.
    assert report["packing"]["mps"] == {"requested": True, "used": False, "reason": "device is cpu"}

    fused = report["fused"]
    ours = report["pipelines"]["ours"]["steps_per_s"]
    best_packing = runs[0]["total_steps_per_s"]
    assert fused["sizes"] == [2] and fused["model"] == "resnet18" and fused["batch_size"] == 2
    assert fused["one_job_steps_per_s"] == ours
    assert fused["best_packing_steps_per_s"] == best_packing
    (entry,) = fused["runs"]
    assert entry["members"] == 2 and entry["steps"] == 2
    assert math.isclose(entry["fused_steps_per_s"], 2 / entry["seconds"])
    assert math.isclose(entry["member_steps_per_s"], 2 * entry["fused_steps_per_s"])
    assert math.isclose(entry["images_per_s"], 2 * entry["member_steps_per_s"])  # batch 2
    assert math.isclose(entry["ms_per_fused_step"], 1000 / entry["fused_steps_per_s"])
    assert math.isclose(entry["vs_one_job"], entry["member_steps_per_s"] / ours)
    assert math.isclose(entry["vs_best_packing"], entry["member_steps_per_s"] / best_packing)
    assert entry["peak_memory_gib"] is None  # CUDA only
    assert fused["best_members"] == 2
    assert fused["best_member_steps_per_s"] == entry["member_steps_per_s"]

    projection = report["projection"]
    (cell,) = projection["cells"]
    assert (cell["model"], cell["dataset"]) == ("resnet18", "cifar10")
    assert cell["train_batches"] == 21_000 and cell["val_batches"] == 4_500  # 42,000 / 9,000 at 2
    assert cell["paper_epoch_s"] == 42.03  # Table 8
    expected_s = (21_000 * cell["train_ms_per_step"] + 4_500 * cell["eval_ms_per_step"]) / 1000
    assert math.isclose(cell["epoch_s"], expected_s)
    assert math.isclose(projection["serial_hours"], expected_s * 3 * 2 / 3600)
    assert projection["complete"] is True
    # --grid-fused: cohorts of min(largest --fused, seeds) = 2 members, measured per cell.
    assert projection["method"] == "fused" and projection["fused_members"] == 2
    assert cell["fused_members"] == 2
    fused_s = (21_000 * cell["fused_member_ms_per_step"] + 4_500 * cell["eval_ms_per_step"]) / 1000
    assert math.isclose(cell["fused_epoch_s"], fused_s)
    assert math.isclose(projection["fused_hours"], fused_s * 3 * 2 / 3600)
    out = capsys.readouterr().out
    assert "fast path / authors' pipeline" in out and str(files[0]) in out
    assert "MPS: not used (device is cpu)" in out and "fused  2 seeds:" in out
    assert "h fused (2 seeds)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "vgg"], "unknown --model 'vgg'; valid: resnet18"),
        (["--dataset-shape", "mnist"], "unknown --dataset-shape 'mnist'; valid: tinyimagenet"),
        (["--slots", "1,x"], "--slots '1,x' is not a comma list of integers"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--grid-datasets", "imagenet"], "--grid-datasets unknown imagenet; valid: tinyimagenet"),
        (["--fused", "0,x"], "--fused '0,x' is not a comma list of integers (e.g. 1,4,8)"),
        (["--fused", "-1"], "--fused '-1' has a negative count"),
        (["--fused", "0", "--grid-fused"], "--grid-fused needs fused cohort sizes"),
        (["--grid", "none", "--grid-fused"], "--grid-fused needs a grid to project"),
    ],
)
def test_bad_options_fail_with_one_clear_line(argv, message, tmp_path, capsys):
    assert main(["bench", "--device", "cpu", *argv, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_fused_projection_never_fuses_more_members_than_a_cell_has_seeds():
    assert fused_cohort_size([1, 4, 8, 12], 5) == 5
    assert fused_cohort_size([1, 4], 5) == 4


def test_mps_without_the_control_program_is_recorded_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a real PATH lookup that finds nothing
    with mps_daemon("cuda", True) as (env, record):
        assert env == {}
    assert record == {"requested": True, "used": False, "reason": f"{CONTROL} not on PATH"}
    with mps_daemon("cpu", False) as (env, record):
        assert env == {}
    assert record["reason"] == "not requested (--mps)"


# A stand-in for NVIDIA's control program (absent here): it logs how it was called. What it
# checks is the bench's side -- fresh pipe/log folders passed to the daemon, the server list
# read back, `quit` sent even when the packing fails, the folder removed. The real daemon is
# exercised only on a GPU (benchmarks/gpu_check.sh).
STAND_IN = """#!/bin/sh
echo "$* pipe=$CUDA_MPS_PIPE_DIRECTORY log=$CUDA_MPS_LOG_DIRECTORY" >> "{log}"
if [ "$1" = "-d" ]; then {start}; fi
read command
echo "stdin=$command" >> "{log}"
if [ "$command" = "get_server_list" ]; then echo "{servers}"; fi
"""


def _stand_in(folder: Path, start: str = "exit 0", servers: str = "4242") -> Path:
    folder.mkdir()
    log = folder / "calls.log"
    script = folder / CONTROL
    script.write_text(STAND_IN.format(log=log, start=start, servers=servers))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return log


def test_mps_daemon_is_started_in_a_private_folder_and_always_stopped(tmp_path, monkeypatch):
    log = _stand_in(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with mps_daemon("cuda", True) as (env, record):
        assert set(env) == {"CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"}
        assert all(Path(path).is_dir() for path in env.values())
        folder = Path(env["CUDA_MPS_PIPE_DIRECTORY"]).parent
    assert record == {"requested": True, "used": True, "reason": None, "servers": ["4242"]}
    calls = log.read_text().splitlines()
    assert (
        calls[0] == f"-d pipe={env['CUDA_MPS_PIPE_DIRECTORY']} log={env['CUDA_MPS_LOG_DIRECTORY']}"
    )
    assert [c for c in calls if c.startswith("stdin=")] == ["stdin=get_server_list", "stdin=quit"]
    assert not folder.exists()

    log.write_text("")
    with pytest.raises(RuntimeError), mps_daemon("cuda", True) as (env, record):
        raise RuntimeError("packing failed")
    assert log.read_text().splitlines()[-1] == "stdin=quit" and record["used"] is False


def test_mps_daemon_error_line_is_recorded(tmp_path, monkeypatch):
    start = 'echo "An instance of this daemon is already running" >&2; exit 1'
    log = _stand_in(tmp_path / "bin", start=start)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with mps_daemon("cuda", True) as (env, record):
        assert env == {}
    assert record["reason"] == "An instance of this daemon is already running"
    assert len(log.read_text().splitlines()) == 1  # started once; nothing to stop


def test_mps_daemon_without_a_server_says_the_jobs_ran_without_mps(tmp_path, monkeypatch):
    _stand_in(tmp_path / "bin", servers="")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with mps_daemon("cuda", True) as (_, record):
        pass
    assert record["used"] is False and "no MPS server ran" in record["reason"]


@pytest.mark.slow
def test_a_packed_job_that_dies_fails_the_measurement_at_once():
    # Each job raises while building its model (an unknown name reaches only the children), so
    # no job reports; the parent must say so from the exit codes, not wait for its timeout.
    settings = BenchSettings(
        device="cpu",
        model="no-such-model",
        shape="fashionmnist",
        steps=1,
        warmup=0,
        batch_size=2,
        data_size=4,
        threads=1,
    )
    with pytest.raises(HarnessError, match="exited with code 1 before reporting"):
        measure_packing(settings, [2], timeout_s=600)
