"""Generator efficiency: requests per generator CPU-second, nightcap's step against raw Locust and wrk.

All tools hit the same tiny counting server (bench/fastserver.py) with the same closed-loop concurrency,
one after another in one run. Each is measured the same way over a steady window: requests the *server*
answered, and the user + system CPU of the generator's processes (psutil), both read at the window's edges.

- nightcap step: LocalLocust (master + 1 worker, nightcap's locustfile) driven through the master's API by
  StepRunner.measure, as the flow runs a step (stats reset, window, /nightcap/window read, sampling);
  its CPU is master + worker;
- raw Locust: `locust --headless` with the same FastHttpUser request and users, a minimal locustfile
  (bench/raw_locustfile.py), in one process; and the same raw locustfile as master + 1 worker, which
  splits nightcap's overhead into Locust's distributed mode and nightcap's own additions;
- wrk (when installed): `wrk -t1 -cN` POSTing the same body. The Python server is its bottleneck, so
  wrk's figure is a floor on its efficiency.

nightcap and raw Locust alternate over `REPEATS` rounds, so a slow moment on the machine hits both.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx

from bench.common import Table, cpu_seconds, fmt, spawned, which_locust
from nightcap.config import validate
from nightcap.load.local import LocalLocust
from nightcap.load.runner import StepRunner
from nightcap.platforms.base import PodSpec
from nightcap.platforms.external import ExternalPlatform
from nightcap.processes.ports import free_port
from nightcap.targets.plan import plan_target

HERE = Path(__file__).resolve().parent
USERS = 16
WARM_S = 2.0
WINDOW_S = 5.0
REPEATS = 2


def _count(url: str) -> int:
    return int(httpx.get(f"{url}/count", timeout=5).text)


def _window(url: str, pids: Callable[[], list[int]], hold: Callable[[], None]) -> tuple[int, float, float]:
    """Requests answered, generator CPU seconds and wall seconds around `hold()`."""
    c0, cpu0, t0 = _count(url), cpu_seconds(pids()), time.monotonic()
    hold()
    c1, cpu1, t1 = _count(url), cpu_seconds(pids()), time.monotonic()
    return c1 - c0, cpu1 - cpu0, t1 - t0


def _wait_flowing(url: str, timeout_s: float = 30.0) -> None:
    """Until the server sees requests, then the warm-up."""
    deadline = time.monotonic() + timeout_s
    first = _count(url)
    while _count(url) == first:
        if time.monotonic() > deadline:
            raise RuntimeError("the generator sent nothing within 30 s")
        time.sleep(0.2)
    time.sleep(WARM_S)


def nightcap_step(url: str) -> tuple[int, float, float, str]:
    config = validate({
        "target": {"name": "bench-fast", "kind": "url", "url": url, "path": "/invocations"},
        "load": {"workers": 1, "warmup_s": WARM_S, "window_s": WINDOW_S, "max_users": USERS},
        "search": {"max_users": USERS},
        "slo": {"p95_ms": 1000},
        "stages": ["single_client"],
    }, "bench")
    plan = plan_target(config)
    t = config.target
    platform = ExternalPlatform(config)
    platform.deploy(PodSpec(None, None, 1), 1)
    gen = LocalLocust(1, plan.payloads, t.path, t.method, t.headers, t.request_timeout_s, config.load.reconnect_s)
    try:
        gen.start()
        runner = StepRunner(config, platform, gen, "bench", lambda row: None)
        runner.measure(USERS)  # the first step at a level: swarm + warm-up + window
        pids = lambda: [p.pid for p in gen.worker_procs] + ([gen.master.pid] if gen.master else [])  # noqa: E731
        rows = []
        requests, cpu, wall = _window(url, pids, lambda: rows.append(runner.measure(USERS)))
        row = rows[0]
        note = (f"StepRunner saw {row.requests} requests, {row.rps:.0f} rps; busiest worker "
                f"{row.generator_cpu_pct:.0f}% CPU{' (generator-bound)' if row.generator_bound else ''}")
        return requests, cpu, wall, note
    finally:
        gen.stop()


@contextlib.contextmanager
def _raw_locust(url: str, distributed: bool) -> Iterator[list[int]]:
    base = [which_locust(), "-f", str(HERE / "raw_locustfile.py"), "--loglevel", "WARNING"]
    run = ["--headless", "-u", str(USERS), "-r", "1000", "-H", url, "--run-time", "120s"]
    if not distributed:
        with spawned(base + run) as proc:
            yield [proc.pid]
        return
    port = free_port()
    master = base + run + ["--master", "--expect-workers", "1", "--master-bind-host", "127.0.0.1",
                           "--master-bind-port", str(port)]
    worker = base + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    with spawned(master) as m, spawned(worker) as w:
        yield [m.pid, w.pid]


def raw_locust(url: str, distributed: bool = False) -> tuple[int, float, float, str]:
    with _raw_locust(url, distributed) as pids:
        _wait_flowing(url)
        requests, cpu, wall = _window(url, lambda: pids, lambda: time.sleep(WINDOW_S))
    return requests, cpu, wall, ""


def wrk(url: str) -> tuple[int, float, float, str]:
    tmp = Path(tempfile.mkdtemp(prefix="nightcap-bench-wrk-"))
    script = tmp / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.body = \'{"inputs": [[1.0, 2.0, 3.0]]}\'\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    argv = [shutil.which("wrk") or "wrk", "-t1", f"-c{USERS}", f"-d{int(WARM_S + WINDOW_S + 10)}s", "-s", str(script),
            f"{url}/invocations"]
    try:
        with spawned(argv) as proc:
            _wait_flowing(url)
            requests, cpu, wall = _window(url, lambda: [proc.pid], lambda: time.sleep(WINDOW_S))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return requests, cpu, wall, "the Python server, not wrk, is the bottleneck: a floor on wrk's efficiency"


def run() -> Table:
    table = Table("generator_efficiency", f"Generator efficiency: {USERS} closed-loop users on a fast local server",
                  ["generator", "round", "requests", "rps", "generator_cpu_s", "generator_cores",
                   "requests_per_cpu_s", "note"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    per: dict[str, list[float]] = {}
    with spawned([sys.executable, "-m", "bench.fastserver", "--port", str(port)], ready_url=f"{url}/count"):
        plan: list[tuple[str, int, Callable[[], tuple[int, float, float, str]]]] = []
        for i in range(1, REPEATS + 1):
            plan += [("nightcap step (master + 1 worker)", i, lambda: nightcap_step(url)),
                     ("raw locust --headless (1 process)", i, lambda: raw_locust(url))]
        plan.append(("raw locust master + 1 worker", 1, lambda: raw_locust(url, distributed=True)))
        if shutil.which("wrk"):
            plan.append(("wrk -t1", 1, lambda: wrk(url)))
        else:
            table.notes.append("wrk is not installed (apt-get install -y wrk): its row is skipped")
        for name, i, go in plan:
            requests, cpu, wall, note = go()
            eff = requests / cpu if cpu > 0 else None
            per.setdefault(name, []).append(eff or 0.0)
            table.add(name, i, requests, fmt(requests / wall, 0), fmt(cpu, 2), fmt(cpu / wall, 2), fmt(eff, 0), note)
    means = {k: statistics.fmean(v) for k, v in per.items()}
    for name, eff in means.items():
        table.add(name, "mean", None, None, None, None, fmt(eff, 0), "")
    nc, raw = means.get("nightcap step (master + 1 worker)"), means.get("raw locust --headless (1 process)")
    dist = means.get("raw locust master + 1 worker")
    if nc and raw:
        overhead = 100.0 * (raw / nc - 1)  # extra CPU per request
        table.notes.append(f"nightcap's overhead over raw Locust: {overhead:+.1f}% CPU per request "
                           f"({'meets' if overhead < 10 else 'misses'} the < 10% target)")
        if dist:
            table.notes.append(f"of which Locust's distributed mode (raw master + worker vs one process): "
                               f"{100.0 * (raw / dist - 1):+.1f}%; nightcap's own additions over raw master + worker: "
                               f"{100.0 * (dist / nc - 1):+.1f}%")
    return table


if __name__ == "__main__":
    from bench.run_all import show

    show(run())
