"""Verified downloads and safe archive extraction.

A file is streamed to `<name>.part` beside its destination, its published checksum checked,
and only then renamed into place, so an interrupted or corrupt download never looks present.
`HARNESS_DATA_MIRROR` (or the `mirror` argument) replaces each file's official URL by
`<mirror>/<filename>`: for a local mirror, and for tests that must not touch the network.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness.datasets._core import DatasetError, file_hash

MIRROR_ENV = "HARNESS_DATA_MIRROR"
TIMEOUT_S = 60


@dataclass(frozen=True)
class Remote:
    """One published file: where it lives, what it is called on disk, its published checksum."""

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None

    @property
    def checksum(self) -> tuple[str, str] | None:
        if self.sha256:
            return ("sha256", self.sha256)
        if self.md5:
            return ("md5", self.md5)
        return None

    def source_url(self, mirror: str | None = None) -> str:
        mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
        if mirror:
            return f"{mirror.rstrip('/')}/{self.filename}"
        return self.url


def check_file(name: str, remote: Remote, path: Path, fix: str | None = None) -> None:
    """Raise with both digests when `path` does not match the published checksum."""
    if remote.checksum is None:
        return
    algorithm, expected = remote.checksum
    actual = file_hash(path, algorithm)
    if actual != expected:
        fix = fix or f"delete {path} and run `harness data fetch {name}`"
        raise DatasetError(f"{name}: {differs(remote.filename, algorithm, expected, actual)}; {fix}")


def differs(filename: str, algorithm: str, expected: str, actual: str) -> str:
    return f"{filename} differs from the official file ({algorithm} expected {expected}, got {actual})"


def download(name: str, remote: Remote, directory: Path, mirror: str | None = None) -> Path:
    """Download `remote` into `directory` unless a verified copy is there; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / remote.filename
    if target.is_file():
        check_file(name, remote, target)
        return target
    url = remote.source_url(mirror)
    # Per-process name: two workers fetching the same file never write into each other's.
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        _stream(url, part, remote.filename)
        check_file(
            name,
            remote,
            part,
            fix=f"{url} did not serve the published file (nothing was kept); retry later, or "
            f"download it by hand to {target}",
        )
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        if isinstance(exc, DatasetError):
            raise
        reason = getattr(exc, "reason", None) or exc
        official = f" (official URL {remote.url})" if url != remote.url else ""
        raise DatasetError(
            f"{name}: download of {url} failed ({reason}){official}; download it by hand and put it at "
            f"{target} (see docs/DATASETS.md), then run `harness data fetch {name}` again"
        ) from None
    os.replace(part, target)
    return target


def _stream(url: str, dest: Path, label: str) -> None:
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "gradattn-harness"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        # disable=None: a progress bar on a terminal, silence in logs and pipes.
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=label, leave=False, disable=None
        ) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                bar.update(len(block))


def _inside(root: Path, member: str) -> Path:
    target = (root / member).resolve()
    if target != root and root not in target.parents:
        raise DatasetError(
            f"refusing to extract archive member {member!r}: it would land outside {root}; "
            "the archive is not the published one, delete it and fetch again"
        )
    return target


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip or tar archive; any member that would land outside `target` (absolute
    path, `..`, or a link pointing out) is refused before anything is written."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _inside(root, info.filename)
            zf.extractall(root)
        return
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                _inside(root, member.name)
                if member.issym():  # a symlink's target is named from its own directory
                    _inside(root, str(Path(member.name).parent / member.linkname))
                elif member.islnk():  # a hard link's target is named from the archive root
                    _inside(root, member.linkname)
                if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                    raise DatasetError(f"refusing to extract special file {member.name!r}")
            if hasattr(tarfile, "data_filter"):
                tf.extractall(root, members=members, filter="data")
            else:  # Python without extraction filters: members were checked above
                tf.extractall(root, members=members)
    except tarfile.TarError as exc:
        raise DatasetError(f"cannot extract {archive} ({exc}); delete it and fetch again") from None


def gunzip(source: Path, dest: Path) -> None:
    """Decompress `source` (.gz) to `dest` through a temporary file."""
    import gzip

    part = dest.with_name(dest.name + ".part")
    try:
        with gzip.open(source, "rb") as fin, open(part, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    except (OSError, EOFError) as exc:
        part.unlink(missing_ok=True)
        raise DatasetError(
            f"cannot decompress {source} ({exc}); the file is corrupt or truncated: delete it "
            "and fetch again"
        ) from None
    os.replace(part, dest)
