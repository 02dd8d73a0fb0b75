"""Verified downloads over a real local HTTP server, safe extraction, and `harness data`."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import dataset_files as files
import pytest

from harness import datasets
from harness.cli import main
from harness.datasets import _source
from harness.datasets.download import Remote, download, safe_extract

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/served; yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


def test_download_verifies_then_renames(server, tmp_path):
    folder, base = server
    payload = os.urandom(300_000)
    (folder / "blob.bin").write_bytes(payload)
    remote = Remote(
        "https://example.invalid/blob.bin", "blob.bin", sha256=hashlib.sha256(payload).hexdigest()
    )
    target = download("demo", remote, tmp_path / "out", mirror=base)
    assert target.read_bytes() == payload
    assert not list((tmp_path / "out").glob("*.part"))
    (folder / "blob.bin").unlink()  # present and verified: no second download
    assert download("demo", remote, tmp_path / "out", mirror=base) == target


def test_checksum_mismatch_reports_both_digests_and_leaves_nothing(server, tmp_path):
    folder, base = server
    (folder / "blob.bin").write_bytes(b"not the published bytes")
    expected = "0" * 32
    remote = Remote("https://example.invalid/blob.bin", "blob.bin", md5=expected)
    actual = hashlib.md5(b"not the published bytes").hexdigest()
    with pytest.raises(datasets.DatasetError, match=rf"md5 expected {expected}, got {actual}"):
        download("demo", remote, tmp_path / "out", mirror=base)
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor its .part


def test_file_url_download(tmp_path):
    source = tmp_path / "published.bin"
    source.write_bytes(b"abc" * 1000)
    remote = Remote(source.as_uri(), "copy.bin", md5=hashlib.md5(b"abc" * 1000).hexdigest())
    assert download("demo", remote, tmp_path / "out").read_bytes() == b"abc" * 1000


def test_unreachable_url_names_it_and_the_manual_path(tmp_path):
    remote = Remote("http://127.0.0.1:9/x.tar.gz", "x.tar.gz", md5="0" * 32)
    with pytest.raises(datasets.DatasetError) as info:
        download("demo", remote, tmp_path)
    message = str(info.value)
    assert "http://127.0.0.1:9/x.tar.gz" in message and str(tmp_path / "x.tar.gz") in message
    assert "\n" not in message


def test_load_with_download_goes_through_the_same_verified_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_MIRROR", "http://127.0.0.1:9")
    with pytest.raises(
        datasets.DatasetError, match=r"svhn: download of http://127\.0\.0\.1:9/train_32x32\.mat"
    ):
        datasets.load("svhn", tmp_path, download=True)
    assert not list((tmp_path / "svhn").iterdir())


def _tar_with(
    path: Path, name: str, data: bytes = b"x", link: str | None = None, hard: str | None = None
) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        if hard is not None:  # a real member for a hard link inside the archive to name
            real = tarfile.TarInfo("dir/real.txt")
            real.size = 4
            tf.addfile(real, io.BytesIO(b"real"))
        info = tarfile.TarInfo(name)
        if link is not None or hard is not None:
            kind = tarfile.SYMTYPE if link is not None else tarfile.LNKTYPE
            info.type, info.linkname = kind, link if link is not None else hard
            tf.addfile(info)
        else:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_archive_members_outside_the_target_are_refused(tmp_path):
    target = tmp_path / "target"
    evil_zip = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil_zip, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr("../escaped.txt", "bad")
    with pytest.raises(datasets.DatasetError, match=r"'\.\./escaped\.txt'.*outside"):
        safe_extract(evil_zip, target)
    assert not (tmp_path / "escaped.txt").exists() and not (target / "fine.txt").exists()
    with pytest.raises(datasets.DatasetError, match="outside"):
        safe_extract(_tar_with(tmp_path / "a.tar.gz", "sub/../../escaped.txt"), target)
    with pytest.raises(datasets.DatasetError, match="outside"):
        safe_extract(_tar_with(tmp_path / "b.tar.gz", "link", link="../../etc/passwd"), target)
    assert not (tmp_path / "escaped.txt").exists()
    safe_extract(_tar_with(tmp_path / "c.tar.gz", "dir/inside.txt", b"fine"), target)
    assert (target / "dir" / "inside.txt").read_bytes() == b"fine"


class _ServedArchive(_source.Source):
    """A source like CIFAR-10's (one tar.gz, unpacked) whose published file the test serves."""

    name = "served"

    def __init__(self, remote: Remote) -> None:
        self.remotes = (remote,)

    def required_files(self, root, **options):
        return [self.directory(root) / "unpacked" / "data.bin"]

    def _prepare(self, directory):
        safe_extract(directory / self.remotes[0].filename, directory)
        return self.required_files(directory.parent)


