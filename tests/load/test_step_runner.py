"""StepRunner's rules that need no load: when to swarm again, and which CPU figures describe the window."""

from __future__ import annotations

from typing import Any

from nightcap.config import validate
from nightcap.load.runner import StepRunner, replica_cpu
from nightcap.platforms.base import Observation, ReplicaSample


class ScriptedMaster:
    """A master whose windows come from a script; records every swarm."""

    def __init__(self, windows: list[dict[str, Any]]) -> None:
        self.windows = windows
        self.swarms: list[int] = []

    def swarm(self, users: int, spawn_rate: float, host: str, user_rps: float = 0.0) -> None:
        self.swarms.append(users)

    def reset(self) -> None:
        pass

    def window(self, timeout_s: float | None = None) -> dict[str, Any]:
        return self.windows.pop(0)


class Generator:
    workers = 1
    cpu_source = "test counters"

    def __init__(self, client: ScriptedMaster) -> None:
        self.client = client

    def alive_workers(self) -> int:
        return 1

    def mark_cpu(self) -> None:
        pass

    def generator_cpu_pct(self) -> list[float]:
        return [20.0]


class Platform:
    replicas = 1
    service_url = "http://127.0.0.1:9"

    def observe(self) -> Observation:
        return Observation()


def _window(requests: int) -> dict[str, Any]:
    workers = {"w1": {"requests": requests, "failures": 0, "covered_s": 1.0}} if requests else {}
    total = {"num_requests": requests, **{f"response_time_percentile_{q}": 20.0 for q in (0.5, 0.9, 0.95, 0.99)}}
    return {"workers": workers, "total": total, "errors": [], "user_count": 4}


def test_every_invalid_window_swarms_again() -> None:
    """A master that had no connected worker when told to swarm answers success and starts nothing: the window
    is empty (invalid), and the same user count must not be taken as already running."""
    config = validate({"target": {"name": "t", "kind": "reference"}, "slo": {"p95_ms": 500},
                       "load": {"warmup_s": 0.01, "window_s": 0.01}})
    master = ScriptedMaster([_window(0), _window(120), _window(118)])
    runner = StepRunner(config, Platform(), Generator(master), "single_client", lambda row: None)  # type: ignore[arg-type]
    first = runner.measure(4)
    assert not first.valid and "0 of 1 reporting" in first.note
    second, third = runner.measure(4), runner.measure(4)
    assert second.valid and third.valid
    assert master.swarms == [4, 4]  # swarmed again after the empty window, not again after a good one
    assert second.generator_cpu_source == "test counters"


class PeggedGenerator(Generator):
    def generator_cpu_pct(self) -> list[float]:
        return [106.0]


def test_a_pegged_generators_empty_window_is_not_swarmed_again() -> None:
    """A starved generator (its worker at a full core) that completed nothing in a window still has its users:
    swarming again would restart them and keep it starting forever (every window empty, the search aborted)."""
    config = validate({"target": {"name": "t", "kind": "reference"}, "slo": {"p95_ms": 500},
                       "load": {"warmup_s": 0.01, "window_s": 0.01}})
    empty = {**_window(0), "workers": {"w1": {"requests": 0, "failures": 0, "covered_s": 1.0}}}
    master = ScriptedMaster([empty, _window(3)])
    runner = StepRunner(config, Platform(), PeggedGenerator(master), "single_client", lambda row: None)  # type: ignore[arg-type]
    first = runner.measure(1)
    assert not first.valid and first.generator_bound
    second = runner.measure(1)
    assert second.valid and second.generator_bound
    assert master.swarms == [1]


def _sample(cpu: float, interval: tuple[float, float] | None, name: str = "pod-a") -> Observation:
    return Observation(replicas=[ReplicaSample(name=name, ready=True, phase="Running", cpu_cores=cpu, cpu_limit=1.0,
                                               cpu_window=interval)],
                       cpu_source="metrics-server, 15s intervals" if interval else "process CPU counters")


def test_cpu_over_an_interval_counts_only_inside_the_window() -> None:
    window = (1000.0, 1040.0)
    samples = [_sample(0.9, (980.0, 995.0)),   # the step before: busy, must not count
               _sample(0.9, (980.0, 995.0)),   # read again
               _sample(0.3, (1010.0, 1025.0)),  # inside
               _sample(0.3, (1010.0, 1025.0))]  # read again: one interval, counted once
    per_pod, source = replica_cpu(samples, window)
    assert per_pod == {"pod-a": [30.0]}
    assert source == "metrics-server, 15s intervals; 1 interval(s) inside the window"


