"""The Locust master's HTTP API, as the flow drives it: swarm, reset, read one window, stop.

Locust is never imported here (it monkey-patches with gevent): the master runs as a process or a pod and
this module talks to its web API. `summarize` turns the master's `GET /nightcap/window` (served by our
locustfile) into one `Window`. Used by both generators (`local.py`, `kubernetes.py`) and the step runner.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable

import httpx

from nightcap.analysis.confidence import batch_means
from nightcap.analysis.latency import merge, percentile


# How often a worker reports to the master: our locustfile sets Locust's WORKER_REPORT_INTERVAL from the same
# variable (the generator's processes and pods inherit or are given none: both sides read the default).
REPORT_INTERVAL_S = float(os.environ.get("NIGHTCAP_REPORT_INTERVAL_S", "0.5"))


class LoadError(RuntimeError):
    """The load generator could not be started or stopped responding."""


@dataclass
class Window:
    """What the master saw over one measured window, summed over workers.

    `rps` counts every completed request; `goodput_rps` the successful ones, with the 95% half-width of
    its batch means over `batches` sub-windows. Percentiles are of successful requests when the workers
    sent their latency histogram (else Locust's, which mix in the failures' response times).
    """

    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    users: int
    workers: int
    errors: list[dict[str, Any]]
    goodput_rps: float = 0.0
    goodput_halfwidth: float | None = None
    batches: int = 0
    ok_ms: dict[int, int] | None = None  # latency histogram of successful requests (ms -> count), when sent

    @property
    def error_rate(self) -> float:
        """Failed share of the requests (Locust counts failures among them); all failed when only failures came."""
        return self.failures / self.requests if self.requests else (1.0 if self.failures else 0.0)


CLOSED_USER, OPEN_USER = "ModelUser", "OpenLoopUser"  # the locustfile's user classes


class MasterClient:
    """The Locust master's web API: swarm, reset, read, stop (all POST except reads).

    The master runs with --class-picker, so every swarm names its user class: `ModelUser` (closed loop,
    `swarm`) or `OpenLoopUser` (open loop at a rate, `swarm_rate`).
    """

    def __init__(self, base_url: str, timeout_s: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s)
        self._user_class: str | None = None
        self._host: str | None = None

    def swarm(self, users: int, spawn_rate: float, host: str, user_rps: float = 0.0) -> None:
        """Hold `users` users; with `user_rps` each is paced to that rate (offered load), else closed loop."""
        self._swarm(CLOSED_USER, {"user_count": users, "spawn_rate": spawn_rate, "host": host, "user_rps": user_rps})

    def swarm_rate(self, rate_rps: float, workers: int, host: str, arrivals: str = "constant",
                   max_in_flight: int = 1000, late_ms: float = 5.0, connection: str = "keep-alive") -> None:
        """Offer `rate_rps` in total, open loop: one OpenLoopUser per worker, each at rate / workers.

        Locust hands out users round-robin, so `workers` users put exactly one scheduler on each worker.
        `connection`: "keep-alive", or "per-request" (each arrival on a new connection, so a per-connection
        balancer spreads arrivals over the pods whatever each one holds).
        """
        if rate_rps < 0 or workers < 1:  # 0: plan nothing, while the arrivals in flight still come back
            raise LoadError(f"an open-loop rate needs rate_rps >= 0 and workers >= 1 (got {rate_rps}, {workers})")
        self._swarm(OPEN_USER, {"user_count": workers, "spawn_rate": max(workers, 1) * 100, "host": host,
                                "open_rps": rate_rps / workers, "open_arrivals": arrivals,
                                "open_max_in_flight": max_in_flight, "open_late_ms": late_ms,
                                "open_connection": connection})

    def _swarm(self, user_class: str, form: dict[str, Any]) -> None:
        if self._user_class not in (None, user_class) or self._host not in (None, form["host"]):
            # The master keeps the classes it dispatched while running, and running users keep the host they
            # were created with: switching either needs a stop first.
            self.stop()
        r = self.http.post("/swarm", data={**form, "user_classes": user_class})
        r.raise_for_status()
        body = r.json()
        if not body.get("success", False):
            raise LoadError(f"Locust refused to swarm: {body.get('message')}")
        self._user_class, self._host = user_class, form["host"]

    def reset(self) -> None:
        self.http.post("/stats/reset").raise_for_status()

    def stop(self) -> None:
        self.http.post("/stop").raise_for_status()
        self._user_class = self._host = None

    def idle(self) -> None:
        """No users left running. A closed-loop swarm goes to 0 users, which the master dispatches at once; `/stop`
        (kept for open loop and for a swarm this client did not start) answers only once its poll of the workers'
        user count, every whole second in Locust 2.47, reads 0: 1.05 s for each of make run's 17 switches between
        searches, pairs and stages."""
        if self._user_class != CLOSED_USER or self._host is None:
            self.stop()
            return
        self.swarm(0, 1000.0, self._host)

    def window(self, timeout_s: float | None = None) -> dict[str, Any]:
        r = self.http.get("/nightcap/window", **({"timeout": timeout_s} if timeout_s else {}))
        r.raise_for_status()
        return r.json()

    def open_window(self, first: int | None = None, last: int | None = None, settle_s: float = 0.0) -> dict[str, Any]:
        """The open-loop counters by arrival (`GET /nightcap/open`): of the window since the last reset, which this
        closes (`POST /nightcap/open/mark`), or of the windows `first`..`last` (every answer names its own).
        `settle_s`: wait up to that long for the window's arrivals still in flight to come back or time out."""
        params: dict[str, Any] = {"first": first, "last": first if last is None else last}
        if first is None:
            mark = self.http.post("/nightcap/open/mark")
            mark.raise_for_status()
            params = {"first": mark.json()["closed"], "last": mark.json()["closed"], "live": 1}
        deadline = time.monotonic() + settle_s
        while True:
            r = self.http.get("/nightcap/open", params=params)
            r.raise_for_status()
            body = r.json()
            if body.get("settled", True) or time.monotonic() >= deadline:
                return body
            time.sleep(0.1)

    def close(self) -> None:
        self.http.close()


