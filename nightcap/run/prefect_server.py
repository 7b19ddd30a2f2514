"""A Prefect API for the run: the one named by PREFECT_API_URL, or a local server for the run's duration.

The local server keeps its database under `.prefect/` so `make ui` shows every run afterwards. It is
started before Prefect is imported (settings are read at import) and stopped when the run ends.
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

from nightcap.processes.registry import kill_process_tree

QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"),
}


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", ".prefect")).resolve()


def server_env(strip: tuple[str, ...] = ()) -> dict[str, str]:
    """The server's environment, without variables it must not see (the target's API key)."""
    env = {k: v for k, v in os.environ.items() if k not in strip}
    return {**env, **QUIET, "PREFECT_HOME": str(prefect_home())}


@contextmanager
def prefect_api(port: int | None = None, timeout_s: float = 120.0, strip_env: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield the API URL to use; start (and always stop) a local server when none is configured."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from nightcap.processes.ports import free_port

    port = port or free_port()
    env = server_env(strip_env)
    env["PREFECT_UI_ENABLED"] = "false"
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "server.log").open("ab")
    exe = Path(sys.executable).with_name("prefect")
    proc = subprocess.Popen([str(exe), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    log.close()
    # Registered like a run's processes, so a runner killed with SIGKILL does not leave the server running:
    # the next run, or `nightcap cleanup`, stops it.
    from nightcap.processes.registry import RunRegistry

    registry = RunRegistry(f"prefect-server-{os.getpid()}-{proc.pid}")
    registry.add_process(proc.pid, "local Prefect server")
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the local Prefect server exited ({proc.returncode}); see {home / 'server.log'}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local Prefect server did not answer within {timeout_s:.0f}s; "
                                   f"see {home / 'server.log'} or set PREFECT_API_URL")
            time.sleep(0.5)
        os.environ.update(QUIET)
        os.environ["PREFECT_HOME"] = str(home)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None) if os.environ.get("PREFECT_API_URL") == url else None
        kill_process_tree(proc.pid, grace_s=10)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        registry.close()
