"""Replicas and the run on disjoint CPUs: the layout, the policy on few cores, and what a real pinning does."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from nightcap.platforms.cpu_pinning import CpuPinning, Cpuset, fits, split_cpus


def test_the_run_gets_a_quarter_of_the_cpus_and_at_least_one():
    assert split_cpus([0]) is None
    two = split_cpus([1, 0])
    assert two.other_cpus == (0,) and two.replica_cpus == (1,)
    eight = split_cpus(range(8))
    assert eight.other_cpus == (0, 1) and eight.replica_cpus == (2, 3, 4, 5, 6, 7)


def test_replicas_whose_limits_exceed_their_cpus_are_not_squeezed_onto_them():
    assert fits([0.5], 1) == (True, "")
    assert fits([0.5, 0.5], 1)[0]
    ok, why = fits([1.0, 1.0], 1)  # 2 pods of 1 CPU on the one replica core of a 2-core machine
    assert not ok and "2 CPU of limits exceed the 1 CPU" in why
    ok, why = fits([None], 3)
    assert not ok and "no CPU limit" in why


class _Recorder:
    method = "fake"

    def __init__(self) -> None:
        self.applied: list[tuple] = []

    def setup(self, layout) -> None: ...
    def dirs(self) -> list[Path]: return []
    def move_others(self, pids): return list(pids)[:1]
    def preexec(self, cpus): return None
    def add_replica_group(self, group, cpus) -> None: ...
    def apply(self, replica_cpus, other_cpus, **_) -> None: self.applied.append((tuple(replica_cpus), tuple(other_cpus)))
    def release(self) -> None: ...


def test_scaling_past_the_replica_cpus_shares_every_cpu_and_says_so(monkeypatch):
    backend = _Recorder()
    pinning = CpuPinning("t1", cpus=[0, 1])
    monkeypatch.setattr(pinning, "_backends", lambda: [backend])
    pinning.start()
    assert pinning.mode == "pinned" and pinning.replica_cpus() == (1,)
    assert pinning.update([1.0]) is None  # one pod of 1 CPU fits CPU 1: nothing changes
    event = pinning.update([1.0, 1.0])
    assert event and "share CPUs 0,1" in event and "exceed" in event
    assert backend.applied[-1] == ((0, 1), (0, 1)) and pinning.replica_cpus() == (0, 1)
    assert "back on CPU 1" in pinning.update([1.0])
    assert backend.applied[-1] == ((1,), (0,))
    report = pinning.report()
    assert report["method"] == "fake" and report["replica_cpus"] == [1] and report["other_cpus"] == [0]
    assert [c["mode"] for c in report["changes"]] == ["shared", "pinned"]
    assert report["pinned"][0].startswith("flow process")


def test_nothing_is_pinned_on_one_cpu_or_when_turned_off():
    single = CpuPinning("t2", cpus=[0])
    single.start()
    assert not single.active and single.report()["mode"] == "off" and "1 CPU" in single.report()["note"]
    off = CpuPinning("t3", enabled=False)
    off.start()
    assert not off.active and off.report()["note"] == "platform.pin_cpus is false"


def test_when_no_backend_works_the_run_goes_on_unpinned_and_says_why(monkeypatch):
    class Broken(_Recorder):
        method = "cpuset (cgroup v1)"

        def setup(self, layout) -> None:
            raise PermissionError(13, "Permission denied")

    pinning = CpuPinning("t4", cpus=[0, 1])
    monkeypatch.setattr(pinning, "_backends", lambda: [Broken()])
    pinning.start()
    assert not pinning.active and pinning.update([0.5]) is None
    assert "Permission denied" in pinning.report()["note"]


def test_cgroup_v1_layout_is_written_with_the_parent_memory_nodes(tmp_path):
    (tmp_path / "cpuset.mems").write_text("0\n")
    group = Cpuset("v1", tmp_path, "nightcap-run-cpus")
    layout = split_cpus([0, 1, 2, 3])
    (tmp_path / "nightcap-run-cpus-others").mkdir()
    (tmp_path / "nightcap-run-cpus-others" / "cpuset.mems").write_text("")
    group.setup(layout)
    assert (tmp_path / "nightcap-run-cpus-others" / "cpuset.cpus").read_text() == "0"
    assert (tmp_path / "nightcap-run-cpus-others" / "cpuset.mems").read_text() == "0"
    assert (tmp_path / "nightcap-run-cpus-replicas" / "cpuset.cpus").read_text() == "1,2,3"
    group.apply((0, 1, 2, 3), (0, 1, 2, 3))
    assert (tmp_path / "nightcap-run-cpus-replicas" / "cpuset.cpus").read_text() == "0,1,2,3"


def test_cgroup_v2_enables_the_controller_and_pins_each_replica_group(tmp_path):
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory")
    group = Cpuset("v2", tmp_path, "nightcap-run-cpus")
    group.setup(split_cpus([0, 1]))
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpuset"
    assert group.replicas is None and group.preexec(lambda: (1,)) is None
    replica = tmp_path / "nightcap-run-replica-1"
    replica.mkdir()
    (replica / "cpuset.cpus").write_text("")
    group.add_replica_group(replica, (1,))
    assert (replica / "cpuset.cpus").read_text() == "1"
    group.apply((0, 1), (0, 1))
    assert (replica / "cpuset.cpus").read_text() == "0,1"
    assert (tmp_path / "nightcap-run-cpus-others" / "cpuset.cpus").read_text() == "0,1"


def _allowed(pid: int | str = "self") -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list"):
            return line.split(":", 1)[1].strip()
    return ""


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_a_real_pinning_moves_this_process_and_a_replica_apart_and_undoes_it():
    before = _allowed()
    pinning = CpuPinning(f"test{os.getpid()}-pin")
    child = None
    try:
        pinning.start()
        if not pinning.active:
            pytest.skip(pinning.report().get("note", "no pinning here"))
        layout = pinning.layout
        child = subprocess.Popen(["sleep", "30"], preexec_fn=pinning.replica_preexec())
        time.sleep(0.1)
        assert set(os.sched_getaffinity(child.pid)) == set(layout.replica_cpus)
        assert set(os.sched_getaffinity(0)) == set(layout.other_cpus)
        pinning.update([4.0 * len(layout.replica_cpus)], [child.pid])
        assert set(os.sched_getaffinity(child.pid)) == set(layout.replica_cpus + layout.other_cpus)
    finally:
        pinning.stop()
        if child is not None:
            child.kill()
            child.wait()
    assert _allowed() == before


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_the_local_platform_pins_replicas_shares_when_they_outgrow_their_cpus_and_unpins_at_teardown(tmp_path):
    from nightcap.config import validate
    from nightcap.platforms.base import PodSpec
    from nightcap.platforms.cgroups import detect, leftover_groups
    from nightcap.platforms.local import LocalPlatform
    from nightcap.targets.plan import plan_target

    cfg = validate({"target": {"name": "ref", "kind": "reference", "slots": 2, "service_ms": 5},
                    "slo": {"p95_ms": 500}, "platform": {"kind": "local", "ready_timeout_s": 20}})
    run = f"test{os.getpid()}-pinplat"
    platform = LocalPlatform(cfg, plan_target(cfg), run, tmp_path / "replicas")
    mine = set(os.sched_getaffinity(0))
    try:
        platform.deploy(PodSpec(cpu=0.5, memory=None, concurrency=2), 1)
        report = platform.cpu_pinning
        if report["mode"] != "pinned":
            pytest.skip(report.get("note", "no pinning here"))
        replica_cpus, other_cpus = set(report["replica_cpus"]), set(report["other_cpus"])
        assert set(os.sched_getaffinity(platform.replica_pids()[0])) == replica_cpus
        assert set(os.sched_getaffinity(0)) == other_cpus
        proxy = platform._proxy.pid
        assert set(os.sched_getaffinity(proxy)) == other_cpus  # started after the pinning: inherits the run's
        platform.set_resources(PodSpec(cpu=float(len(replica_cpus)), memory=None, concurrency=2))
        platform.scale(2)  # 2 x all the replica CPUs: would be squeezed, so everything shares
        assert platform.cpu_pinning["mode"] == "shared"
        assert all(set(os.sched_getaffinity(pid)) == mine for pid in platform.replica_pids())
        assert any("share CPUs" in e for e in platform.observe().events)
        platform.scale(1)
        assert platform.cpu_pinning["mode"] == "pinned"
        assert set(os.sched_getaffinity(platform.replica_pids()[0])) == replica_cpus
    finally:
        platform.teardown()
    assert set(os.sched_getaffinity(0)) == mine
    assert not [g for g in leftover_groups(detect()) if run in g.name]
