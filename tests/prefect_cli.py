"""A real `prefect server start` for tests, the CLI's environment for it, and a webhook receiver on 127.0.0.1.

Every process is started in its own session and stopped by pid (its whole tree).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from nightcap.processes.ports import free_port
from nightcap.processes.registry import kill_process_tree

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def prefect_env(home: Path, api_url: str) -> dict[str, str]:
    """The CLI's environment: this test's server only, whatever PREFECT_* the caller had set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
        PREFECT_LOGGING_LEVEL="INFO",
    )
    return env


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        kill_process_tree(proc.pid, grace_s=10)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@contextmanager
def prefect_server(tmp: Path, timeout_s: float = 90) -> Iterator[dict[str, str]]:
    """`prefect server start` on SQLite in a private PREFECT_HOME under `tmp`, on a free port, without the UI."""
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(home, api_url)
    env.pop("PREFECT_API_URL")  # the server itself does not need one
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=tmp, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not answer within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"api_url": api_url, "home": str(home), "tmp": str(tmp), "log": str(log)}
    finally:
        stop(proc)


def cli(server: dict[str, str], *args: str, timeout: float = 90) -> str:
    """A `prefect ...` command from the repository root (the deployments' entrypoints are relative to it)."""
    result = subprocess.run([PREFECT, *args], cwd=REPO, env=prefect_env(Path(server["home"]), server["api_url"]),
                            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"prefect {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def run_artifacts(api_url: str, flow_run_id: str) -> list[dict[str, Any]]:
    """A flow run's own artifacts (not its tasks'), oldest first: the order the run created them in, which is where
    the run graph places them (the Artifacts tab lists them by random id, no order)."""
    response = httpx.post(f"{api_url}/artifacts/filter", timeout=10,
                          json={"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]},
                                              "type": {"not_any_": ["result"]}}})
    response.raise_for_status()
    own = [a for a in response.json() if not a.get("task_run_id")]
    return sorted(own, key=lambda a: datetime.fromisoformat(a["created"]))


class WebhookReceiver:
    """Records every POST it gets; `wait_for` blocks until one matches."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    data = json.loads(body)
                except ValueError:
                    data = {"raw": body.decode(errors="replace")}
                with receiver._changed:
                    receiver.received.append({"path": self.path, "at": time.monotonic(), "wall": time.time(),
                                              "json": data})
                    receiver._changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for item in self.received:
                    if match(item["json"]):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching POST within {timeout_s:.0f} s; got {self.received}")
                self._changed.wait(left)
