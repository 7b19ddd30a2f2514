"""The locustfile nightcap runs in its own Locust processes (never imported by the flow process).

Users are closed-loop (no think time): each holds one request in flight, so `users` is the offered
concurrency. Everything comes from environment variables so the same file serves local processes and
the ConfigMap in a cluster:

NIGHTCAP_PATH, NIGHTCAP_METHOD, NIGHTCAP_PAYLOADS (JSON-lines file of bodies), NIGHTCAP_HEADERS (JSON of
non-secret headers), NIGHTCAP_API_KEY_ENV (the name of the variable holding the key; its value is sent as
`Authorization: Bearer` and never logged), NIGHTCAP_TIMEOUT_S, NIGHTCAP_RECONNECT_S (re-open the
connection this often, so new replicas behind a per-connection balancer receive traffic),
NIGHTCAP_REPORT_INTERVAL_S (how often workers report to the master).

The master also serves `GET /nightcap/window`: exact request counts per worker over the time each
worker's reports actually covered since the last `/stats/reset`, because Locust's own `total_rps`
counts the first report after a reset (which holds pre-reset requests) against a shorter interval.
With them, per worker: successful and failed completions per `NIGHTCAP_BIN_S` (0.1 s) of wall clock, the
sub-windows the driver turns into a confidence interval of the goodput, and a histogram of the response
times of successful requests only (a window of fast 503s must not report the 503s' latency as the p95).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from typing import Any

import locust.runners
import locust.stats
from locust import FastHttpUser, events, task

locust.stats.PERCENTILES_TO_STATISTICS = [0.5, 0.9, 0.95, 0.99]
locust.runners.WORKER_REPORT_INTERVAL = float(os.environ.get("NIGHTCAP_REPORT_INTERVAL_S", "0.5"))

PATH = os.environ.get("NIGHTCAP_PATH", "/invocations")
METHOD = os.environ.get("NIGHTCAP_METHOD", "POST").upper()
TIMEOUT_S = float(os.environ.get("NIGHTCAP_TIMEOUT_S", "10"))
RECONNECT_S = float(os.environ.get("NIGHTCAP_RECONNECT_S", "0"))


def _payloads() -> list[bytes]:
    path = os.environ.get("NIGHTCAP_PAYLOADS")
    if not path:
        return [b"{}"]
    with open(path, "rb") as handle:
        bodies = [line.rstrip(b"\n") for line in handle if line.strip()]
    return bodies or [b"{}"]


def _headers() -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    headers.update(json.loads(os.environ.get("NIGHTCAP_HEADERS", "{}")))
    key_env = os.environ.get("NIGHTCAP_API_KEY_ENV")
    if key_env and os.environ.get(key_env):
        headers["Authorization"] = f"Bearer {os.environ[key_env]}"
    return headers


PAYLOADS = _payloads()
HEADERS = _headers()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    # Set per swarm through POST /swarm (user_rps=...): paces each user, so a phase offers a rate, not just
    # a concurrency. 0 = closed loop, no think time.
    parser.add_argument("--user-rps", type=float, default=0.0, include_in_web_ui=True,
                        help="requests per second per user (0: no pacing)")


class ModelUser(FastHttpUser):
    """One client posting rows of the payload set: closed loop, or paced at --user-rps."""

    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S

    def wait_time(self) -> float:
        options = self.environment.parsed_options
        rate = float(getattr(options, "user_rps", 0.0) or 0.0) if options is not None else 0.0
        if rate <= 0:
            return 0.0
        now = time.monotonic()
        if rate != self._rate:
            # A random phase: the master hands a worker all its users at once, so paced users started in
            # step and sent in bursts (32 users x 2.5 rps hit 8 slots x 20 ms as 32 requests at once every
            # 400 ms: p50 50 ms, not 20). Spread over one period, they offer the rate evenly.
            self._rate = rate
            self._next = now + random.uniform(0.0, 1.0 / rate)
        else:  # one request per period; a request that overran starts the next at once (constant_pacing)
            self._next = max(self._next + 1.0 / rate, now)
        return self._next - now

    def on_start(self) -> None:
        self._bodies = itertools.cycle(random.sample(PAYLOADS, len(PAYLOADS)))
        self._opened = time.monotonic()
        self._rate = 0.0
        self._next = 0.0

    @task
    def predict(self) -> None:
        headers = HEADERS
        if RECONNECT_S and time.monotonic() - self._opened > RECONNECT_S:
            # Ask the server to close after this response; the next request opens a new connection,
            # which a per-connection balancer (kube-proxy, the local proxy) may send to another replica.
            headers = {**HEADERS, "Connection": "close"}
            self._opened = time.monotonic()
        body = next(self._bodies) if METHOD != "GET" else None
        self.client.request(METHOD, PATH, data=body, headers=headers, name=PATH)


# --- worker side: stamp each report with the time it was cut -------------------------------------


@events.report_to_master.add_listener
def _stamp(client_id: str, data: dict[str, Any]) -> None:
    data["nightcap_t"] = time.time()


# --- worker side: goodput sub-windows and the latency of successful requests ----------------------

BIN_S = float(os.environ.get("NIGHTCAP_BIN_S", "0.1"))
_bins: dict[int, list[int]] = {}  # wall-clock bin index -> [successful, failed] completions
_ok_ms: dict[int, int] = {}  # response time of successful requests (Locust's buckets) -> count


@events.request.add_listener
def _count_completion(response_time: float, exception: BaseException | None = None, **_: Any) -> None:
    index = int(time.time() / BIN_S)
    cell = _bins.get(index)
    if cell is None:
        cell = _bins[index] = [0, 0]
    if exception is None:
        cell[0] += 1
        key = locust.stats.bucket_response_time(response_time or 0)
        _ok_ms[key] = _ok_ms.get(key, 0) + 1
    else:
        cell[1] += 1


@events.report_to_master.add_listener
def _send_goodput(client_id: str, data: dict[str, Any]) -> None:
    # lists, not int-keyed maps: the report travels as msgpack and is read back as JSON by the driver
    data["nightcap_bins"] = [[index, ok, failed] for index, (ok, failed) in _bins.items()]
    data["nightcap_ok_ms"] = [[ms, count] for ms, count in _ok_ms.items()]
    _bins.clear()
    _ok_ms.clear()


# --- master side: exact per-worker windows ------------------------------------------------------

_workers: dict[str, dict[str, float]] = {}
_goodput: dict[str, dict[str, dict[int, Any]]] = {}  # per worker since the reset: bins and success latencies


def _add_goodput(client_id: str, data: dict[str, Any]) -> None:
    state = _goodput.setdefault(client_id, {"bins": {}, "ok_ms": {}})
    for index, ok, failed in data.get("nightcap_bins") or []:
        cell = state["bins"].setdefault(int(index), [0, 0])
        cell[0] += int(ok)
        cell[1] += int(failed)
    for ms, count in data.get("nightcap_ok_ms") or []:
        state["ok_ms"][int(ms)] = state["ok_ms"].get(int(ms), 0) + int(count)


def _goodput_view(client_id: str) -> dict[str, Any]:
    state = _goodput.get(client_id, {"bins": {}, "ok_ms": {}})
    return {"bin_s": BIN_S, "bins": [[i, *cell] for i, cell in sorted(state["bins"].items())],
            "ok_ms": sorted([ms, n] for ms, n in state["ok_ms"].items())}


@events.worker_report.add_listener
def _on_report(client_id: str, data: dict[str, Any]) -> None:
    stamp = float(data.get("nightcap_t", time.time()))
    total = data.get("stats_total") or {}
    state = _workers.setdefault(client_id, {"since": stamp, "last": stamp, "requests": 0, "failures": 0})
    state["requests"] += int(total.get("num_requests", 0))
    state["failures"] += int(total.get("num_failures", 0))
    state["last"] = stamp
    _add_goodput(client_id, data)


@events.reset_stats.add_listener
def _on_reset() -> None:
    for state in _workers.values():
        # Requests in the next report were made after this worker's last report: count from there.
        state.update(since=state["last"], requests=0, failures=0)
    _goodput.clear()


@events.init.add_listener
def _add_routes(environment: Any, **_: Any) -> None:
    if environment.web_ui is None:
        return

    @environment.web_ui.app.route("/nightcap/window")
    def window() -> Any:
        from flask import jsonify

        runner = environment.runner
        total = runner.stats.total if runner is not None else None
        cpu = {}
        if runner is not None and hasattr(runner, "clients"):
            cpu = {w.id: w.cpu_usage for w in runner.clients.values()}
        workers = {
            wid: {**s, "covered_s": max(s["last"] - s["since"], 0.0), "cpu_usage": cpu.get(wid),
                  **_goodput_view(wid)}
            for wid, s in _workers.items()
            if runner is None or not hasattr(runner, "clients") or wid in runner.clients
        }
        return jsonify(
            {
                "now": time.time(),
                "state": getattr(runner, "state", "missing"),
                "user_count": getattr(runner, "user_count", 0),
                "worker_count": getattr(runner, "worker_count", 0),
                "active_workers": sorted(w.id for w in (runner.clients.ready + runner.clients.spawning
                                                        + runner.clients.running))
                if runner is not None and hasattr(runner, "clients") else [],
                "workers": workers,
                "total": total.to_dict() if total is not None else {},
                "errors": [e.serialize() for e in itertools.islice(runner.errors.values(), 20)] if runner else [],
            }
        )
