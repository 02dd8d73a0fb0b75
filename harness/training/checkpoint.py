"""Per-epoch training checkpoints: written atomically, read back only for the same job.

torch is imported inside the functions that need it, so `write_atomically` (the file-level
part) stays cheap for processes that never touch a model (the fault suite's stand-in runner).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from harness import faults
from harness.errors import HarnessError

if TYPE_CHECKING:
    import torch

FORMAT = 1

# What to do about a failed write, by errno; the message names the path in any case.
_FIXES = {
    errno.ENOSPC: "free space on that file system or point --checkpoints at one with room",
    errno.EDQUOT: "free space (disk quota exceeded) or point --checkpoints elsewhere",
    errno.EFBIG: "the file exceeds this process's file-size limit (ulimit -f) or the file "
    "system's; raise the limit or point --checkpoints elsewhere",
    errno.EACCES: "make the directory writable by this worker's user or point --checkpoints "
    "at one that is",
    errno.EPERM: "make the directory writable by this worker's user or point --checkpoints "
    "at one that is",
    errno.EROFS: "the file system is read-only; point --checkpoints at a writable directory",
}


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(handle)` on a temporary file next to `path`, fsync it, rename it over `path`.

    A crash mid-write leaves the previous file intact, never a truncated one; a failed write
    (full disk, no permission) removes the temporary file and raises ONE HarnessError naming
    the path and the fix, so the job fails with a readable reason."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as raw:
            handle = _Recording(raw)
            try:
                write(handle)  # type: ignore[arg-type]
            except OSError:
                raise
            except Exception:
                # torch.save turns a failed write into "RuntimeError: [enforce fail ...]
                # unexpected pos", losing the reason; the OSError it swallowed is the reason.
                if handle.error is not None:
                    raise handle.error from None
                raise
            raw.flush()
            os.fsync(raw.fileno())
        faults.point("checkpoint")
        os.replace(tmp, path)
    except OSError as exc:
        fix = _FIXES.get(exc.errno or 0, "check the directory, or point --checkpoints elsewhere")
        raise HarnessError(
            f"cannot write checkpoint {path}: {exc.strerror or exc} (errno {exc.errno}); {fix}; "
            "then `harness retry --failed`"
        ) from exc
    finally:
        # An unusable directory raises here too: there is no temporary file to remove then.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


class _Recording:
    """A binary file that remembers the OSError of a failed write (see write_atomically)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.raw.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (torch tensors included) to `path` atomically (write_atomically)."""
    import torch

    write_atomically(path, lambda handle: torch.save({"format": FORMAT, **state}, handle))


def stray_temporaries(path: Path) -> list[Path]:
    """Temporary files of `path` left by writers killed mid-write (`.<name>.<pid>.tmp`)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def load_checkpoint(path: Path, job_key: str, device: str | torch.device) -> dict[str, Any]:
    """The checkpoint at `path`, checked to belong to the job `job_key`."""
    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        # torch's own text may suggest weights_only=False: never pass that on (it would run
        # whatever code the file holds); name the file and the safe fix instead.
        raise HarnessError(
            f"cannot read checkpoint {path.resolve()} ({type(exc).__name__}): it is damaged or "
            "not a harness checkpoint; delete it to restart the job from epoch 1"
        ) from None
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
