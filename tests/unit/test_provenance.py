"""harness.training.provenance: JSON-able, honest about git state, never failing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from harness import __version__
from harness.experiment.config import TrainConfig
from harness.training.provenance import SOURCE_ROOT, collect, git_state


def test_collect_is_json_and_complete() -> None:
    record = collect("cpu", "sha256:feed", TrainConfig(deterministic=False))
    assert json.loads(json.dumps(record)) == record
    assert record["harness_version"] == __version__
    assert record["torch"] == torch.__version__
    assert record["dataset_digest"] == "sha256:feed"
    assert record["device"] == "cpu" and record["device_name"]
    assert record["threads"] == torch.get_num_threads()
    assert record["determinism"]["requested"] is False
    assert record["determinism"]["deterministic_algorithms"] == (
        torch.are_deterministic_algorithms_enabled()
    )
    for key in ("python", "torchvision", "numpy", "scikit_learn", "host"):
        assert record[key]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")
def test_git_state_of_a_real_repository(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-qm", "one")
    state = git_state(tmp_path)
    assert state == {"git_commit": git("rev-parse", "HEAD"), "git_dirty": False}
    (tmp_path / "runs.db").write_text("untracked output does not make the code dirty")
    assert git_state(tmp_path)["git_dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["git_dirty"] is True


def test_not_a_checkout_gives_none(tmp_path: Path) -> None:
    assert git_state(tmp_path) == {"git_commit": None, "git_dirty": None}


def test_this_checkout_commit_is_recorded() -> None:
    if not (SOURCE_ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("the harness is not running from a git checkout")
    head = subprocess.run(
        ["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert collect("cpu", "d", TrainConfig())["git_commit"] == head
