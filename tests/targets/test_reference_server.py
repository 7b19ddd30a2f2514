"""The reference server is the ground truth of every accuracy check, so it is tested for real:
a subprocess on 127.0.0.1, real sockets, and throughput compared with its formula."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from nightcap.targets.reference_capacity import reference_capacity, reference_throughput, stall_latency_ms

pytestmark = [pytest.mark.slow, pytest.mark.quiet]  # every test here starts a real server

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def reference_server(
    cgroup_procs: list[Path] | None = None, **options: float | int
) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Start the server on a free port (``--port 0``) and always stop it by its pid.

    ``cgroup_procs``: cgroup.procs files the child joins before it execs (so limits hold from
    its first allocation).
    """
    argv = [sys.executable, "-m", "nightcap.targets.reference_server", "--port", "0"]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]

    def join_cgroups() -> None:
        for procs in cgroup_procs or []:
            procs.write_text(str(os.getpid()))

    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=join_cgroups
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "reference server did not print its listening line within 15 s"
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on 127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")
        yield int(line.rsplit(":", 1)[1]), proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def post(port: int, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/invocations", body=b'{"x": 1}', headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def measure_rps(port: int, clients: int, warmup_s: float = 0.4, window_s: float = 2.0) -> float:
    """Closed-loop keep-alive clients; count 200s completed inside the measured window."""
    stop_at = time.monotonic() + warmup_s + window_s + 0.2
    window = (time.monotonic() + warmup_s, time.monotonic() + warmup_s + window_s)
    counts = [0] * clients
    errors: list[str] = []

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            while time.monotonic() < stop_at:
                status, _ = post(port, conn)
                now = time.monotonic()
                if status != 200:
                    errors.append(str(status))
                elif window[0] <= now < window[1]:
                    counts[index] += 1
        except Exception as exc:  # surfaced through `errors`
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors[:5]
    return sum(counts) / window_s


def test_ping_and_post() -> None:
    with reference_server(slots=2, service_ms=5) as (port, _):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/ping")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"ok")
        # same keep-alive connection, any path other than GET /ping is a request
        conn.request("POST", "/invocations", body=b'{"dataframe_split": {}}', headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/json"
        assert json.loads(response.read()) == {"ok": True}
        conn.request("GET", "/anything")
        assert conn.getresponse().status == 200
        conn.close()


def test_malformed_request_gets_400_and_close() -> None:
    with reference_server(slots=1, service_ms=1) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"this is not http\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):  # server closes: recv returns b""
                data += chunk
        assert data.startswith(b"HTTP/1.1 400 ")
        assert b"Connection: close" in data


def test_slots_plus_queue_then_503() -> None:
    """slots=2, queue=0: of 6 simultaneous requests exactly 2 are served."""
    with reference_server(slots=2, service_ms=300, queue=0) as (port, _):
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(6)]
        for conn in conns:
            conn.connect()
        barrier = threading.Barrier(6)
        results: list[tuple[int, bytes]] = []

        def fire(conn: http.client.HTTPConnection) -> None:
            barrier.wait()
            results.append(post(port, conn))

        threads = [threading.Thread(target=fire, args=(c,)) for c in conns]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        statuses = sorted(status for status, _ in results)
        assert statuses == [200, 200, 503, 503, 503, 503]
        assert {body for status, body in results if status == 503} == {b'{"error": "overloaded"}'}
        # the connection of a 503 stays usable
        time.sleep(0.35)
        assert post(port, conns[-1])[0] == 200
        for conn in conns:
            conn.close()


def test_throughput_matches_formula() -> None:
    """4 slots x 20 ms = 200 rps, with 8 keep-alive clients (more users than slots)."""
    expected = reference_capacity(slots=4, service_ms=20)
    assert expected == pytest.approx(200.0)
    with reference_server(slots=4, service_ms=20) as (port, _):
        rps = measure_rps(port, clients=8)
    assert rps == pytest.approx(expected, rel=0.10), rps


def test_cpu_ms_burns_real_cpu() -> None:
    requests, cpu_ms = 20, 20.0
    with reference_server(slots=2, service_ms=0, cpu_ms=cpu_ms) as (port, proc):
        process = psutil.Process(proc.pid)
        post(port)  # warm the thread pool
        before = sum(process.cpu_times()[:2])
        for _ in range(requests):
            assert post(port)[0] == 200
        used_ms = (sum(process.cpu_times()[:2]) - before) * 1000
    expected_ms = requests * cpu_ms
    assert expected_ms * 0.9 <= used_ms <= expected_ms * 1.2, used_ms  # overhead is deducted from the burn


def test_coherency_makes_throughput_retrograde() -> None:
    options = {"slots": 8, "service_ms": 10, "coherency_ms": 3}
    with reference_server(**options) as (port, _):
        rps_2 = measure_rps(port, clients=2, warmup_s=0.2, window_s=1.0)
        rps_8 = measure_rps(port, clients=8, warmup_s=0.2, window_s=1.0)
    assert rps_8 < rps_2 * 0.8, (rps_2, rps_8)
    # and the model used by the analysis agrees on the direction and rough size
    assert reference_throughput(8, 8, 10, coherency_ms=3) < reference_throughput(2, 8, 10, coherency_ms=3)
    assert rps_8 == pytest.approx(reference_throughput(8, 8, 10, coherency_ms=3), rel=0.25)


def test_memory_ballast_raises_rss() -> None:
    with reference_server(slots=1, service_ms=1, memory_mb=96) as (port, proc):
        rss_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
    assert rss_mb > 96, rss_mb


def test_sigterm_exits_zero_quickly() -> None:
    with reference_server(slots=2, service_ms=2000) as (port, proc):
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        idle.request("GET", "/ping")
        idle.getresponse().read()  # an open keep-alive connection must not block shutdown
        busy = threading.Thread(target=lambda: _swallow(post, port), daemon=True)
        busy.start()  # and neither must a request in flight
        time.sleep(0.2)
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 2.0
        idle.close()


def _swallow(func, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        func(*args)
    except Exception:
        pass


@contextmanager
def v1_cgroup(controller: str, **settings: int) -> Iterator[Path]:
    """A throwaway cgroup v1 group (memory ones under our own memory group, as the host wants)."""
    root = Path("/sys/fs/cgroup") / controller
    if controller == "memory":
        own = next((line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                    if line.split(":")[1] == "memory"), None)
        root = root / own.lstrip("/") if own else root
    if not os.access(root, os.W_OK) or not (root / "cgroup.procs").exists():
        pytest.skip(f"cgroup v1 {controller} controller not writable here")
    group = root / f"nightcap-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        for name, value in settings.items():
            (group / name).write_text(str(value))
        yield group
    finally:
        for _ in range(50):  # the killed child leaves the group a moment after wait()
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def test_cpu_limit_gives_cpu_capacity() -> None:
    """Under a 0.5-core quota, 10 ms of CPU per request caps one replica at 50 rps."""
    expected = reference_capacity(slots=4, service_ms=0, cpu_ms=10, cpu_limit=0.5)
    with v1_cgroup("cpu", **{"cpu.cfs_period_us": 100_000, "cpu.cfs_quota_us": 50_000}) as group:
        with reference_server([group / "cgroup.procs"], slots=4, service_ms=0, cpu_ms=10) as (port, _):
            rps = measure_rps(port, clients=8, warmup_s=1.0, window_s=3.0)
    assert rps == pytest.approx(expected, rel=0.10), rps


def test_memory_limit_below_ballast_is_oom_killed() -> None:
    limit = 64 * 2**20
    with v1_cgroup("memory", **{"memory.limit_in_bytes": limit}) as group:
        argv = [sys.executable, "-m", "nightcap.targets.reference_server", "--port", "0", "--slots", "1",
                "--service-ms", "1", "--memory-mb", "128"]
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())))
        try:
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL and b"listening" not in out
        assert "oom_kill 1" in (group / "memory.oom_control").read_text()


