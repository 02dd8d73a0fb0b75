"""Where a result came from: code version, packages, device, host, determinism, data digest.

Everything is JSON-able and collecting it never fails: a missing piece is recorded as None.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from harness import __version__
from harness.experiment.config import TrainConfig

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: Path = SOURCE_ROOT) -> dict[str, Any]:
    """Commit and dirty flag of the source tree when it is a git checkout (else both None)."""
    if not (root / ".git").exists():
        return {"git_commit": None, "git_dirty": None}
    commit = _git(root, "rev-parse", "HEAD")
    # Only tracked files count: untracked run outputs (runs.db, reports/) do not make code dirty.
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def device_info(device: str) -> dict[str, Any]:
    """Name of the accelerator (or CPU model) and, on CUDA, driver/runtime versions."""
    info: dict[str, Any] = {"device": device}
    try:
        if device.startswith("cuda") and torch.cuda.is_available():
            index = torch.device(device).index or 0
            props = torch.cuda.get_device_properties(index)
            info["device_name"] = props.name
            info["device_memory_gib"] = round(props.total_memory / 2**30, 1)
            info["cuda_runtime"] = torch.version.cuda
            info["cudnn"] = torch.backends.cudnn.version()
            info["driver"] = _nvidia_driver()
        else:
            info["device_name"] = cpu_model()
    except Exception as exc:  # provenance must never fail a job
        info["device_name"] = None
        info["device_error"] = f"{type(exc).__name__}: {exc}"
    return info


def _nvidia_driver() -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def determinism_flags() -> dict[str, Any]:
    """The global switches that decide whether a rerun is bitwise identical."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def collect(device: str, dataset_digest: str, config: TrainConfig) -> dict[str, Any]:
    """One JSON-able provenance record for a result row."""
    return {
        "harness_version": __version__,
        **git_state(),
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "torch": torch.__version__,
        "torchvision": _package_version("torchvision"),
        "numpy": _package_version("numpy"),
        "scikit_learn": _package_version("scikit-learn"),
        **device_info(device),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "determinism": {**determinism_flags(), "requested": config.deterministic},
        "precision": config.precision,
        "dataset_digest": dataset_digest,
        "threads": torch.get_num_threads(),
    }
