"""Verified downloads and safe archive extraction.

A file is streamed to `<name>.part` beside its destination, its published checksum checked,
and only then renamed into place, so an interrupted or corrupt download never looks present.
Transient failures are retried with backoff and resumed with HTTP Range requests.
`HARNESS_DATA_MIRROR` (or the `mirror` argument) replaces each file's official URL by
`<mirror>/<filename>`: for a local mirror, and for tests that must not touch the network.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.datasets._core import DatasetError, file_hash

MIRROR_ENV = "HARNESS_DATA_MIRROR"
TIMEOUT_S = 60
RETRIES = 4  # after the first try
BACKOFF_ENV = "HARNESS_DOWNLOAD_BACKOFF"  # seconds before the first retry; doubles each time
BACKOFF_S = 2.0
# Worth another try: the server, or the path to it, may recover. Anything else (404, 403, an
# unknown URL scheme) fails at once.
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})

log = logging.getLogger(__name__)


class _Truncated(OSError):
    """The body ended before its Content-Length: retried, resuming from what arrived."""


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
    """Download `remote` into `directory` unless a verified copy is there; return its path.

    Transient failures (connection errors, timeouts, a body cut short, HTTP 408/429/5xx) are
    retried with exponential backoff, each retry resuming `<file>.part` with an HTTP Range
    request; a run that still fails keeps the part for the next run to resume. The finished
    file is verified before it is renamed into place; a resumed file that fails is fetched once
    more from byte zero (its start may come from an older copy of the file)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / remote.filename
    if target.is_file():  # hashed outside the lock: workers verifying a copy never queue
        check_file(name, remote, target)
        return target
    url = remote.source_url(mirror)
    part = target.with_name(f"{target.name}.part")
    fix = (
        f"{url} did not serve the published file (nothing was kept); retry later, or download "
        f"it by hand to {target}"
    )
    # One writer per directory across processes: two workers never append to the same part.
    with _directory_lock(directory):
        if target.is_file():  # another process finished it while this one waited
            check_file(name, remote, target)
            return target
        try:
            stitched = _fetch(url, part, remote.filename)
            try:
                check_file(name, remote, part, fix=fix)
            except DatasetError:
                if not stitched:
                    raise
                log.info("%s: resumed %s failed its checksum; fetching it again from the "
                         "start", name, remote.filename)  # fmt: skip
                part.unlink()
                _fetch(url, part, remote.filename)
                check_file(name, remote, part, fix=fix)
        except DatasetError:
            part.unlink(missing_ok=True)
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            official = f" (official URL {remote.url})" if url != remote.url else ""
            kept = part.stat().st_size if part.is_file() else 0
            resume = (
                f"; {kept:,} bytes are kept in {part.name} and the next fetch resumes there"
                if kept
                else ""
            )
            raise DatasetError(
                f"{name}: download of {url} failed{_after(exc)} ({reason}){official}"
                f"{resume}; run `harness data fetch {name}` again later, or download it by hand "
                f"and put it at {target} (see docs/DATASETS.md)"
            ) from None
        os.replace(part, target)
    return target


def _after(exc: BaseException) -> str:
    tries = getattr(exc, "harness_tries", 1)
    return f" after {tries} tries" if tries > 1 else ""


def _backoff_s() -> float:
    try:
        return float(os.environ.get(BACKOFF_ENV, BACKOFF_S))
    except ValueError:
        return BACKOFF_S


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in TRANSIENT_HTTP
    if isinstance(exc, urllib.error.URLError):
        return not isinstance(exc.reason, str)  # a socket error, not e.g. "unknown url type"
    return isinstance(exc, (http.client.HTTPException, ConnectionError, TimeoutError, _Truncated))


def _fetch(url: str, part: Path, label: str) -> bool:
    """Stream `url` into `part`, resuming what is there and retrying transient failures;
    return whether a request may have appended to bytes an earlier one wrote (the file is then
    worth one more fetch from zero if it fails its checksum)."""
    stitched = part.is_file() and part.stat().st_size > 0
    for attempt in range(RETRIES + 1):
        try:
            _stream(url, part, label)
            return stitched
        except Exception as exc:
            if attempt == RETRIES or not _transient(exc):
                exc.harness_tries = attempt + 1  # type: ignore[attr-defined]  # for the message
                raise
            wait = _backoff_s() * 2**attempt
            have = part.stat().st_size if part.is_file() else 0
            log.info("%s: %s (%s); retry %d of %d in %.1f s, resuming at byte %d",
                     label, type(exc).__name__, getattr(exc, "reason", None) or exc,
                     attempt + 1, RETRIES, wait, have)  # fmt: skip
            stitched = stitched or have > 0
            time.sleep(wait)
    raise AssertionError("unreachable")


def _stream(url: str, part: Path, label: str) -> None:
    """One request: append from the part's end when the server honours Range, else restart."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "gradattn-harness"}
    if offset and url.startswith(("http://", "https://")):
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the part already holds the whole file
            exc.close()
            return
        raise
    with response:
        status = getattr(response, "status", None) or 200
        ranged = status == 206 and (response.headers.get("Content-Range") or "").startswith(
            f"bytes {offset}-"
        )
        if not ranged:
            offset = 0  # the server ignored Range (or there was none): start from zero
        length = int(response.headers.get("Content-Length") or 0) or None
        total = offset + length if length else None
        received = 0
        with (
            open(part, "ab" if ranged else "wb") as out,
            # disable=None: a progress bar on a terminal, silence in logs and pipes.
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=label,
                 leave=False, disable=None) as bar,  # fmt: skip
        ):
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                received += len(block)
                bar.update(len(block))
        if length is not None and received < length:
            raise _Truncated(f"the body ended after {received} of {length} bytes")


@contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive flock on the directory itself (Linux and macOS allow it): nothing is
    left behind, and a killed holder releases it with its process."""
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock; two processes may share a part
        yield
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


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