MIN_BATCH_S = 0.2  # two CPU-quota periods (100 ms): shorter sub-windows mostly measure the throttling


def count_halfwidth(workers: Iterable[dict[str, Any]], users: int) -> float:
    """The 95% half-width (rps) that counting completions in a window leaves, whatever the sub-windows say.

    Each closed-loop user is a stream of requests; a window of T seconds catches T × its rate of them ± less
    than one, by where its cycle starts (an error with variance up to 1/6 for a uniform phase). On a target
    that serves them like clockwork (slots of a fixed service time), every window of a level catches the same
    phases and the sub-windows agree to the request: 3 windows of 16 users measured 399.1 ± 0.7 rps of 400
    (one request per window as the floor). So: 1.96 × sqrt(users / 6) requests per window (users spread evenly
    over the workers), at least one request per worker.
    """
    workers = [w for w in workers if w["covered_s"] > 0]
    if not workers:
        return 0.0
    per_worker = users / len(workers)
    phase = 1.96 * math.sqrt(sum(per_worker / 6.0 / w["covered_s"] ** 2 for w in workers))
    return max(phase, sum(1.0 / w["covered_s"] for w in workers))


def summarize(raw: dict[str, Any]) -> Window:
    """Exact rates: each worker's requests (and successful ones) over the time its reports covered, summed."""
    workers = raw.get("workers", {})
    rps = sum(w["requests"] / w["covered_s"] for w in workers.values() if w["covered_s"] > 0)
    goodput = sum((w["requests"] - w["failures"]) / w["covered_s"] for w in workers.values() if w["covered_s"] > 0)
    total = raw.get("total", {})
    ok_ms = merge({int(ms): int(n) for ms, n in w["ok_ms"]} if "ok_ms" in w else None for w in workers.values())

    def pct(key: str, q: float) -> float | None:
        if ok_ms is not None:
            return percentile(ok_ms, q)
        value = total.get(key)
        return float(value) if value not in (None, 0) or total.get("num_requests") else None

    series, bin_s = goodput_series(workers.values())
    estimate, _ = batch_means(series, min_batch=max(1, round(MIN_BATCH_S / bin_s))) if bin_s else (None, 0)
    half = estimate.half_width if estimate is not None else None
    if half is not None:  # never finer than a count can tell
        half = max(half, count_halfwidth(workers.values(), int(raw.get("user_count", 0))))
    return Window(
        requests=int(sum(w["requests"] for w in workers.values())),
        failures=int(sum(w["failures"] for w in workers.values())),
        rps=rps,
        p50_ms=pct("response_time_percentile_0.5", 0.5),
        p90_ms=pct("response_time_percentile_0.9", 0.9),
        p95_ms=pct("response_time_percentile_0.95", 0.95),
        p99_ms=pct("response_time_percentile_0.99", 0.99),
        users=int(raw.get("user_count", 0)),
        workers=len(workers),
        errors=raw.get("errors", []),
        goodput_rps=goodput,
        goodput_halfwidth=half,
        batches=estimate.n if estimate is not None else 0,
        ok_ms=ok_ms,
    )


def goodput_series(workers: Any) -> tuple[list[float], float]:
    """Successful completions per second in each wall-clock bin every worker's reports fully covered.

    A bin that straddles a worker's first or last report holds only part of its requests, so the series
    keeps the bins inside [latest start, earliest end] of all workers; summing workers bin by bin keeps
    their competition for the same server in the variance. Empty when the workers sent no bins.
    """
    workers = [w for w in workers if w.get("bin_s")]
    if not workers:
        return [], 0.0
    bin_s = float(workers[0]["bin_s"])
    start = max(math.ceil(w["since"] / bin_s - 1e-9) for w in workers)
    end = min(math.floor(w["last"] / bin_s + 1e-9) for w in workers)  # bins [start, end) are inside
    if end <= start:
        return [], bin_s
    ok = [0] * (end - start)
    for w in workers:
        for index, good, _failed in w.get("bins", []):
            if start <= index < end:
                ok[index - start] += good
    return [n / bin_s for n in ok], bin_s
