"""`--json` documents, list options, `--db` before the sub-command, `status --watch` on a pipe
and on a terminal, and `report --html` / `--format`: through the real entry point."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import dataset_files as files
from synthetic_db import SyntheticRun, fill_synthetic

from harness.cli import main
from harness.experiment.config import JobSpec, resolve_config
from harness.queue import jobs as queue
from harness.queue.recording import record_epoch
from harness.store.engine import make_engine
from harness.training.outcome import EpochRecord


def _json(capsys, *argv: str) -> tuple[int, object]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert not err.strip() or code != 0, err
    return code, json.loads(out)


def _running_job(url: str) -> int:
    """Two queued jobs; one claimed with 2 of its 5 epochs recorded (3.0 + 1.0 s each)."""
    engine = make_engine(url)
    config = resolve_config("paper", "digits", "resnet18", {"max_epochs": 5})
    queue.enqueue(engine, [JobSpec("resnet18", "digits", s, 42, "paper", config) for s in (1, 2)], "t")
    queue.register_worker(engine, "host:1:0", "host", 1, "cpu")
    job = queue.claim(engine, "host:1:0", "cpu", 300)
    for epoch, (loss, val) in enumerate(((1.5, 0.4), (0.9, 0.7)), start=1):
        assert record_epoch(engine, job.lease, EpochRecord(epoch, loss, 0.5, 1.0, val, 0.1, 3.0, 1.0), 300, 1)
    return job.id


def test_status_json_has_the_counts_and_each_running_jobs_progress(capsys, sqlite_url):
    job_id = _running_job(sqlite_url)
    code, doc = _json(capsys, "status", "--db", sqlite_url, "--json")
    assert code == 0
    assert doc["counts"]["queued"] == 1 and doc["counts"]["running"] == 1 and doc["total"] == 2
    assert doc["paused"] is False and doc["failed"] == []
    (running,) = doc["running"]
    assert running["id"] == job_id and running["epoch"] == 2 and running["max_epochs"] == 5
    assert running["val_acc"] == 0.7 and running["train_loss"] == 0.9
    assert running["mean_epoch_seconds"] == 4.0 and running["eta_seconds"] == 12.0  # 3 x 4 s
    assert doc["remaining_epochs"] == 8 and doc["eta_seconds"] == 32.0  # (3 + 5) x 4 s
    # The text says the same per job.
    assert main(["status", "--db", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert f"#{job_id} resnet18/digits/seed 1 [paper] epoch 2/5 (val top-1 0.7000, train loss " \
           "0.9000, 4.0 s/epoch, ETA <= 12.0 s) on host:1:0" in out  # fmt: skip
    assert main(["status", "--db", sqlite_url, "--json", "--watch"]) == 1
    assert "drop --watch" in capsys.readouterr().err


def test_db_before_or_after_the_subcommand_and_the_env(capsys, sqlite_url, tmp_path, monkeypatch):
    _running_job(sqlite_url)
    monkeypatch.setenv("HARNESS_DB", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    before = _json(capsys, "--db", sqlite_url, "status", "--json")
    after = _json(capsys, "status", "--json", "--db", sqlite_url)
    assert before == after and before[1]["total"] == 2
    # Given twice, the one after the sub-command wins; neither: HARNESS_DB.
    assert main(["--db", "sqlite:///nowhere.db", "status", "--db", sqlite_url]) == 0
    capsys.readouterr()
    assert main(["status"]) == 1
    assert "elsewhere.db" in capsys.readouterr().err


def test_list_options_take_commas_spaces_or_repeats(capsys):
    base = ["enqueue", "--grid", "paper", "--dry-run", "--json"]
    plans = [
        _json(capsys, *base, "--models", "resnet18,gradattn_rope", "--datasets", "svhn", "cifar10",
              "--seed-list", "1,2", "3")[1],
        _json(capsys, *base, "--models", "resnet18", "gradattn_rope", "--datasets", "svhn,cifar10",
              "--seed-list", "1", "2", "3")[1],
        _json(capsys, *base, "--models", "resnet18,", "--models", "gradattn_rope",
              "--datasets", "svhn, cifar10", "--seed-list", "1,2,3")[1],
    ]  # fmt: skip
    assert plans[0] == plans[1] == plans[2]
    assert plans[0]["job_count"] == 2 * 2 * 3 and plans[0]["seeds"] == [1, 2, 3]
    assert main([*base, "--seed-list", "1,x"]) == 1
    assert "--seed-list '1,x' is not a comma-separated list of integers" in capsys.readouterr().err


def test_enqueue_dry_run_json_lists_every_job_and_queues_nothing(capsys, sqlite_url):
    code, plan = _json(capsys, "enqueue", "--grid", "demo", "--seeds", "2", "--dry-run", "--json",
                       "--sweep", "lr=0.1,0.01", "--db", sqlite_url)  # fmt: skip
    assert code == 0 and plan["grid"] == "demo" and plan["job_count"] == 2 * 2 * 2
    assert plan["sweep"] == {"lr": [0.1, 0.01]} and plan["settings"] == [{"lr": 0.1}, {"lr": 0.01}]
    assert {job["config"]["lr"] for job in plan["jobs"]} == {0.1, 0.01}
    assert len({job["key"] for job in plan["jobs"]}) == 8
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
    # The real enqueue: the same keys, then idempotent.
    code, done = _json(capsys, "enqueue", "--grid", "demo", "--seeds", "2", "--json",
                       "--sweep", "lr=0.1,0.01", "--db", sqlite_url)  # fmt: skip
    assert (done["new"], done["existing"]) == (8, 0) and "jobs" not in done
    code, again = _json(capsys, "enqueue", "--grid", "demo", "--seeds", "2", "--json",
                        "--sweep", "lr=0.1,0.01", "--db", sqlite_url)  # fmt: skip
    assert (again["new"], again["existing"]) == (0, 8)


def test_models_and_data_json(capsys, tmp_path):
    code, doc = _json(capsys, "models", "--json", "--in-channels", "1", "--num-classes", "7")
    assert code == 0 and doc["in_channels"] == 1 and doc["num_classes"] == 7
    names = [m["name"] for m in doc["models"]]
    assert names[0] == "resnet18" and "gradattn_rope" in names and len(names) == 6
    assert all(isinstance(m["parameters"], int) and m["parameters"] > 10**6 for m in doc["models"])

    files.write_fashionmnist(tmp_path, gz=True)  # tiny files: every published checksum fails
    code, listing = _json(capsys, "data", "list", "--json", "--data", str(tmp_path))
    by_name = {d["name"]: d for d in listing["datasets"]}
    assert by_name["fashionmnist"]["present"] and by_name["fashionmnist"]["bytes"] > 0
    assert not by_name["svhn"]["present"] and by_name["svhn"]["digest"] is None
    assert by_name["digits"]["embedded"] and by_name["digits"]["digest"]
    code = main(["data", "verify", "fashionmnist", "--json", "--data", str(tmp_path)])
    out, err = capsys.readouterr()
    report = json.loads(out)  # the document still comes, the exit code and one line say it failed
    assert code == 1 and report["failing"] == 4 and len(report["files"]) == 4
    assert all(not f["ok"] and "differs from the official file" in f["note"] for f in report["files"])
    assert all("harness data fetch fashionmnist" in f["fix"] for f in report["files"])
    assert err.startswith("harness: error: 4 file(s)") and len(err.strip().splitlines()) == 1


def _harness(*argv: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *argv], **kwargs)


def test_watch_piped_prints_plain_blocks(sqlite_url):
    _running_job(sqlite_url)
    proc = _harness("status", "--watch", "--interval", "0.3", "--db", sqlite_url,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    time.sleep(6)  # interpreter start-up, then several refreshes
    proc.terminate()
    out, err = proc.communicate(timeout=60)
    text = out.decode()
    assert "\x1b" not in text, text  # no terminal codes in a pipe or a log file
    assert text.count("--- ") >= 2 and text.count("jobs: 1 queued, 1 running") >= 2, (text, err)


def test_watch_on_a_terminal_draws_a_live_table(sqlite_url):
    job_id = _running_job(sqlite_url)
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = _harness("status", "--watch", "--interval", "0.3", "--db", sqlite_url,
                    stdout=follower, stderr=follower, env=env)  # fmt: skip
    os.close(follower)
    screen, deadline = b"", time.monotonic() + 60
    while time.monotonic() < deadline and screen.count(b"running jobs") < 2:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                screen += os.read(leader, 65536)
            except OSError:
                break
    proc.terminate()
    proc.wait(timeout=60)
    os.close(leader)
    text = screen.decode(errors="replace")
    assert text.count("running jobs") >= 2, text  # drawn, then redrawn in place
    assert "\x1b[" in text  # cursor movement: a redraw, not appended blocks
    assert f"#{job_id}" in text and "2/5" in text and "0.7000" in text and "<= 12.0 s" in text
    assert "seed 1 [paper]" in text  # the label is text, not rich markup
    assert "--- " not in text


def test_report_html_or_only_the_formats_asked_for(capsys, sqlite_url, tmp_path):
    fill_synthetic(make_engine(sqlite_url), [SyntheticRun("resnet18", "svhn", 1, grad_means=[])])
    out = tmp_path / "out"
    assert main(["report", "--db", sqlite_url, "--out", str(out), "--format", "md"]) == 0
    written = sorted(p.name for p in (out / "synthetic").iterdir())
    assert written == ["report.md"], written  # no HTML, no figures
    assert f"report written: {out / 'synthetic' / 'report.md'}" in capsys.readouterr().out
    assert main(["report", "--html", "--db", sqlite_url, "--out", str(out), "--format", "md"]) == 0
    written = {p.name for p in (out / "synthetic").iterdir()}
    assert {"index.html", "report.md"} <= written and any(n.endswith(".png") for n in written)
    assert main(["report", "--db", sqlite_url, "--out", str(out)]) == 0  # default: the HTML
    assert "index.html" in capsys.readouterr().out.splitlines()[-1]
