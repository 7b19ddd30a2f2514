"""The closed loop's exact windows: what workers add to each report, and the master's `GET /nightcap/window`.

`GET /nightcap/window` serves exact request counts per worker over the time each
worker's reports actually covered since the last `/stats/reset`, because Locust's own `total_rps`
counts the first report after a reset (which holds pre-reset requests) against a shorter interval.
With them, per worker: successful and failed completions per `NIGHTCAP_BIN_S` (0.1 s) of wall clock, the
sub-windows the driver turns into a confidence interval of the goodput, and a histogram of the response
times of successful requests only (a window of fast 503s must not report the 503s' latency as the p95).
Each worker's CPU seconds over the window's interval (`cpu_s`, from the counter it reports) come with the
request counts, so a worker pod's CPU is known over the window without metrics-server.

The entry, `locustfile.py`, installs the hooks: `stamp_report`, `count_completion` and `send_goodput` on workers;
`on_report`, `on_reset` and `add_routes` on the master.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import locust.stats

# --- worker side: stamp each report with the time it was cut -------------------------------------


def stamp_report(client_id: str, data: dict[str, Any]) -> None:
    data["nightcap_t"] = time.time()
    data["nightcap_cpu_s"] = time.process_time()  # this worker's CPU seconds so far (one gevent process)


# --- worker side: goodput sub-windows and the latency of successful requests ----------------------

BIN_S = float(os.environ.get("NIGHTCAP_BIN_S", "0.1"))
_bins: dict[int, list[int]] = {}  # wall-clock bin index -> [successful, failed] completions
_ok_ms: dict[int, int] = {}  # response time of successful requests (Locust's buckets) -> count


def count_completion(response_time: float, exception: BaseException | None = None, **_: Any) -> None:
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


def send_goodput(client_id: str, data: dict[str, Any]) -> None:
    # lists, not int-keyed maps: the report travels as msgpack and is read back as JSON by the driver
    data["nightcap_bins"] = [[index, ok, failed] for index, (ok, failed) in _bins.items()]
    data["nightcap_ok_ms"] = [[ms, count] for ms, count in _ok_ms.items()]
    _bins.clear()
    _ok_ms.clear()


# --- master side: exact per-worker windows, and GET /nightcap/window ---------------------------

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


def on_report(client_id: str, data: dict[str, Any]) -> None:
    stamp = float(data.get("nightcap_t", time.time()))
    cpu = float(data.get("nightcap_cpu_s", 0.0))
    total = data.get("stats_total") or {}
    state = _workers.setdefault(client_id, {"since": stamp, "last": stamp, "requests": 0, "failures": 0,
                                            "cpu_since": cpu, "cpu_last": cpu})
    state["requests"] += int(total.get("num_requests", 0))
    state["failures"] += int(total.get("num_failures", 0))
    state["last"] = stamp
    state["cpu_last"] = cpu
    _add_goodput(client_id, data)


def on_reset() -> None:
    for state in _workers.values():
        # Requests in the next report were made after this worker's last report: count from there (its CPU too).
        state.update(since=state["last"], requests=0, failures=0, cpu_since=state["cpu_last"])
    _goodput.clear()


def add_routes(environment: Any, **_: Any) -> None:
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
                  "cpu_s": max(s["cpu_last"] - s["cpu_since"], 0.0), **_goodput_view(wid)}
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
