"""Where an open-loop overload's backlog waits on the local platform, and how long it takes to drain.

Issue 23 item 3. One pod behind the local proxy is offered 3x its rate open loop (per-request connections, as the
autoscale stage sends them) for OVERLOAD_S, and on until the pods added then are ready (no HPA: all at once, so
the drain is not mixed up with the scale-up's timing; nothing is sampled while they start); then the rate drops
to 70% of one pod for RECOVERY_S. Every second: the generator's
requests in flight, the proxy's accept queue, the replicas' accept queues, the connections the replicas hold and
how many of those their caller already closed (the kernel's counts, `nightcap.platforms.socket_queues`), and the
p95 of that second's own arrivals (by arrival: read again once they all came back).

Two servers: the CPU-bound reference target of the issue (0.25 CPU, 8 ms CPU a request: 31 rps; it answers 503
beyond 4 slots + 64 queued) and the bundled MLflow model at 0.5 CPU (uvicorn, which queues whatever it is sent).
`python -m bench.backlog [reference|mlflow]`.
"""

from __future__ import annotations

import sys
import time

from bench.common import Table, reference_config, reference_stack
from nightcap.config import Config, validate
from nightcap.load.open_loop import summarize_open

OVERLOAD_S, RECOVERY_S, SETTLE_S = 12, 20, 12.0
CASES = {  # name -> (config, one pod's rate (measured by the ramp on this machine), pods after the overload)
    "reference": (lambda: reference_config(4, 20.0, queue=64, cpu_ms=8.0, cpu=0.25, workers=1), 31.0, 3),
    "mlflow": (lambda: validate({
        "target": {"name": "wine-mlflow", "kind": "mlflow", "path": "/invocations", "ready_path": "/ping"},
        "platform": {"kind": "local", "replicas": 1, "cpu": 0.5, "memory": "1Gi", "concurrency": 1,
                     "ready_timeout_s": 120},
        "load": {"workers": 1, "reconnect_s": 0}, "slo": {"p95_ms": 250}, "stages": ["single_client"]}, "bench"),
        55.0, 2),
}


def _case(table: Table, name: str, config: Config, rate: float, pods: int) -> None:
    with reference_stack(config, workers=1) as stack:
        client, platform = stack.generator.client, stack.platform
        rows: list[tuple[str, float, int, dict[str, int], dict[str, dict[str, int]]]] = []
        t0 = time.monotonic()
        for phase, offered, seconds in (("overload", 3 * rate, OVERLOAD_S), ("recovery", 0.7 * rate, RECOVERY_S)):
            if phase == "recovery":
                platform.scale(pods)  # ready before the rate drops: the drain alone is measured
            client.swarm_rate(offered, 1, platform.service_url, connection="per-request")
            client.reset()
            for _ in range(seconds):
                time.sleep(1.0)
                raw = client.open_window()
                in_flight = sum(int(w.get("in_flight", 0)) for w in raw["workers"].values())
                rows.append((phase, time.monotonic() - t0, raw["first"], {"in_flight": in_flight}, platform.queues()))
        client.swarm_rate(0, 1, platform.service_url)
        client.open_window(first=rows[0][2], last=rows[-1][2], settle_s=SETTLE_S)
        for phase, t, window, gen, queues in rows:
            w = summarize_open(client.open_window(first=window, last=window), 0.0)
            proxy = queues.pop("proxy")
            table.add(name, phase, round(t, 1), round(w.offered_rps, 1), round(w.goodput_rps, 1), w.p95_ms,
                      round(w.arrival_error_rate, 3), gen["in_flight"], proxy["accept_queue"],
                      sum(q["accept_queue"] for q in queues.values()),
                      sum(q["established"] + q["client_closed"] for q in queues.values()),
                      sum(q["client_closed"] for q in queues.values()))
        starts = [round((r.ready_at or 0) - r.started, 1) for r in platform.all_replicas()]
        table.notes.append(f"{name}: 3 x {rate:g} rps on 1 pod for {OVERLOAD_S} s, then {pods} pods at 0.7 x; "
                           f"pod starts (s): {starts}")


def run(names: list[str] | None = None) -> Table:
    table = Table("backlog", "Where an overload's backlog waits (local platform), second by second",
                  ["case", "phase", "t_s", "offered_rps", "served_rps", "p95_ms", "error_rate", "generator_in_flight",
                   "proxy_accept_queue", "replica_accept_queue", "replica_connections", "caller_left"])
    for name in names or list(CASES):
        make, rate, pods = CASES[name]
        _case(table, name, make(), rate, pods)
    return table


if __name__ == "__main__":
    from bench.run_all import show

    show(run(sys.argv[1:] or None))
