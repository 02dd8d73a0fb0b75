"""Per-epoch training checkpoints: written atomically, read back only for the same job."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError

FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` via a temporary file and os.replace: a crash mid-write leaves
    the previous checkpoint intact, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format": FORMAT, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path, job_key: str, device: str | torch.device) -> dict[str, Any]:
    """The checkpoint at `path`, checked to belong to the job `job_key`."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise HarnessError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {exc}); delete it to restart "
            "the job from epoch 1"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise HarnessError(
            f"checkpoint {path} has an unknown format; delete it to restart the job from epoch 1"
        )
    if state.get("job_key") != job_key:
        raise HarnessError(
            f"checkpoint {path} belongs to job {state.get('job_key')}, not {job_key}; "
            "give each job its own checkpoint path (or delete the file)"
        )
    return state
