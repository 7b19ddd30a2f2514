"""A real PostgreSQL server for the tests: initdb + postgres from Debian's `postgresql` package, on 127.0.0.1.

Started once per session (tests/conftest.py `postgres`), each test gets a fresh database. The server runs as the
`postgres` system user when the tests run as root (PostgreSQL refuses to run as root), with fsync off (a test
database need not survive a power cut), in its own session, and is stopped by pid. Where no server binary is
installed the tests that need it are skipped, saying so (`apt-get install postgresql`).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

SUPERUSER = "nightcap"


def server_bin() -> Path | None:
    """The folder holding initdb and postgres: PATH first, else Debian's versioned folder."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(os.path.realpath(found)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "initdb").exists() and Path(folder, "postgres").exists():
            return Path(folder)
    return None


def why_not() -> str | None:
    """None if a server can start here, else the reason (the tests that need one skip with it)."""
    if server_bin() is None:
        return "no PostgreSQL server binaries (initdb, postgres): apt-get install postgresql"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg driver is not installed: pip install 'nightcap[postgres]'"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def _demote() -> Callable[[], None] | None:
    """Run the server as `postgres` when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam("postgres")

    def drop() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return drop


@dataclass
class PgServer:
    port: int
    data: Path
    proc: subprocess.Popen

    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{database}"

    def sql(self, *statements: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}",
                             autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.sql(f"CREATE DATABASE {name}")
        return name

    def start(self) -> None:
        """Start the same cluster again after `stop` (the second half of a database restart)."""
        self.proc = _postgres(self.data, self.port)
        _wait_ready(self)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: clients are disconnected, as in a real restart
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _postgres(data: Path, port: int) -> subprocess.Popen:
    binary = server_bin()
    assert binary is not None
    log = open(data.parent / "server.log", "ab")  # noqa: SIM115 - closed below, the child keeps its copy
    try:
        return subprocess.Popen(
            [str(binary / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data.parent),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "shared_buffers=16MB", "-c", "max_connections=60"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_demote(),
            start_new_session=True)
    finally:
        log.close()


def _wait_ready(server: PgServer, timeout_s: float = 60) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"postgres exited ({server.proc.returncode}): "
                               f"{(server.data.parent / 'server.log').read_text()[-2000:]}")
        try:
            with psycopg.connect(f"host=127.0.0.1 port={server.port} user={SUPERUSER} dbname=postgres",
                                 connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def pg_server() -> Iterator[PgServer]:
    """initdb a throwaway cluster under /tmp, start postgres on a free port, yield it; always stop and remove."""
    from nightcap.processes.ports import free_port

    root = Path(tempfile.mkdtemp(prefix="nightcap-pg-"))
    os.chmod(root, 0o755)
    data = root / "data"
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    binary = server_bin()
    assert binary is not None
    try:
        subprocess.run([str(binary / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "--no-sync",
                        "-E", "UTF8", "--locale=C"], check=True, capture_output=True, preexec_fn=_demote(),
                       cwd=root, timeout=120)
        port = free_port()
        server = PgServer(port, data, _postgres(data, port))
        try:
            _wait_ready(server)
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
