"""A real, throw-away PostgreSQL server for the tests: initdb into a temp dir, pg_ctl start.

Used by the session fixture `pg_server` in tests/conftest.py. The server listens on 127.0.0.1
at a free port (and on a unix socket in its own directory), trusts local connections, and runs
with fsync off: it holds nothing worth keeping. As root, initdb and postgres refuse to run, so
both run as the `postgres` OS user (Debian's package creates it) through `runuser`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found; install them "
    "(Debian/Ubuntu: apt-get install -y postgresql) or set PG_BINDIR to their directory"
)


def find_pg_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: $PG_BINDIR, Debian's layout, or the PATH."""
    candidates: list[str] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    # Debian keeps them off the PATH, one directory per major version; newest first.
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(debian, key=lambda p: int(Path(p).parent.name), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One postgres process on a fresh cluster; `url(db)` for SQLAlchemy, `stop()` at the end."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # Directly under the system temp dir: pytest's own tmp dirs are mode 0700 to root, which
        # the postgres user could not enter.
        self.root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.user = "postgres"  # the cluster's superuser
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, and there is no `postgres` OS user to run the server as; "
                    "install the postgresql package (it creates one) or run the tests as non-root"
                ) from None
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.started = False
        self._options = ""

    def _run(self, *argv: str) -> None:
        command = [*self._as_user, *argv]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{log}"
            )

    def start(self) -> PostgresServer:
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data),
            "-U", self.user,
            "-A", "trust",  # loopback and socket only; a password in the URL is ignored
            "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        options = (
            f"-F -c fsync=off -c full_page_writes=off -c synchronous_commit=off "
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            # Not UTC on purpose: harness.store.schema must set its sessions to UTC itself.
            "-c max_connections=200 -c TimeZone=Asia/Kathmandu"
        )
        self._options = options
        self.resume()
        return self

    def resume(self) -> None:
        """(Re)start the server on the same cluster, port and socket (after `pause`)."""
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-w", "-t", "60", "-o", self._options, "start",
        )  # fmt: skip
        self.started = True

    def pause(self) -> None:
        """Stop the server but keep its cluster: clients see a real outage until `resume`.

        Fast shutdown: open connections are terminated (as a crashed or restarted server
        would), new ones are refused."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.started = False

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        auth = f"{self.user}:{password}" if password else self.user
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "-w", "stop")  # fmt: skip
            finally:
                self.started = False
        shutil.rmtree(self.root, ignore_errors=True)
