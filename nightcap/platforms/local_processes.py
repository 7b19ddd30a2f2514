"""The OS processes the local platform starts (proxy and replicas): how each is started and stopped.

Kept apart from `local.py`'s scheduling so the rules every process follows are in one place: it runs in its
own session, never sees the client's API key, and what it held (its cgroup) is released with it and forgotten
by the run's registry (`local.py` registers each process it starts, so `nightcap cleanup` finds it after a
SIGKILL).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

from nightcap.config import Config
from nightcap.platforms.base import PlatformError
from nightcap.platforms.local_replicas import Replica


def chain_preexec(*steps: Callable[[], None] | None) -> Callable[[], None] | None:
    """Several pre-exec steps as one (cgroups for limits, then the replicas' CPUs)."""
    todo = [s for s in steps if s is not None]
    if not todo:
        return None

    def run() -> None:
        for step in todo:
            step()
    return run


def spawn(config: Config, run_id: str, argv: list[str], log: Path, preexec: Callable[[], None] | None = None,
          env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    """Start one process in its own session, its output appended to `log`."""
    env = {**os.environ, **(env_extra or {}), "NIGHTCAP_RUN_ID": run_id}
    # The client's API key is for the load generators only; the server being measured never gets it.
    for secret in (config.target.api_key_env, "NIGHTCAP_API_KEY"):
        if secret:
            env.pop(secret, None)
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=preexec, env=env)
    return proc


def wait_listening(proc: subprocess.Popen | None, port: int, timeout_s: float, log: Path) -> None:
    """Until the proxy accepts connections (the service URL answers), or it exited, or the ready timeout."""
    deadline = time.monotonic() + timeout_s  # a deadline, not a count: a refused connect can take its 0.5 s
    while time.monotonic() < deadline:
        if proc is None or proc.poll() is not None:
            raise PlatformError(f"the local proxy exited; see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise PlatformError(f"the local proxy did not listen within platform.ready_timeout_s ({timeout_s:.0f}s)")


def write_backends(path: Path, items: list[str]) -> None:
    """The proxy's backend list, replaced at once (the proxy never reads half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(items))
    tmp.replace(path)


def release_cgroup(replica: Replica, forget: Callable[[Path], None] | None) -> None:
    """Remove the replica's cgroup (if it has one), each directory first forgotten by `forget` (the registry's)."""
    if replica.cgroup is not None:
        for d in list(replica.cgroup.dirs):
            if forget:
                forget(d)
        replica.cgroup.remove()