def test_a_window_shorter_than_the_interval_reports_no_cpu_and_says_why() -> None:
    per_pod, source = replica_cpu([_sample(0.9, (990.0, 1005.0)), _sample(0.5, (1005.0, 1020.0))], (1000.0, 1004.0))
    assert per_pod == {}
    assert "none inside this 4s window" in source and "load.window_s" in source


def test_counter_rates_skip_the_first_look_as_before() -> None:
    per_pod, source = replica_cpu([_sample(0.9, None), _sample(0.4, None), _sample(0.6, None)], (0.0, 3.0))
    assert per_pod == {"pod-a": [40.0, 60.0]} and source == "process CPU counters"


def test_only_local_workers_get_the_api_key(monkeypatch: Any, tmp_path: Any) -> None:
    """The master sends no request, so it never holds the key (in the cluster: only worker pods read the Secret)."""
    import nightcap.load.local as local

    envs: dict[str, dict[str, str]] = {}

    class Recorded:
        pid = 0

    def popen(argv: list[str], env: dict[str, str], **_: Any) -> Recorded:
        envs["master" if "--master" in argv else "worker"] = env
        return Recorded()

    monkeypatch.setattr(local.subprocess, "Popen", popen)
    gen = local.LocalLocust(1, [b"{}"], "/p", "POST", {}, 5.0, 0.0, api_key="k3y", logdir=tmp_path)
    try:
        gen._spawn(["--master"], "master")
        gen._spawn(["--worker"], "worker-0")
    finally:
        gen.client.close()
        __import__("shutil").rmtree(gen._tmp, ignore_errors=True)
    assert envs["worker"]["NIGHTCAP_API_KEY"] == "k3y"
    assert "NIGHTCAP_API_KEY" not in envs["master"]


def test_a_master_that_dies_while_told_to_swarm_is_named() -> None:
    """A switch from closed to open loop stops the swarm first, and a master killed in that second answered the
    run with a bare 'Server disconnected without sending a response'; it reads as a window read's failure does."""
    import httpx
    import pytest

    from nightcap.load.driver import LoadError

    class DeadMaster(ScriptedMaster):
        def swarm(self, users: int, spawn_rate: float, host: str, user_rps: float = 0.0) -> None:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

        def swarm_rate(self, *args: Any, **kwargs: Any) -> None:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    config = validate({"target": {"name": "t", "kind": "reference"}, "slo": {"p95_ms": 500}})
    runner = StepRunner(config, Platform(), Generator(DeadMaster([])), "single_client", lambda row: None)  # type: ignore[arg-type]
    for call in (lambda: runner.set_users(4), lambda: runner.set_rate(50.0)):
        with pytest.raises(LoadError, match="the Locust master stopped answering: Server disconnected"):
            call()


def test_a_lighter_window_waits_for_the_drain_and_two_worker_reports_more() -> None:
    """A window counts each worker's requests from its last report before the reset, up to one report interval
    earlier, and workers stop surplus users on their own time: after 12 users with a p95 of 360 ms, the 2-user
    window's warm-up ends two intervals after the drain (a CPU-limited pod's 2-user window read 56.4 rps against
    50 when it waited the drain alone)."""
    from nightcap.load.driver import REPORT_INTERVAL_S
    from nightcap.steps import StepRow

    config = validate({"target": {"name": "t", "kind": "reference"}, "slo": {"p95_ms": 500},
                       "load": {"warmup_s": 0.5, "window_s": 2.0}})
    runner = StepRunner(config, Platform(), Generator(ScriptedMaster([])), "single_client", lambda row: None)  # type: ignore[arg-type]
    runner.follow(StepRow(stage="single_client", step=1, replicas=1, cpu=0.5, memory=None, concurrency=None,
                          users=12, rps=50.0, p95_ms=360.0))
    assert runner._warmup_s(2) == 0.36 + 2 * REPORT_INTERVAL_S
    assert runner._warmup_s(None) == 0.36 + 2 * REPORT_INTERVAL_S  # an open-loop rate after it
    assert runner._warmup_s(16) == 0.5  # heavier: nothing queued to wait for
