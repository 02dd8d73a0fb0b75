"""Fast checks behind the fault suite: the stand-in runner mirrors harness.training.loop, injection
specs are validated, checkpoints refuse pickled objects, and a database that never answers
ends in one clear line after the patience."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import fault_runner
import pytest
import torch
from fault_suite import worker_argv, worker_env

from harness import faults
from harness.errors import HarnessError
from harness.store.outages import Backoff, DatabaseUnreachable
from harness.training.checkpoint import load_checkpoint, save_checkpoint


def test_stand_in_and_the_recording_path_import_no_torch():
    """16 workers x a torch import each would swamp 2 cores; the stand-in's records are
    harness.training.outcome's (the same classes run_job returns), so nothing is mirrored by hand."""
    from harness.training import loop as train
    from harness.training import outcome

    assert fault_runner.JobOutcome is outcome.JobOutcome is train.JobOutcome
    assert fault_runner.EpochRecord is train.EpochRecord
    code = (
        "import sys, fault_runner, harness.workers.loop, harness.queue.recording, harness.training.metrics; "
        "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(fault_runner.__file__).parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize(
    "text", ["claim:2", "nowhere:0.1", "claim:@0", "claim:often", "claim", "complete:-0.5"]
)
def test_bad_fault_specs_are_one_clear_error(text):
    with pytest.raises(HarnessError, match=r"is not POINT:PROBABILITY or POINT:@N; points are"):
        faults.parse_faults(text)


def test_fault_specs_parse():
    assert faults.parse_faults(" claim:0.25, complete:@3,") == {"claim": 0.25, "complete": -3.0}
    assert faults.parse_faults("") == {}


def test_worker_refuses_a_bad_fault_spec_before_claiming(sqlite_url, tmp_path):
    proc = subprocess.run(
        worker_argv(sqlite_url, "--until-empty"),
        env=worker_env(tmp_path, HARNESS_FAULTS="claim:lots"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("harness: error: HARNESS_FAULTS='claim:lots': ")
    assert proc.stderr.count("\n") == 1


def test_fault_point_kills_its_process_at_the_nth_visit(tmp_path):
    code = "from harness import faults\nfor i in range(5):\n    faults.point('epoch')\n" \
           "    print(i, flush=True)\n"  # fmt: skip
    env = {**os.environ, "HARNESS_FAULTS": "epoch:@3", "HARNESS_FAULTS_LOG": str(tmp_path / "f")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == -9 and proc.stdout.split() == ["0", "1"]
    assert (tmp_path / "f").read_text().split()[2:] == ["epoch"]  # time pid point


class _Planted:
    """Unpickling this would create a file: what a malicious checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_holding_a_pickled_object_is_refused(tmp_path):
    path, marker = tmp_path / "job.pt", tmp_path / "planted"
    torch.save({"format": 1, "job_key": "k", "model": {}, "extra": _Planted(marker)}, path)
    with pytest.raises(HarnessError, match=r"cannot read checkpoint .*job\.pt \(UnpicklingError"):
        load_checkpoint(path, "k", "cpu")
    assert not marker.exists()  # refused before anything ran
    save_checkpoint(path, {"job_key": "k", "model": {"w": torch.ones(2)}})  # plain tensors load
    assert load_checkpoint(path, "k", "cpu")["model"]["w"].tolist() == [1.0, 1.0]


def test_backoff_gives_up_after_the_patience_with_one_line(caplog):
    from sqlalchemy import create_engine, text

    url = "sqlite:////nonexistent-dir/runs.db"
    engine = create_engine(url)
    backoff = Backoff(url, patience=0.6, first_delay=0.05)

    def query() -> int:
        with engine.connect() as conn:
            return conn.execute(text("select 1")).scalar_one()

    with (
        caplog.at_level(logging.WARNING, "harness.workers.loop"),
        pytest.raises(DatabaseUnreachable) as exc,
    ):
        backoff.call("claim", query)
    message = str(exc.value)
    assert message.startswith(f"database {url} unreachable for ")
    assert "(--db-patience 0.6; last error: unable to open database file)" in message
    assert "\n" not in message
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) >= 3 and retries[0].startswith("claim: database unreachable")
    delays = [float(m.split(" in ")[1].split(" s")[0]) for m in retries]
    assert max(delays) <= 0.6  # never waits past the patience


def test_worker_options_for_faults(capsys, sqlite_url):
    from harness.cli import main

    assert main(["worker", "--db", sqlite_url, "--db-patience", "-1"]) == 1
    err = capsys.readouterr().err
    assert err == "harness: error: --db-patience must be 0 or more seconds (got -1)\n"
    assert main(["worker", "--db", sqlite_url, "--runner", "no_such_module:run_job"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("harness: error: --runner no_such_module:run_job: No module named")
    assert err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    out = capsys.readouterr().out
    assert "--db-patience" in out and "--runner" not in out  # a test hook, not for users
