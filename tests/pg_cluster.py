"""A throw-away PostgreSQL cluster for the tests (and for a developer, by hand).

    python3 tests/pg_cluster.py -- .venv/bin/python -m pytest -q

`initdb`s a cluster into a new temporary directory, starts it on 127.0.0.1 at
a free port and on a Unix socket in that directory, runs the command with
COAL_MINE_TEST_POSTGRESQL_URI set to it, then stops the cluster and removes the
directory (also on Ctrl-C). The exit status is the command's.

PostgreSQL refuses to run as root: as root, the cluster belongs to the
unprivileged system user `coal-mine-pg`, created if missing. The binaries are
taken from PG_BIN, else /usr/lib/postgresql/<newest>/bin, else PATH.

Tests that need a cluster of their own (to restart it, say) use `Cluster`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

URI_VARIABLE = "COAL_MINE_TEST_POSTGRESQL_URI"
USER = "coal-mine-pg"
DATABASE = "coal_mine_test"


def bin_dir() -> Path:
    """Where initdb and pg_ctl are; raises FileNotFoundError naming what is missing."""
    candidates = [os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(str(Path(found).parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "PostgreSQL binaries (initdb, pg_ctl) not found: install Debian's postgresql or set PG_BIN"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unprivileged_user() -> str | None:
    """The user to run PostgreSQL as: None for a normal user (run as oneself)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
        )
    return USER


class Cluster:
    """One PostgreSQL cluster in a temporary directory; `uri` reaches its test database."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.bin = bin_dir()
        self.user = _unprivileged_user()
        self.dir = Path(tempfile.mkdtemp(prefix="coal-mine-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.fsync = fsync
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        os.chmod(self.dir, 0o755)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.uri = f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"
        self.socket_uri = f"postgresql://postgres@/{DATABASE}?host={self.dir}&port={self.port}"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin / program), *args],
            user=self.user,
            cwd=self.dir,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def start_server(self) -> None:
        """Start the server process on the cluster's port (after stop())."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=300"
        if not self.fsync:
            options += " -c fsync=off -c full_page_writes=off"
        log = str(self.dir / "log")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", log, "-o", options)

    def start(self) -> Cluster:
        """Start the server and create the test database."""
        self.start_server()
        self._psql(f"CREATE DATABASE {DATABASE}")
        return self

    def _psql(self, sql: str) -> None:
        subprocess.run(
            [str(self.bin / "psql"), "-h", str(self.dir), "-p", str(self.port), "-U", "postgres"]
            + ["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
            check=True,
            stdout=subprocess.DEVNULL,
            user=self.user,
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (mode: smart, fast or immediate); the data stays."""
        self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data))

    def restart(self) -> None:
        """Stop (fast: every connection is dropped) and start again on the same port."""
        self.stop()
        self.start_server()

    def remove(self) -> None:
        """Stop the server if it runs and delete the directory."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc: object) -> None:
        self.remove()


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print(f"usage: {sys.argv[0]} -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    try:
        cluster = Cluster()
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or b""
        print(f"pg_cluster: {exc} {detail.decode(errors='replace').strip()}", file=sys.stderr)
        return 1
    # Stop the cluster whatever ends the command: SIGTERM/SIGHUP become a normal exit.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, _frame: sys.exit(128 + number))
    with cluster:
        print(f"pg_cluster: PostgreSQL running in {cluster.dir} on 127.0.0.1:{cluster.port}", file=sys.stderr)
        env = dict(os.environ, **{URI_VARIABLE: cluster.uri})
        try:
            return subprocess.call(args, env=env)
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