@pytest.mark.slow
def test_stall_holds_responses_as_the_schedule_says() -> None:
    """Arrivals at planned times (each on its own connection) see the stall's latency quantiles;
    one sequential client mostly does not: it meets a stall once per period and then waits."""
    service_ms, every_s, stall_s = 10.0, 1.0, 0.3
    with reference_server(slots=64, service_ms=service_ms, stall_every_s=every_s, stall_s=stall_s) as (port, _):
        rate, duration_s = 40.0, 3.0
        latencies: list[float] = []
        start = time.monotonic() + 0.1
        threads = []

        def arrival(planned: float) -> None:
            time.sleep(max(0.0, planned - time.monotonic()))
            assert post(port)[0] == 200
            latencies.append(1000 * (time.monotonic() - planned))

        for i in range(int(rate * duration_s)):
            threads.append(threading.Thread(target=arrival, args=(start + i / rate,)))
            threads[-1].start()
        for thread in threads:
            thread.join(timeout=10)
        closed: list[float] = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        until = time.monotonic() + 2 * every_s
        while time.monotonic() < until:
            t0 = time.monotonic()
            assert post(port, conn)[0] == 200
            closed.append(1000 * (time.monotonic() - t0))
        conn.close()
    latencies.sort()
    assert len(latencies) == int(rate * duration_s)
    p95 = latencies[int(0.95 * len(latencies)) - 1]
    truth = stall_latency_ms(0.95, service_ms, every_s, stall_s)  # 10 + 300 - 50 = 260 ms
    assert p95 == pytest.approx(truth, rel=0.2), (p95, truth)
    assert latencies[len(latencies) // 2] < 3 * service_ms + 20  # the median never waits for a stall
    closed.sort()
    assert closed[int(0.95 * len(closed)) - 1] < 3 * service_ms + 20, closed[-10:]
    assert max(closed) > stall_s * 1000 / 2  # but it did meet the stalls
