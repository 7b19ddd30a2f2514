"""Open loop: what a stalling target really does to latency, and how exactly the generator keeps its rate.

Part 1, coordinated omission. A reference server of 8 slots x 20 ms (400 rps) that stalls every 2 s for
0.5 s (no response leaves meanwhile; slots are released on time). At the operating rate (70%: 280 rps)
arrivals fall uniformly over the stall period, so the latency quantiles are known exactly
(`stall_latency_ms`: p50 20 ms, p95 420 ms, p99 500 ms). The closed loop runs the users that give about
the same rate (70% of the slots: 6 users, each waiting for its response) and reports what it saw; the open
loop offers 280 rps through the master's API (`swarm_rate`) and reports latency from the planned send time.
Both are read the way the flow reads a window (`/nightcap/window`, `/nightcap/open`).

Part 2, generator accuracy. One worker, open loop, constant spacing, against the tiny counting server
(bench/fastserver.py): rates from 10 rps, doubling until the worker process uses 90% of a core (or the rate
slips), then bisected towards that rate until the bracket is within 15%. Per rate:
offered and achieved rate (the worker's counts over the time its reports covered), their error, late and
dropped arrivals, the worker's CPU (psutil). The rate at which the worker reaches 90% of a core is the
line through the measured (rate, CPU) points (CPU grows linearly with the rate); windows are long enough
for 200 arrivals (10 s at 10 rps), so one arrival more or less is within 0.5%.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from bench.common import Table, cpu_seconds, fmt, spawned
from nightcap.load.driver import summarize
from nightcap.load.local import LocalLocust
from nightcap.load.open_loop import OpenWindow, summarize_open
from nightcap.processes.ports import free_port
from nightcap.targets.reference_capacity import stall_latency_ms

HERE = Path(__file__).resolve().parent
SLOTS, SERVICE_MS, STALL_EVERY_S, STALL_S = 8, 20.0, 2.0, 0.5
HEADROOM = 0.7
STALL_WINDOW_S = 10.0  # five stall periods
WARM_S = 2.0
MAX_RATE = 20_000.0
ACCURACY = 0.02


@contextlib.contextmanager
def _server(argv: list[str], port: int, ready_path: str) -> Iterator[str]:
    with spawned([sys.executable, *argv], ready_url=f"http://127.0.0.1:{port}{ready_path}"):
        yield f"http://127.0.0.1:{port}"


def _generator() -> LocalLocust:
    gen = LocalLocust(1, [b'{"inputs": [[1.0, 2.0, 3.0]]}'], "/invocations", "POST", {}, 10.0, 0.0)
    gen.start()
    return gen


def _open_window(gen: LocalLocust, url: str, rate: float, window_s: float) -> tuple[OpenWindow, float]:
    gen.client.swarm_rate(rate, gen.workers, url)
    time.sleep(WARM_S)
    gen.client.reset()
    pids = [p.pid for p in gen.worker_procs]
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    time.sleep(window_s)
    closed = summarize(gen.client.window())
    window = summarize_open(gen.client.open_window(settle_s=5.0), rate, closed)  # by arrival, once they came back
    cpu = 100.0 * (cpu_seconds(pids) - cpu0) / (time.monotonic() - t0)
    return window, cpu


def stall_rows(table: Table) -> None:
    rate = HEADROOM * SLOTS * 1000.0 / SERVICE_MS
    users = round(HEADROOM * SLOTS)
    truth = {q: stall_latency_ms(q, SERVICE_MS, STALL_EVERY_S, STALL_S) for q in (0.5, 0.95, 0.99)}
    port = free_port()
    argv = ["-m", "nightcap.targets.reference_server", "--port", str(port), "--slots", str(SLOTS), "--service-ms",
            str(SERVICE_MS), "--queue", "1000", "--stall-every-s", str(STALL_EVERY_S), "--stall-s", str(STALL_S)]
    with _server(argv, port, "/ping") as url:
        gen = _generator()
        try:
            gen.client.swarm(users, 1000, url)
            time.sleep(WARM_S)
            gen.client.reset()
            time.sleep(STALL_WINDOW_S)
            closed = summarize(gen.client.window())
            gen.client.stop()
            time.sleep(0.5)
            opened, cpu = _open_window(gen, url, rate, STALL_WINDOW_S)
        finally:
            gen.stop()

    def err(measured: float | None, q: float) -> str | None:
        return None if measured is None else f"{100 * (measured / truth[q] - 1):+.0f}%"

    table.add("stall", f"closed loop, {users} users", fmt(closed.rps), closed.p50_ms, closed.p95_ms, closed.p99_ms,
              f"{truth[0.5]:.0f} / {truth[0.95]:.0f} / {truth[0.99]:.0f}", err(closed.p95_ms, 0.95), None, None, None)
    table.add("stall", f"open loop, {rate:.0f} rps", fmt(opened.achieved_rps), opened.p50_ms, opened.p95_ms,
              opened.p99_ms, f"{truth[0.5]:.0f} / {truth[0.95]:.0f} / {truth[0.99]:.0f}", err(opened.p95_ms, 0.95),
              opened.late, opened.dropped, fmt(cpu, 0))
    within = opened.p95_ms is not None and abs(opened.p95_ms / truth[0.95] - 1) <= 0.2
    table.notes.append(
        f"stall: truth at {rate:.0f} rps (every {STALL_EVERY_S:g} s no response leaves for {STALL_S:g} s): p50/p95/p99 "
        f"{truth[0.5]:.0f}/{truth[0.95]:.0f}/{truth[0.99]:.0f} ms; open-loop p95 {opened.p95_ms} ms "
        f"({'within' if within else 'NOT within'} 20%), closed-loop p95 {closed.p95_ms} ms at {closed.rps:.0f} rps "
        f"(mean from the planned time {opened.mean_ms:.0f} ms; truth {SERVICE_MS + 1000 * STALL_S**2 / (2 * STALL_EVERY_S):.0f})")


def accuracy_rows(table: Table) -> None:
    port = free_port()
    points: list[tuple[float, float]] = []
    worst, clean_to, late, planned, dropped, late_max = 0.0, None, 0, 0, 0, 0.0
    with _server([str(HERE / "fastserver.py"), "--port", str(port)], port, "/count") as url:
        gen = _generator()
        try:
            rate, low, high = 10.0, 0.0, None
            while rate <= MAX_RATE and len(points) < 16:
                window_s = max(4.0, 200.0 / rate)
                w, cpu = _open_window(gen, url, rate, window_s)
                error = w.achieved_rps / rate - 1
                offered_error = w.offered_rps / rate - 1
                points.append((rate, cpu))
                within = abs(error) <= ACCURACY and abs(offered_error) <= ACCURACY and not w.dropped
                table.add("accuracy", f"open loop, {rate:g} rps", fmt(w.achieved_rps, 2), w.p50_ms, w.p95_ms, w.p99_ms,
                          f"offered {w.offered_rps:.2f} ({100 * offered_error:+.2f}%)", f"{100 * error:+.2f}%",
                          f"{w.late} (max {w.late_ms_max:.0f} ms)" if w.late else 0, w.dropped, fmt(cpu, 0))
                if cpu >= 90 or not within:
                    high = rate
                else:
                    low = clean_to = rate
                    worst = max(worst, abs(error), abs(offered_error))
                    late, planned, dropped = late + w.late, planned + w.planned, dropped + w.dropped
                    late_max = max(late_max, w.late_ms_max)
                if high is None:
                    rate *= 2
                elif high - low > 0.15 * high:  # bisect towards the rate where the worker reaches 90%
                    rate = round((low + high) / 2, -1)
                else:
                    break
        finally:
            gen.stop()
    rates, cpus = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    top = (rates >= rates.max() / 4) & (cpus < 95)  # the upper points below saturation: idle wake-ups dominate low rates
    slope, intercept = np.polyfit(rates[top], cpus[top], 1) if top.sum() >= 2 else (0.0, 0.0)
    at_90 = (90 - intercept) / slope if slope > 0 else None
    table.notes.append(
        f"accuracy: from 10 to {clean_to:g} rps (the rates below 90% of a core) offered and achieved within "
        f"{100 * worst:.2f}% of the rate asked (target: within 2%), {dropped} dropped, {late} of {planned} arrivals "
        f"late by more than 5 ms ({100 * late / max(planned, 1):.2f}%, at most {late_max:.0f} ms; target: none); "
        f"one worker reaches 90% of a core at about {'%.0f' % at_90 if at_90 else '?'} rps (line through the "
        f"upper (rate, CPU) points: {slope * 1000:.1f}% of a core per 1000 rps + {intercept:.1f}%)")


def run() -> Table:
    table = Table("open_loop", "Open loop: a stalling target (closed vs open loop against the truth) and generator accuracy",
                  ["part", "load", "achieved_rps", "p50_ms", "p95_ms", "p99_ms", "truth_p50_p95_p99_ms_or_offered",
                   "p95_error_or_rate_error", "late", "dropped", "worker_cpu_pct"])
    stall_rows(table)
    accuracy_rows(table)
    return table


if __name__ == "__main__":
    from bench.run_all import show

    show(run())
