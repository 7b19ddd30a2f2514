"""The local platform as a small cluster: limits, readiness, restarts, OOM kills, Pending, teardown."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from nightcap.config import validate
from nightcap.platforms.base import PodSpec
from nightcap.platforms.cgroups import detect, leftover_groups
from nightcap.platforms.local import LocalPlatform
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
    finally:
        platform.teardown()
    time.sleep(0.2)
    for pid in pids:
        assert not _alive(pid)
    assert not [g for g in leftover_groups(detect()) if f"test{os.getpid()}" in g.name]


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
