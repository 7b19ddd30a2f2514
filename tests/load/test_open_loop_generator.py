"""The open-loop generator against reference servers whose answer is known: offered = achieved at a fixed
rate, latency from the planned send time (a stall shows in open loop and hides in closed loop), and an
overloaded target shows as dropped arrivals, not as a lower rate."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from nightcap.load.driver import summarize
from nightcap.load.local import LocalLocust
from nightcap.load.open_loop import OpenWindow, summarize_open
from nightcap.processes.ports import free_port
from nightcap.targets.reference_capacity import stall_latency_ms

pytestmark = pytest.mark.slow  # the tests that assert rates or latencies are also `quiet`
TIMEOUT_S = 2.0  # the generator's request time-out: longer than a window here, so time-outs land in later ones


@contextmanager
def server(*args: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nightcap.targets.reference_server", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def locust() -> Iterator[LocalLocust]:
    gen = LocalLocust(workers=1, payloads=[b"{}"], path="/invocations", method="POST", headers={},
                      timeout_s=TIMEOUT_S, reconnect_s=0.0)
    gen.start()
    try:
        yield gen
    finally:
        gen.stop()


def open_window(gen: LocalLocust, url: str, rate: float, window_s: float, max_in_flight: int = 1000,
                warmup_s: float = 1.0) -> tuple[OpenWindow, float]:
    gen.client.swarm_rate(rate, gen.workers, url, max_in_flight=max_in_flight)
    time.sleep(warmup_s)
    gen.client.reset()
    gen.mark_cpu()
    time.sleep(window_s)
    window = summarize(gen.client.window())
    # by arrival: the window's last arrivals may still be in flight; wait for them as the step runner does
    return summarize_open(gen.client.open_window(settle_s=TIMEOUT_S + 1), rate, window), max(gen.generator_cpu_pct())


@pytest.mark.quiet
def test_a_stall_shows_in_open_loop_and_hides_in_closed_loop(locust: LocalLocust) -> None:
    every_s, stall_s, service_ms = 1.0, 0.25, 20.0
    with server("--slots", "64", "--service-ms", str(service_ms), "--stall-every-s", str(every_s),
                "--stall-s", str(stall_s)) as url:
        w, cpu = open_window(locust, url, rate=100, window_s=3.0)
        locust.client.swarm(2, 100, url)  # closed loop at about the same rate: 2 users x 20 ms
        time.sleep(1.0)
        locust.client.reset()
        time.sleep(3.0)
        closed = summarize(locust.client.window())
    truth = stall_latency_ms(0.95, service_ms, every_s, stall_s)  # 20 + 250 - 50 = 220 ms
    assert w.verdict(cpu) == "ok", w.explain(cpu)
    assert w.offered_rps == pytest.approx(100, rel=0.02) and w.achieved_rps == pytest.approx(100, rel=0.03)
    assert w.p95_ms == pytest.approx(truth, rel=0.2), (w.p95_ms, truth)
    assert w.p50_ms < service_ms + 10
    # mean from the planned time: service + stall^2 / (2 period) = 20 + 31 ms
    assert w.mean_ms == pytest.approx(service_ms + 1000 * stall_s**2 / (2 * every_s), rel=0.2)
    assert closed.p95_ms < service_ms + 15, closed  # the closed loop's p95 hides the stall


@pytest.mark.quiet
def test_an_overloaded_target_drops_arrivals_at_the_in_flight_bound(locust: LocalLocust) -> None:
    # 1 slot x 50 ms = 20 rps, offered 60 rps with a large queue: in flight grows until the bound drops arrivals
    with server("--slots", "1", "--service-ms", "50", "--queue", "1000") as url:
        w, cpu = open_window(locust, url, rate=60, window_s=3.0, max_in_flight=20, warmup_s=1.5)
    assert w.dropped > 0.3 * w.planned, w
    assert w.in_flight_max == 20
    assert w.goodput_rps == pytest.approx(20, rel=0.15)
    assert w.offered_rps == pytest.approx(60, rel=0.03)  # the schedule kept going
    assert w.verdict(cpu) == "target-overloaded", (cpu, w.explain(cpu))
    assert "target-overloaded" in w.explain(cpu) and "dropped" in w.explain(cpu)


def test_each_arrival_is_counted_in_the_window_that_planned_it_whenever_it_fails(locust: LocalLocust) -> None:
    """Issue 23 item 4: an overload (60 rps at a 20-rps server with a long queue), then a recovery (10 rps), with
    2 s time-outs, longer than the 1 s windows. The overload's time-outs land while the recovery runs; by arrival
    they count in the overload's windows, so no window fails more arrivals than it planned or serves more than
    it offered, and once settled every arrival is accounted for exactly once."""
    with server("--slots", "1", "--service-ms", "50", "--queue", "1000") as url:
        windows: list[tuple[str, int]] = []
        for phase, rate in (("overload", 60), ("recovery", 10)):
            locust.client.swarm_rate(rate, 1, url)
            locust.client.reset()
            for _ in range(2):
                time.sleep(1.0)
                windows.append((phase, locust.client.open_window()["first"]))
        locust.client.swarm_rate(0, 1, url)  # plan nothing more; what is in flight comes back or times out
        settled = locust.client.open_window(first=windows[0][1], last=windows[-1][1], settle_s=TIMEOUT_S + 3)
        final = [(phase, summarize_open(locust.client.open_window(first=k, last=k), 0.0)) for phase, k in windows]
    assert settled["settled"], settled
    for phase, w in final:
        assert w.unsettled == 0 and w.planned == w.dropped + w.ok + w.failures + w.abandoned, (phase, w)
        assert 0.0 <= w.arrival_error_rate <= 1.0 and w.goodput_rps <= w.offered_rps + 1e-9, (phase, w)
    over = [w for phase, w in final if phase == "overload"]
    recovery = [w for phase, w in final if phase == "recovery"]
    assert over[0].ok > 0 and sum(w.failures for w in over) > 0  # the queue outgrew the time-out during the overload
    # the recovery's own arrivals waited behind the overload's backlog: failed, each counted once, in its window
    assert sum(w.failures for w in recovery) == sum(w.planned for w in recovery) > 0
    assert sum(w.planned for w in recovery) < sum(w.planned for w in over) / 3


@pytest.mark.quiet
def test_switching_between_closed_and_open_loop_keeps_one_class_at_a_time(locust: LocalLocust) -> None:
    with server("--slots", "8", "--service-ms", "10") as url:
        locust.client.swarm(3, 100, url)
        time.sleep(1.0)
        w, _ = open_window(locust, url, rate=50, window_s=2.0, warmup_s=1.0)
        users = locust.client.window()["user_count"]
    assert users == 1  # one OpenLoopUser on the one worker, no closed-loop user left over
    assert w.offered_rps == pytest.approx(50, rel=0.05) and w.dropped == 0


@pytest.mark.quiet
def test_the_step_runner_measures_open_loop_rows_and_switches_back_to_users(locust: LocalLocust) -> None:
    from nightcap.config import validate
    from nightcap.load.runner import StepRunner
    from nightcap.platforms.base import PodSpec
    from nightcap.platforms.external import ExternalPlatform

    with server("--slots", "16", "--service-ms", "20", "--stall-every-s", "1", "--stall-s", "0.2") as url:
        config = validate({"target": {"name": "open", "kind": "url", "url": url},
                           "load": {"warmup_s": 0.5, "window_s": 3, "workers": 1, "arrivals": "constant"},
                           "slo": {"p95_ms": 100}})
        platform = ExternalPlatform(config)
        platform.deploy(PodSpec(None, None, 1), 1)
        rows = []
        runner = StepRunner(config, platform, locust, "single_client", rows.append)
        row, window = runner.measure_rate(100.0)
        closed = runner.measure(2)
    truth = stall_latency_ms(0.95, 20, 1.0, 0.2)  # 20 + 200 - 50 = 170 ms
    assert rows == [row, closed]
    assert row.load == "open" and row.users == 0 and row.offered_rps == pytest.approx(100, rel=0.03)
    assert row.rps == pytest.approx(window.goodput_rps, abs=0.01) and row.dropped == 0 and row.valid
    assert row.p95_ms == pytest.approx(truth, rel=0.25) and row.mean_ms > 20
    assert not row.generator_bound and row.note == ""
    assert closed.load == "closed" and closed.users == 2 and closed.p95_ms < 40


DNS_PROBE = """
import socket, gevent.socket
calls = []
real = gevent.socket.getaddrinfo
gevent.socket.getaddrinfo = lambda *a, **k: calls.append(a[0]) or real(*a, **k)
from locust.util.load_locustfile import load_locustfile
from nightcap.locust_env import LOCUST_DIR, LOCUST_ENTRY
users, _ = load_locustfile(str(LOCUST_DIR / LOCUST_ENTRY))  # as Locust loads it: the entry installs the cache
import nightcap_request
from geventhttpclient.connectionpool import ConnectionPool
pools = [ConnectionPool("localhost", 9, "localhost", 9) for _ in range(50)]
first = [pool._resolve() for pool in pools]
nightcap_request.DNS_TTL_S = 0.0
pools[0]._resolve()
print(len(calls), first[0] == first[-1], *sorted(users))
"""


def test_per_request_connections_resolve_the_host_once_not_once_per_arrival() -> None:
    """50 connections to one host ask DNS once (in a cluster: several queries per arrival otherwise), and again
    once the answer is older than NIGHTCAP_DNS_TTL_S. In its own process: the locustfile imports Locust, which
    monkey-patches everything it touches. Loaded by Locust's own loader, as `locust -f` does: the files beside the
    entry resolve by bare name, and Locust finds both user classes."""
    out = subprocess.run([sys.executable, "-c", DNS_PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "True", "ModelUser", "OpenLoopUser"], out.stdout  # Locust finds both classes


def test_idle_leaves_no_user_running_and_the_next_swarm_starts_from_it(locust: LocalLocust) -> None:
    """Between searches the swarm goes to 0 users instead of `/stop` (which answers only after a whole-second poll
    of the workers, 17 times a make run): no request is sent while idle, the master stays ready to swarm again,
    and an open-loop swarm is still stopped."""
    with server("--slots", "4", "--service-ms", "10") as url:
        locust.client.swarm(4, 100, url)
        time.sleep(1.0)
        locust.client.idle()
        time.sleep(1.0)  # two worker reports (0.5 s apart): the last one before the reset holds no request of the swarm
        locust.client.reset()
        time.sleep(1.0)
        idle = locust.client.window()
        locust.client.swarm(4, 100, url)
        time.sleep(1.0)
        locust.client.reset()
        time.sleep(1.0)
        again = locust.client.window()
        locust.client.swarm_rate(20, locust.workers, url)
        time.sleep(0.5)
        locust.client.idle()
        stopped = locust.client.window()
    assert idle["user_count"] == 0 and idle["total"]["num_requests"] == 0 and idle["state"] == "running"
    assert again["user_count"] == 4 and again["total"]["num_requests"] > 100
    assert stopped["user_count"] == 0 and stopped["state"] == "stopped"  # open loop: `/stop`, as before
