"""The Locust master's HTTP API, as the flow drives it: swarm, reset, read one window, stop.

Locust is never imported here (it monkey-patches with gevent): the master runs as a process or a pod and
this module talks to its web API. `summarize` turns the master's `GET /nightcap/window` (served by our
locustfile) into one `Window`. Used by both generators (`local.py`, `kubernetes.py`) and the step runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class LoadError(RuntimeError):
    """The load generator could not be started or stopped responding."""


@dataclass
class Window:
    """What the master saw over one measured window, summed over workers."""

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

    def swarm(self, users: int, spawn_rate: float, host: str, user_rps: float = 0.0) -> None:
        """Hold `users` users; with `user_rps` each is paced to that rate (offered load), else closed loop."""
        self._swarm(CLOSED_USER, {"user_count": users, "spawn_rate": spawn_rate, "host": host, "user_rps": user_rps})

    def swarm_rate(self, rate_rps: float, workers: int, host: str, arrivals: str = "constant",
                   max_in_flight: int = 1000) -> None:
        """Offer `rate_rps` in total, open loop: one OpenLoopUser per worker, each at rate / workers.

        Locust hands out users round-robin, so `workers` users put exactly one scheduler on each worker.
        """
        if rate_rps <= 0 or workers < 1:
            raise LoadError(f"an open-loop rate needs rate_rps > 0 and workers >= 1 (got {rate_rps}, {workers})")
        self._swarm(OPEN_USER, {"user_count": workers, "spawn_rate": max(workers, 1) * 100, "host": host,
                                "open_rps": rate_rps / workers, "open_arrivals": arrivals,
                                "open_max_in_flight": max_in_flight})

    def _swarm(self, user_class: str, form: dict[str, Any]) -> None:
        if self._user_class not in (None, user_class):
            # The master keeps the classes it dispatched while running: switching needs a stop first.
            self.stop()
        r = self.http.post("/swarm", data={**form, "user_classes": user_class})
        r.raise_for_status()
        body = r.json()
        if not body.get("success", False):
            raise LoadError(f"Locust refused to swarm: {body.get('message')}")
        self._user_class = user_class

    def reset(self) -> None:
        self.http.post("/stats/reset").raise_for_status()

    def stop(self) -> None:
        self.http.post("/stop").raise_for_status()
        self._user_class = None

    def window(self, timeout_s: float | None = None) -> dict[str, Any]:
        r = self.http.get("/nightcap/window", **({"timeout": timeout_s} if timeout_s else {}))
        r.raise_for_status()
        return r.json()

    def open_window(self) -> dict[str, Any]:
        """The open-loop counters per worker since the last reset (`GET /nightcap/open`)."""
        r = self.http.get("/nightcap/open")
        r.raise_for_status()
        return r.json()

    def close(self) -> None:
        self.http.close()


def summarize(raw: dict[str, Any]) -> Window:
    """Exact rps: each worker's requests over the time its reports covered, summed."""
    workers = raw.get("workers", {})
    rps = sum(w["requests"] / w["covered_s"] for w in workers.values() if w["covered_s"] > 0)
    total = raw.get("total", {})

    def pct(key: str) -> float | None:
        value = total.get(key)
        return float(value) if value not in (None, 0) or total.get("num_requests") else None

    return Window(
        requests=int(sum(w["requests"] for w in workers.values())),
        failures=int(sum(w["failures"] for w in workers.values())),
        rps=rps,
        p50_ms=pct("response_time_percentile_0.5"),
        p90_ms=pct("response_time_percentile_0.9"),
        p95_ms=pct("response_time_percentile_0.95"),
        p99_ms=pct("response_time_percentile_0.99"),
        users=int(raw.get("user_count", 0)),
        workers=len(workers),
        errors=raw.get("errors", []),
    )
