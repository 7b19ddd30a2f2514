"""The canary's pod runs the reference server as one `python -c` program in a stock Python image, with no nightcap
installed: run that program for real where nightcap cannot be imported, and serve a request with it.

Fast: one short-lived server, a ping and a POST (well under a second)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nightcap.config import load_config
from nightcap.kube import manifests as mf
from nightcap.platforms.base import PodSpec
from nightcap.processes.ports import free_port
from nightcap.targets.canary import canary_config

REPO = Path(__file__).resolve().parents[2]
# -I: no PYTHON* variables, no user site, no script or working directory on sys.path; -S: no site-packages, so
# not the editable install either. Only the standard library is left, as in `python:3.12-slim`.
BARE = [sys.executable, "-I", "-S"]


def get(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_the_canary_pods_program_serves_where_nightcap_is_not_installed(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "")}
    assert subprocess.run([*BARE, "-c", "import nightcap"], cwd=tmp_path, env=env, capture_output=True).returncode

    config = canary_config(load_config(REPO / "configs" / "gke.yaml"))
    deployment = mf.model_deployment(config, "nightly-1-canary", PodSpec(cpu=0.5, memory=256 * 2**20, concurrency=2),
                                     1)
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    args = command[3:]  # the pod's argv, on loopback and a free port here
    port = free_port()
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)

    proc = subprocess.Popen([*BARE, "-c", command[2], *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if get(port, "GET", "/ping") == (200, b"ok"):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the canary's program did not answer /ping within 15 s"
                time.sleep(0.05)
        assert get(port, "POST", "/invocations", b'{"x": 1}') == (200, b'{"ok": true}')
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out == f"listening on 127.0.0.1:{port}\n" and "stopped: served 1, rejected 0" in err, (out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
