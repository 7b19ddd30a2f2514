"""The local platform as a small cluster: limits, readiness, restarts, OOM kills, Pending, teardown."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from nightcap.config import validate
from nightcap.platforms.base import PodSpec
from nightcap.platforms.cgroups import detect, leftover_groups
from nightcap.platforms.local import LocalPlatform
from nightcap.processes.ports import free_port
from nightcap.targets.plan import plan_target

pytestmark = pytest.mark.slow
LIMITS = detect().enforced


def make(tmp_path, **platform):
    cfg = validate({"target": {"name": "ref", "kind": "reference", "slots": 2, "service_ms": 5, **platform.pop("target", {})},
                    "slo": {"p95_ms": 500}, "platform": {"kind": "local", "ready_timeout_s": 20, **platform}})
    return LocalPlatform(cfg, plan_target(cfg), f"test{os.getpid()}", tmp_path / "replicas")


def test_replicas_serve_behind_one_address_and_teardown_leaves_nothing(tmp_path):
    platform = make(tmp_path)
    try:
        platform.deploy(PodSpec(cpu=0.5, memory=128 * 2**20, concurrency=2), 2)
        pids = platform.replica_pids()
        assert len(pids) == 2
        with httpx.Client(base_url=platform.service_url) as client:
            for _ in range(6):
                assert client.post("/invocations", content=b"{}", headers={"Connection": "close"}).status_code == 200
        obs = platform.observe()
        assert obs.ready == 2 and obs.pending == 0
        assert all(r.cpu_limit == 0.5 and r.memory_limit == 128 * 2**20 for r in obs.replicas)
        assert platform.limits_enforced == LIMITS
        # each start is measured (the autoscale stage plans its phases on it); nothing waits once all is answered
        start = platform.start_seconds()
        assert start is not None and 0 < start < 20 and platform.start_seconds(PodSpec(1.0, None, 2)) is None
        queues = platform.queues()
        assert set(queues) == {"proxy", "replica-1", "replica-2"}
        assert all(q["accept_queue"] == 0 and q["client_closed"] == 0 for q in queues.values()), queues
        assert platform.replica_cpu_budget() <= platform.allocatable_cpu
    finally:
        platform.teardown()
    time.sleep(0.2)
    for pid in pids:
        assert not _alive(pid)
    assert not [g for g in leftover_groups(detect()) if f"test{os.getpid()}" in g.name]


def test_the_proxy_never_forwards_a_caller_who_left_before_its_replica_was_reached(tmp_path):
    """Issue 23 item 3: kube-proxy rewrites the caller's own connection, so a caller who gives up while its
    handshake waits at a full pod is never seen by it. The local proxy accepts first and connects after: it must
    not hand the pod a request whose caller is gone (that is work for nobody, queued in front of live callers)."""
    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen(0)  # accepts nothing: its accept queue is full after the fillers, new handshakes wait
    fillers = [socket.socket() for _ in range(3)]
    for f in fillers:
        f.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            f.connect(backend.getsockname())
    (tmp_path / "backends.json").write_text(json.dumps([f"127.0.0.1:{backend.getsockname()[1]}"]))
    port = free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "nightcap.platforms.proxy", "--port", str(port), "--backends",
                              str(tmp_path / "backends.json")], stdout=subprocess.DEVNULL)
    try:
        caller = _connect_when_listening(port)
        caller.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        time.sleep(0.3)
        caller.close()  # gave up before its replica took the handshake
        received, deadline = [], time.monotonic() + 2.0  # the proxy's dropped handshake is retried after 1 s
        backend.settimeout(0.2)
        while time.monotonic() < deadline:
            with contextlib.suppress(socket.timeout):
                conn, _ = backend.accept()
                conn.settimeout(0.3)
                with contextlib.suppress(socket.timeout):
                    received.append(conn.recv(100))
                conn.close()
        assert not any(b"POST" in r for r in received), received
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        backend.close()
        for f in fillers:
            f.close()


def _connect_when_listening(port: int) -> socket.socket:
    deadline = time.monotonic() + 10
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=1)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_replicas_beyond_allocatable_cores_stay_pending(tmp_path):
    platform = make(tmp_path, allocatable_cpu=0.5)
    try:
        platform.deploy(PodSpec(cpu=0.25, memory=None, concurrency=2), 1)
        platform.scale(4, wait=False)
        platform.wait_ready()
        obs = platform.observe()
        assert obs.ready == 2
        assert obs.pending == 2
        assert any("FailedScheduling" in e for e in obs.events)
        platform.scale(2)
        assert platform.observe().pending == 0
    finally:
        platform.teardown()


def test_a_killed_replica_is_restarted_and_counted(tmp_path):
    platform = make(tmp_path)
    try:
        platform.deploy(PodSpec(cpu=None, memory=None, concurrency=2), 1)
        victim = platform.replica_pids()[0]
        os.killpg(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            obs = platform.observe()
            if obs.restarts and obs.ready == 1:
                break
            time.sleep(0.2)
        assert obs.restarts == 1 and obs.oom_kills == 0 and obs.ready == 1
        assert platform.replica_pids()[0] != victim
    finally:
        platform.teardown()


def _request(sock: socket.socket) -> bytes:
    """One keep-alive POST on `sock`; the reply (b"" when the connection was closed)."""
    try:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}")
        return sock.recv(65536)
    except OSError:
        return b""


def test_parked_replicas_run_out_of_the_service_and_come_back_without_a_start(tmp_path):
    """Scaling's paired windows switch between 1 and N pods: a replica taken away keeps running (its connections
    broken, as a terminated pod's), and the next scale-up takes it back with no start; a plain scale stops it."""
    platform = make(tmp_path)
    try:
        platform.deploy(PodSpec(cpu=0.25, memory=None, concurrency=2), 2)
        pids, starts = sorted(platform.replica_pids()), platform.start_seconds()
        host, port = platform.service_url.removeprefix("http://").split(":")
        socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]  # round robin: one each
        assert all(_request(s).startswith(b"HTTP/1.1 200") for s in socks)
        platform.park(1)
        assert len(platform.replica_pids()) == 1 and all(_alive(p) for p in pids)
        assert platform.observe().ready == 1
        assert sorted(_request(s).startswith(b"HTTP/1.1 200") for s in socks) == [False, True]
        platform.scale(2)
        assert sorted(platform.replica_pids()) == pids and platform.start_seconds() == starts
        assert len(platform._starts) == 2  # no start measured for the replica taken back
        platform.park(1)
        platform.scale(1)  # a plain scale stops what is parked
        time.sleep(0.3)
        assert sum(_alive(p) for p in pids) == 1
        for s in socks:
            s.close()
    finally:
        platform.teardown()
    assert not any(_alive(p) for p in pids)


