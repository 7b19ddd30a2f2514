"""A real `mlflow server` for tests: SQLite backend and proxied artifacts under a folder, one worker, on a free
loopback port. Started in its own session and stopped by pid (its whole tree: the CLI and its uvicorn).

Two servers may share one folder (one database, one artifact store), so a test can stop its own while another
test's server still reads what was written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from nightcap.processes.ports import free_port
from nightcap.processes.registry import kill_process_tree

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


class MlflowServer:
    def __init__(self, root: Path, proc: subprocess.Popen, url: str, log: Path):
        self.root, self.proc, self.url, self.log = root, proc, url, log

    def stop(self) -> None:
        if self.proc.poll() is None:
            kill_process_tree(self.proc.pid, grace_s=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def server_env() -> dict[str, str]:
    """Nothing of the test's own MLflow or run-tagging settings leaks into the server."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLFLOW_") and k != "NIGHTCAP_TEST_TOKEN"}  # the token: tests/conftest.py TOKEN_VAR
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")  # it execs a bare uvicorn
    return env


@contextmanager
def mlflow_server(root: Path, timeout_s: float = 120) -> Iterator[MlflowServer]:
    """`mlflow server` on `root`/mlflow.db with artifacts under `root`/artifacts, answering /health."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([MLFLOW, "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                                 "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=server_env(),
                                cwd=root, start_new_session=True)
    server = MlflowServer(root, proc, url, log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield server
    finally:
        server.stop()