def test_fetch_unpacks_records_and_verify_catches_tampering(server, tmp_path):
    folder, base = server
    archive = _tar_with(folder / "served.tar.gz", "unpacked/data.bin", b"payload" * 100)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    source = _ServedArchive(
        Remote("https://example.invalid/served.tar.gz", "served.tar.gz", sha256=digest)
    )
    root = tmp_path / "data"
    source.fetch(root, mirror=base)
    assert source.present(root)
    assert all(s.ok for s in source.verify(root)) and len(source.verify(root)) == 2
    (root / "served" / "served.tar.gz").unlink()  # archive removed after unpacking
    source.fetch(root, mirror="http://127.0.0.1:9")  # nothing to download: no network needed
    assert [s.ok for s in source.verify(root)] == [True]  # the manifest still vouches
    (root / "served" / "unpacked" / "data.bin").write_bytes(b"tampered")
    bad = [s for s in source.verify(root) if not s.ok]
    assert len(bad) == 1 and "sha256 mismatch" in bad[0].note


def _run_cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    env["HARNESS_DOWNLOAD_BACKOFF"] = "0.01"
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


def test_cli_list_on_an_empty_root_and_offline_fetch(tmp_path):
    empty = tmp_path / "empty"
    listed = _run_cli("data", "list", "--data", str(empty))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines[1:]] == list(datasets.DATASET_NAMES)
    assert all(" no " in line for line in lines[1:-1]) and " yes " in lines[-1]
    fetched = _run_cli(
        "data",
        "fetch",
        "cifar10",
        "--data",
        str(empty),
        env_extra={"HARNESS_DATA_MIRROR": "http://127.0.0.1:9"},
    )
    assert fetched.returncode != 0
    errors = [line for line in fetched.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, fetched.stderr
    assert errors[0].startswith(
        "harness: error: cifar10: download of http://127.0.0.1:9/cifar-10-python.tar.gz"
    )
    assert str(empty / "cifar10" / "cifar-10-python.tar.gz") in errors[0]
    assert not (empty / "cifar10" / "cifar-10-python.tar.gz").exists()


def test_cli_fetch_checksum_mismatch_through_the_mirror(server, tmp_path, capsys):
    folder, base = server
    (folder / "train_32x32.mat").write_bytes(b"a tiny file, not SVHN")
    code = main(["data", "fetch", "svhn", "--data", str(tmp_path / "d"), "--mirror", base])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0
    assert (
        "train_32x32.mat differs from the official file (md5 expected e26dedcc434d2e4c54c9b2d4a06d8373"
        in err
    )
    assert hashlib.md5(b"a tiny file, not SVHN").hexdigest() in err


def test_cli_verify_and_list_with_files(tmp_path, capsys):
    files.write_fashionmnist(tmp_path, gz=True)
    assert main(["data", "verify", "fashionmnist", "--data", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out.count("FAIL") == 4 and "train-images-idx3-ubyte.gz differs from the official file (md5" in out
    assert err.startswith("harness: error: 4 file(s)") and "train-images-idx3-ubyte.gz" in err
    raw = tmp_path / "fashionmnist" / "FashionMNIST" / "raw"
    # Each row: the problem, then its fix; the error line: the first problem, then one fix.
    assert "differs from the official file (md5 expected 8d4fb7e6c68d591d4c3dfef9ec88bf0d, got " in out
    assert f"; delete {raw / 'train-images-idx3-ubyte.gz'} and run `harness data fetch fashionmnist`" in out
    assert err.count("delete") == 1 and len(err.strip().splitlines()) == 1
    assert main(["data", "list", "--data", str(tmp_path)]) == 0
    row = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("fashionmnist")
    )
    assert row.split()[1] == "yes" and str(tmp_path / "fashionmnist") in row
    assert main(["data", "verify", "--data", str(tmp_path / "none")]) == 0
    assert "no downloaded datasets" in capsys.readouterr().out
    assert main(["data", "fetch", "mnist", "--data", str(tmp_path)]) == 1
    assert "valid: tinyimagenet" in capsys.readouterr().err
    assert main(["data", "fetch", "padufes20", "--data", str(tmp_path)]) == 1
    assert "https://data.mendeley.com/datasets/zr7vgbcyr2/1" in capsys.readouterr().err


CRAFTED = {
    "dotdot member": dict(name="sub/../../escaped.txt"),
    "absolute member": dict(name="/tmp/harness-escaped.txt"),
    "symlink out": dict(name="sub/link", link="../../escaped.txt"),
    "absolute symlink": dict(name="link", link="/etc/passwd"),
    # A hard link's target is named from the archive root: "dir/../../x" from a member two
    # folders deep stays inside if read from the member's folder, and escapes from the root.
    "hardlink out": dict(name="a/b/link", hard="dir/../../escaped.txt"),
    "absolute hardlink": dict(name="link", hard="/etc/passwd"),
}


@pytest.mark.parametrize("with_filter", [True, False], ids=["data filter", "older Python"])
@pytest.mark.parametrize("crafted", CRAFTED, ids=list(CRAFTED))
def test_crafted_tar_members_are_refused_before_anything_is_written(
    crafted, with_filter, tmp_path, monkeypatch
):
    if not with_filter:  # the check that stands in for tarfile's filters on older Pythons
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    target = tmp_path / "root" / "target"
    archive = _tar_with(tmp_path / "evil.tar.gz", **CRAFTED[crafted])
    with pytest.raises(datasets.DatasetError, match="outside"):
        safe_extract(archive, target)
    assert list(target.rglob("*")) == [] and not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/harness-escaped.txt").exists()


@pytest.mark.parametrize("with_filter", [True, False], ids=["data filter", "older Python"])
def test_links_inside_the_archive_extract(with_filter, tmp_path, monkeypatch):
    if not with_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    target = tmp_path / "target"
    safe_extract(_tar_with(tmp_path / "h.tar.gz", "a/b/copy.txt", hard="dir/real.txt"), target)
    assert (target / "a" / "b" / "copy.txt").read_bytes() == b"real"


# -- retry and resume ------------------------------------------------------------------------


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload, misbehaving as the test asks: `plan` is a list of actions consumed
    one per request ("503", "cut" = half the body then close, "ignore-range" = 200 in full,
    "ok" = honour Range); the requests' Range headers are recorded."""

    payload = b""
    plan: list[str] = []
    ranges: list[str | None] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        action = self.plan.pop(0) if self.plan else "ok"
        self.ranges.append(self.headers.get("Range"))
        if action in ("503", "404"):
            self.send_error(int(action))
            return
        start = 0
        header = self.headers.get("Range")
        if header and action != "ignore-range":
            start = int(header.removeprefix("bytes=").rstrip("-"))
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if action == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def flaky():
    payload = os.urandom(400_000)
    handler = type("Handler", (_FlakyHandler,), {"payload": payload, "plan": [], "ranges": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    remote = Remote("https://example.invalid/blob.bin", "blob.bin",
                    sha256=hashlib.sha256(payload).hexdigest())  # fmt: skip
    yield handler, remote, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_503_is_retried(flaky, tmp_path):
    handler, remote, base = flaky
    handler.plan[:] = ["503", "503", "ok"]
    assert download("demo", remote, tmp_path, mirror=base).read_bytes() == handler.payload
    assert handler.ranges == [None, None, None]


def test_a_body_cut_short_resumes_with_a_range_request(flaky, tmp_path):
    handler, remote, base = flaky
    handler.plan[:] = ["cut", "ok"]
    assert download("demo", remote, tmp_path, mirror=base).read_bytes() == handler.payload
    assert handler.ranges == [None, f"bytes={len(handler.payload) // 2}-"]
    assert not list(tmp_path.glob("*.part"))


def test_a_server_that_ignores_range_restarts_from_zero(flaky, tmp_path):
    handler, remote, base = flaky
    handler.plan[:] = ["cut", "ignore-range"]
    assert download("demo", remote, tmp_path, mirror=base).read_bytes() == handler.payload
    assert handler.ranges[1] == f"bytes={len(handler.payload) // 2}-"


def test_a_failed_run_keeps_the_part_and_the_next_run_resumes(flaky, tmp_path, monkeypatch):
    from harness.datasets import download as module

    handler, remote, base = flaky
    monkeypatch.setattr(module, "RETRIES", 1)
    handler.plan[:] = ["cut", "503"]
    with pytest.raises(datasets.DatasetError, match=r"failed after 2 tries .*bytes are kept in blob.bin.part"):
        download("demo", remote, tmp_path, mirror=base)
    half = len(handler.payload) // 2
    assert (tmp_path / "blob.bin.part").stat().st_size == half
    handler.plan[:] = ["ok"]
    assert download("demo", remote, tmp_path, mirror=base).read_bytes() == handler.payload
    assert handler.ranges[-1] == f"bytes={half}-"


def test_a_stale_part_that_fails_the_checksum_is_fetched_again_from_zero(flaky, tmp_path):
    handler, remote, base = flaky
    (tmp_path / "blob.bin.part").write_bytes(b"x" * 1000)  # from some older copy of the file
    assert download("demo", remote, tmp_path, mirror=base).read_bytes() == handler.payload
    assert handler.ranges == ["bytes=1000-", None]


def test_a_404_is_not_retried(flaky, tmp_path):
    handler, remote, base = flaky
    handler.plan[:] = ["404", "ok"]
    with pytest.raises(datasets.DatasetError, match=r"blob.bin failed \(Not Found\)"):
        download("demo", remote, tmp_path, mirror=base)
    assert len(handler.ranges) == 1