@pytest.mark.skipif(not LIMITS, reason="cgroups not writable: CPU limits are not enforced here")
def test_a_cpu_only_change_is_made_in_place_and_anything_else_is_refused(tmp_path):
    """Tune compares CPU sizes in alternating windows: the quota changes under the running process (no start), as
    Kubernetes' in-place resize does for CPU; a memory or concurrency change, or one that does not fit, restarts."""
    platform = make(tmp_path)
    small = PodSpec(cpu=0.5, memory=128 * 2**20, concurrency=2)
    try:
        platform.deploy(small, 1)
        pids = platform.replica_pids()
        big = PodSpec(cpu=1.0, memory=small.memory, concurrency=2)
        assert platform.resize_cpu_in_place(big)
        assert platform.replica_pids() == pids and platform.spec == big
        quota = platform._replicas[0].cgroup.dirs[0]
        text = (quota / "cpu.max").read_text() if (quota / "cpu.max").exists() else (quota / "cpu.cfs_quota_us").read_text()
        assert text.split()[0] == "100000", text
        obs = platform.observe()
        assert [r.cpu_limit for r in obs.replicas] == [1.0]
        assert any("CPU limit 0.5 -> 1 in place" in e for e in obs.events), obs.events
        assert not any("restart" in e for e in obs.events)  # a window counts events naming a restart as restarts
        for refused in (PodSpec(0.5, 256 * 2**20, 2), PodSpec(0.5, small.memory, 4),
                        PodSpec(platform.allocatable_cpu + 1, small.memory, 2)):
            assert not platform.resize_cpu_in_place(refused)
            assert platform.spec == big and platform.replica_pids() == pids
        with httpx.Client(base_url=platform.service_url) as client:
            assert client.post("/invocations", content=b"{}").status_code == 200
    finally:
        platform.teardown()


@pytest.mark.skipif(not LIMITS, reason="cgroups not writable: memory limits are not enforced here")
def test_memory_below_the_working_set_is_an_oom_kill(tmp_path):
    platform = make(tmp_path, target={"memory_mb": 100})
    try:
        with pytest.raises(Exception, match="OOM"):
            platform.deploy(PodSpec(cpu=None, memory=64 * 2**20, concurrency=1), 1)
        assert platform.observe().oom_kills >= 1
    finally:
        platform.teardown()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


def test_empty_groups_of_old_runs_without_a_record_are_found_and_live_or_young_ones_are_not(tmp_path) -> None:
    """A run whose registry folder went with it (another working directory) left empty groups, its memory group
    under another session's memory cgroup (/process_api/<other>/nightcap-...): found once older than the bound."""
    from datetime import datetime, timezone

    from nightcap.platforms.cgroups import CgroupSupport, stale_groups

    def group(path: Path, procs: str = "") -> Path:
        path.mkdir(parents=True)
        (path / "cgroup.procs").write_text(procs)
        return path

    cpu, mine, other = tmp_path / "cpu", tmp_path / "memory" / "mine", tmp_path / "memory" / "other"
    dead = [group(cpu / "nightcap-20261204-031936-fc09ce-replica-1"),
            group(other / "nightcap-20261204-031936-fc09ce-replica-1")]
    group(cpu / "nightcap-20261204-031937-abcdef-replica-1", "4242\n")  # still holds a process
    group(mine / "nightcap-20261204-135900-123456-replica-1")  # young: its run may be starting
    group(cpu / "not-ours-20261204-031936-fc09ce-replica-1")
    support = CgroupSupport("v1", cpu_base=cpu, memory_base=mine)
    now = datetime(2026, 12, 4, 14, 3, tzinfo=timezone.utc)
    assert stale_groups(support, now, 2 * 3600) == sorted(dead)
    assert stale_groups(support, now, 12 * 3600) == []
