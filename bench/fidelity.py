"""Measurement fidelity: what latency nightcap's generator reports when the true latency is known.

One reference server (8 slots x 20 ms, no CPU work; capacity 400 rps), addressed directly (no proxy), so
every request should take exactly 20 ms: the arrivals are spread evenly (32 paced users via
`MasterClient.swarm(..., user_rps=...)`, each at a random phase within its period), so hardly any request
waits for a slot at 20%, 50% or 80% of capacity. Whatever the generator reports beyond 20 ms is the error it adds (its own
scheduling, the HTTP client, the loopback, the server's event loop). Each load is a fresh swarm, a warm-up
and a window read through `/nightcap/window`, as a step of the flow reads it.
"""

from __future__ import annotations

import time

from bench.common import Table, cpu_seconds, fmt, reference_server
from nightcap.load.driver import summarize
from nightcap.load.local import LocalLocust
from nightcap.targets.plan import payloads_for
from nightcap.config import validate

SLOTS = 8
SERVICE_MS = 20.0
USERS = 32
LOADS = [0.2, 0.5, 0.8]
WARM_S = 2.0
WINDOW_S = 4.0


def run() -> Table:
    capacity = SLOTS * 1000.0 / SERVICE_MS
    table = Table("fidelity", f"Measurement fidelity: reference target {SLOTS} slots x {SERVICE_MS:.0f} ms "
                  f"(capacity {capacity:.0f} rps), true latency {SERVICE_MS:.0f} ms",
                  ["load_pct", "offered_rps", "measured_rps", "requests", "p50_ms", "p95_ms", "p99_ms",
                   "p50_error_ms", "p95_error_ms", "p95_error_pct", "generator_cpu_pct"])
    target = validate({"target": {"name": "bench", "kind": "reference"}, "slo": {"p95_ms": 1000}}).target
    with reference_server(SLOTS, SERVICE_MS, queue=64) as url:
        gen = LocalLocust(1, payloads_for(target), "/invocations", "POST", {}, 10.0, 0.0)
        try:
            gen.start()
            for load in LOADS:
                offered = capacity * load
                per_user = offered / USERS
                gen.client.swarm(USERS, spawn_rate=1000, host=url, user_rps=per_user)
                time.sleep(WARM_S)
                gen.client.reset()
                pids = [p.pid for p in gen.worker_procs]
                cpu0, t0 = cpu_seconds(pids), time.monotonic()
                time.sleep(WINDOW_S)
                w = summarize(gen.client.window())
                cpu = 100.0 * (cpu_seconds(pids) - cpu0) / (time.monotonic() - t0)
                gen.client.stop()
                time.sleep(0.5)

                def err(v: float | None) -> float | None:
                    return None if v is None else v - SERVICE_MS

                p95_err = err(w.p95_ms)
                table.add(int(load * 100), fmt(offered, 0), fmt(w.rps, 1), w.requests, w.p50_ms, w.p95_ms, w.p99_ms,
                          fmt(err(w.p50_ms)), fmt(p95_err),
                          fmt(None if p95_err is None else 100.0 * p95_err / SERVICE_MS), fmt(cpu, 0))
                if w.failures:
                    table.notes.append(f"{int(load * 100)}%: {w.failures} failed requests")
        finally:
            gen.stop()
    table.notes.append("error = measured - 20 ms; Locust keeps response times under 100 ms to the millisecond")
    return table


if __name__ == "__main__":
    from bench.run_all import show

    show(run())
