"""A throw-away PostgreSQL server for the fleet tests and benchmarks.

Uses the server binaries of the machine (``initdb``/``pg_ctl`` on PATH, ``$SCANFORGE_PG_BIN``, or
Debian's ``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root, so under root
(CI) the server runs as the unprivileged user ``nobody``, from a fresh directory under /tmp that it
owns. It listens on 127.0.0.1 on a free port, with a password for TCP connections (so a wrong
password can be tested) and trust on its private socket directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER, PASSWORD = "scanforge", "fleet-secret"


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl, or None."""
    candidates = [os.environ.get("SCANFORGE_PG_BIN", "")]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    candidates += ["/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/bin"]
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


def missing_reason() -> str | None:
    """Why no server can be started here (None: one can)."""
    if find_binaries() is None:
        return ("PostgreSQL server binaries not found: no initdb/pg_ctl on PATH, in $SCANFORGE_PG_BIN or in "
                "/usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root, and PostgreSQL refuses root: runuser (util-linux) is needed to start it as nobody"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install -e '.[dev]'"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``start()``, ``stop()``, ``url(db)``, ``create_database(name)``; ``close()`` removes everything."""

    def __init__(self, *, fast: bool = True, max_connections: int = 100):
        self.bin = find_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="scanforge-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self.settings = {"listen_addresses": "127.0.0.1", "unix_socket_directories": str(self.root),
                         "max_connections": str(max_connections)}
        if fast:  # a throw-away server: durability buys nothing
            self.settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        self._as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        if self._as_user:
            shutil.chown(self.root, "nobody")
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_user:
            shutil.chown(pwfile, "nobody")
        self._run(self.bin / "initdb", "-D", self.data, "-U", USER, f"--pwfile={pwfile}", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        pwfile.unlink()

    def _run(self, *cmd, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*self._as_user, *map(str, cmd)], capture_output=True, text=True, timeout=120)
        if check and result.returncode:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{cmd[0]} failed ({result.returncode}): {result.stderr or result.stdout}\n{log}")
        return result

    def start(self) -> None:
        options = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        self._run(self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o",
                  f"-p {self.port} {options}", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop", check=False)

    def url(self, database: str = "postgres", *, password: str = PASSWORD, user: str = USER,
            scheme: str = "postgresql") -> str:
        return f"{scheme}://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname=database,
                               autocommit=True)

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its URL."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def connections(self, database: str) -> int:
        """Client connections open to ``database`` now."""
        with self.connect() as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)).fetchone()[0]

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
