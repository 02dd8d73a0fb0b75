"""The base every dataset source module builds on: where its files live, fetch and verify."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.datasets._core import DatasetError, LoadedDataset, file_hash
from harness.datasets.download import Remote, differs, download
from harness.datasets.shape import DataShape

MANIFEST = ".manifest.json"


@dataclass(frozen=True)
class FileStatus:
    path: Path
    ok: bool
    note: str  # what was found: "md5 ok", "missing", "... differs from the official file ..."
    fix: str = ""  # what to do about a failing file


class Source:
    """One dataset source. Subclasses set `name`, `remotes`, and implement `_load`
    (and `_prepare` when downloaded files must be unpacked)."""

    name: str = ""
    label: str = ""  # the paper's name for it, as the report prints it ("CIFAR-10")
    shape: DataShape | None = None  # for the benchmarks; None = not benchmarked
    remotes: tuple[Remote, ...] = ()
    manual: str | None = None  # manual-download instructions when there is no automatic fetch
    options: tuple[str, ...] = ()
    # md5s published for unpacked files (path relative to `directory`), e.g. torchvision's
    # per-batch digests for CIFAR-10: `verify` checks these even when the archive is gone.
    unpacked_md5: dict[str, str] = {}

    def candidates(self, root: Path) -> list[Path]:
        """Folders that may hold this source's files: ours first, then the layouts other tools
        write (torchvision, medmnist), so that a user who has the data never fetches it again."""
        return [Path(root) / self.name]

    def directory(self, root: Path, **options: Any) -> Path:
        """The first candidate folder holding every file the loader reads, else ours (where
        `fetch` puts them)."""
        folders = self.candidates(root)
        if len(folders) > 1:
            for folder in folders:
                files = self.files_in(folder, **options)
                if files and all(self._available(p) for p in files):
                    return folder
        return folders[0]

    # -- fetching --------------------------------------------------------------------------
    def fetch(self, root: Path, mirror: str | None = None) -> None:
        """Download every published file (verified), then unpack what the loader reads."""
        directory = self.directory(root)
        if self.manual and not self.remotes:
            raise DatasetError(self.manual.format(dir=directory))
        unpacked = self.present(root)
        for remote in self.remotes:
            if unpacked and not (directory / remote.filename).is_file():
                continue  # the archive was deleted after unpacking; `verify` uses the manifest
            download(self.name, remote, directory, mirror)
        if not unpacked:  # already unpacked: the checks above were all that was needed
            self._record(directory, self._prepare(directory))

    def _prepare(self, directory: Path) -> list[Path]:
        """Unpack downloaded files; return the derived files whose digest `verify` re-checks."""
        return []

    def _record(self, directory: Path, produced: list[Path]) -> None:
        if not produced:
            return
        path = directory / MANIFEST
        manifest = json.loads(path.read_text()) if path.is_file() else {}
        manifest.update({str(p.relative_to(directory)): file_hash(p) for p in produced})
        tmp = directory / f"{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, path)

    # -- inspecting ------------------------------------------------------------------------
    def files_in(self, directory: Path, **options: Any) -> list[Path]:
        """The files the loader reads from `directory` (default: the published files)."""
        return [directory / r.filename for r in self.remotes]

    def required_files(self, root: Path, **options: Any) -> list[Path]:
        """The files the loader reads, where they are found."""
        return self.files_in(self.directory(root, **options), **options)

    def _available(self, path: Path) -> bool:
        """Whether the loader can read `path` (a source may unpack it on load)."""
        return path.is_file()

    def present(self, root: Path, **options: Any) -> bool:
        return all(self._available(p) for p in self.required_files(root, **options))

    def size_on_disk(self, root: Path) -> int:
        directory = self.directory(root)
        if not directory.is_dir():
            return 0
        return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())

    def verify(self, root: Path) -> list[FileStatus]:
        """Check every file that has a digest to compare with: published files against their
        published checksum, unpacked files against torchvision's/medmnist's published md5 or
        the digest recorded when they were unpacked from a verified download."""
        directory = self.directory(root)
        expected: list[tuple[str, str, str, str]] = []  # (rel, algorithm, digest, whose)
        for remote in self.remotes:
            if remote.checksum is not None:
                expected.append((remote.filename, *remote.checksum, "official"))
        manifest_path = directory / MANIFEST
        if manifest_path.is_file():
            for rel, digest in json.loads(manifest_path.read_text()).items():
                expected.append((rel, "sha256", digest, "recorded"))
        for rel, digest in self.unpacked_md5.items():
            expected.append((rel, "md5", digest, "official"))
        statuses = [
            self._check_digest(directory, *entry)
            for entry in expected
            # an absent published file is reported below, if the loader needs it
            if (directory / entry[0]).is_file() or entry[3] == "recorded"
        ]
        checked = {s.path for s in statuses}
        for remote in self.remotes:
            path = directory / remote.filename
            if remote.checksum is None and path.is_file():
                statuses.append(FileStatus(path, True, "present (no checksum published)"))
                checked.add(path)
        for path in self.required_files(root):
            if not self._available(path):
                statuses.append(FileStatus(path, False, "missing", self._fetch_fix()))
            elif path not in checked and path.is_file():
                statuses.append(FileStatus(path, True, "present (no checksum published)"))
        return statuses

    def _fetch_fix(self, path: Path | None = None) -> str:
        delete = f"delete {path} and " if path is not None else ""
        return f"{delete}run `harness data fetch {self.name}`"

    def _check_digest(
        self, directory: Path, rel: str, algorithm: str, digest: str, whose: str
    ) -> FileStatus:
        """One file against one digest: `official` ones were published, `recorded` ones were
        written to the manifest when the file was unpacked from a verified download."""
        path = directory / rel
        if not path.is_file():
            return FileStatus(path, False, "missing (unpacked earlier)", self._fetch_fix())
        actual = file_hash(path, algorithm)
        if actual == digest:
            return FileStatus(path, True, f"{algorithm} ok")
        if whose == "recorded":
            problem = f"{algorithm} mismatch: recorded {digest}, got {actual}"
        else:
            problem = differs(rel, algorithm, digest, actual)
        return FileStatus(path, False, problem, self._fetch_fix(path))

    # -- loading ---------------------------------------------------------------------------
    def load(
        self,
        root: Path,
        split_seed: int = 42,
        protocol: str = "paper",
        download: bool = False,
        **options: Any,
    ) -> LoadedDataset:
        from harness.datasets._core import check_options, check_protocol

        check_protocol(protocol)
        check_options(self.name, options, self.options)
        if download and not self.present(Path(root), **options):
            self.fetch(Path(root))
        return self._load(Path(root), split_seed, protocol, **options)

    def _load(self, root: Path, split_seed: int, protocol: str, **options: Any) -> LoadedDataset:
        raise NotImplementedError
