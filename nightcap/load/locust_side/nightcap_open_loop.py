"""The open loop on a worker: `OpenLoopUser` (the entry's docstring says what it does), and the count of its
arrivals by the window (epoch) that planned them, reported to the master (`nightcap_open_ledger.py`).

The entry, `locustfile.py`, imports `OpenLoopUser` (Locust finds user classes among the locustfile's names) and
installs the hooks: `report_open` on every report to the master, `enter_epoch` for the master's `nightcap_epoch`
message (registered by `nightcap_open_ledger.add_open_routes`).
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import gevent
import gevent.pool
import locust.stats
from locust import FastHttpUser, task

from nightcap_request import HEADERS, METHOD, PATH, PAYLOADS, RECONNECT_S, TIMEOUT_S

# Accounting by arrival. Every arrival belongs to the window (an epoch) its worker was in when the arrival was
# planned: the master starts a new one on each /stats/reset and POST /nightcap/open/mark and tells the workers.
# Its send, drop, success, failure and latency are counted in that epoch whenever they happen, so a window holds
# only its own arrivals (an overload's 10 s time-outs landing in the next phase once made it "155% failed").
# Workers report per-epoch deltas; the master keeps every epoch for later reads (`nightcap_open_ledger.py`).
OPEN_ZERO = {"planned": 0, "sent": 0, "late": 0, "dropped": 0, "completed": 0, "ok": 0, "abandoned": 0,
             "latency_ms_sum": 0.0, "late_ms_max": 0.0, "in_flight_max": 0}
MAXIMA = ("late_ms_max", "in_flight_max")
_epoch = 0  # the window arrivals planned now belong to (the master says which)
_switched = (0.0, 0)  # when (perf_counter) this worker entered `_epoch`, and the epoch before it
_tallies: dict[int, dict[str, Any]] = {}  # epoch -> counters since this worker's last report, with "ok_ms"
_spans: dict[int, list[Any]] = {0: [time.time(), None]}  # epoch -> [entered, left] on this worker's clock
_in_flight = 0  # this worker's open-loop requests in flight now (all its OpenLoopUsers)
_schedulers = 0  # OpenLoopUsers planning arrivals on this worker now


def _tally(epoch: int) -> dict[str, Any]:
    tally = _tallies.get(epoch)
    if tally is None:
        tally = _tallies[epoch] = {**OPEN_ZERO, "ok_ms": {}}
    return tally


def enter_epoch(environment: Any, msg: Any) -> None:
    """The master started window `epoch`: arrivals planned from now on belong to it."""
    global _epoch, _switched
    epoch, now = int(msg.data["epoch"]), time.time()
    if epoch == _epoch:
        return
    _spans.setdefault(_epoch, [now, None])[1] = now
    _spans[epoch] = [now, None]
    _epoch, _switched = epoch, (time.perf_counter(), _epoch)
    for old in sorted(_spans)[:-64]:  # an idle worker reports nothing: keep its spans bounded
        del _spans[old]


def _open_options(environment: Any) -> tuple[float, str, int]:
    options = environment.parsed_options
    if options is None:
        return 0.0, "constant", 1000
    return (float(getattr(options, "open_rps", 0.0) or 0.0), str(getattr(options, "open_arrivals", "constant")),
            int(getattr(options, "open_max_in_flight", 1000) or 1000))


class OpenLoopUser(FastHttpUser):
    """An arrival scheduler: requests leave at planned times whatever the earlier ones are doing.

    Its one task never returns: it sleeps until the next planned arrival and hands it to a new greenlet.
    Times come from a fixed anchor (anchor + i / rate), so a late wake-up does not push later arrivals
    back: overdue ones are sent at once, counted late, and measured from their planned time, as wrk2
    does. When this worker already holds --open-max-in-flight requests the arrival is dropped and
    counted (k6's dropped_iterations): a bounded generator cannot hide an overloaded target. A rate of 0
    plans nothing while the arrivals in flight still come back (and are counted in their own windows).
    """

    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S

    def __init__(self, environment: Any) -> None:
        # One connection per request in flight: the pool must hold as many as the in-flight bound.
        self.concurrency = max(_open_options(environment)[2], 1)
        super().__init__(environment)
        self._bodies = itertools.cycle(random.sample(PAYLOADS, len(PAYLOADS)))
        self._flights = gevent.pool.Group()
        self._opened = time.monotonic()

    def on_stop(self) -> None:
        self._flights.kill(block=False)

    @task
    def arrivals(self) -> None:
        global _schedulers
        _schedulers += 1
        try:
            self._schedule()
        finally:
            _schedulers -= 1
            self._flights.kill(block=False)

    def _schedule(self) -> None:
        global _in_flight
        settings: tuple[float, str] | None = None
        planned = anchor = time.perf_counter()
        i = 0
        while True:
            rate, arrivals, bound = _open_options(self.environment)
            if rate <= 0:
                settings = None
                gevent.sleep(0.05)
                continue
            if (rate, arrivals) != settings:
                # A new rate (a new phase) starts a new schedule now, at a random phase within one gap so
                # the workers' arrivals interleave instead of leaving in step.
                settings = (rate, arrivals)
                anchor, i = time.perf_counter() + random.uniform(0.0, 1.0 / rate), 0
                planned = anchor
            elif arrivals == "poisson":
                planned += random.expovariate(rate)
            else:
                i += 1
                planned = anchor + i / rate
            delay = planned - time.perf_counter()
            gevent.sleep(max(delay, 0.0))  # 0 still yields, so overdue arrivals' greenlets get to send
            # by its planned time: an overdue arrival planned before the window changed (the worker was busy, e.g.
            # with the swarm message that came just before) belongs to the window before
            epoch = _epoch if planned >= _switched[0] else _switched[1]
            tally = _tally(epoch)
            tally["planned"] += 1
            if _in_flight >= bound:
                tally["dropped"] += 1
                continue
            _in_flight += 1
            tally["in_flight_max"] = max(tally["in_flight_max"], _in_flight)
            self._flights.spawn(self._send, planned, epoch)

    def _send(self, planned: float, epoch: int) -> None:
        global _in_flight
        try:
            late_s = time.perf_counter() - planned
            _tally(epoch)["sent"] += 1
            options = self.environment.parsed_options
            if late_s > float(getattr(options, "open_late_ms", 5.0) or 5.0) / 1000.0:
                tally = _tally(epoch)
                tally["late"] += 1
                tally["late_ms_max"] = max(tally["late_ms_max"], 1000.0 * late_s)
            headers = HEADERS
            # A kept-alive pool sends each arrival on a returned connection, so a pod receives about what it
            # completes: a backlogged pod keeps its backlog however many pods join (after an overload, 3 pods
            # for 90 rps kept p50 at 1.3 s for 12 s). Per-request connections are balanced like independent
            # callers, whatever each pod holds (the same run: p50 back to 43 ms within 3 s).
            # Kept alive, the pool holds a connection per request in flight and reuses the most recently returned
            # (LIFO): closing one every RECONNECT_S / in-flight re-opens each of them about every RECONNECT_S.
            per_request = str(getattr(options, "open_connection", "keep-alive")) == "per-request"
            if per_request or (RECONNECT_S and time.monotonic() - self._opened > RECONNECT_S / max(_in_flight, 1)):
                headers = {**HEADERS, "Connection": "close"}
                self._opened = time.monotonic()
            body = next(self._bodies) if METHOD != "GET" else None
            with self.client.request(METHOD, PATH, data=body, headers=headers, name=PATH,
                                     catch_response=True) as response:
                # Latency from the planned send time, not the actual one: what a caller arriving then waits.
                latency_ms = 1000.0 * (time.perf_counter() - planned)
                response.request_meta["response_time"] = latency_ms
            ok = response.request_meta.get("exception") is None  # Locust's own verdict, set on leaving the block
            tally = _tally(epoch)
            tally["completed"] += 1
            tally["latency_ms_sum"] += latency_ms
            if ok:
                tally["ok"] += 1
                key = locust.stats.bucket_response_time(latency_ms)
                tally["ok_ms"][key] = tally["ok_ms"].get(key, 0) + 1
        except gevent.GreenletExit:
            _tally(epoch)["abandoned"] += 1  # the swarm stopped before it came back: not answered, not failed
            raise
        finally:
            _in_flight -= 1


def report_open(client_id: str, data: dict[str, Any]) -> None:
    if not (_tallies or _in_flight or _schedulers):
        return
    rows = []
    for epoch in sorted(set(_tallies) | set(_spans)):
        tally = _tallies.get(epoch) or {**OPEN_ZERO, "ok_ms": {}}
        entered, left = _spans.get(epoch, (None, None))
        rows.append({**tally, "ok_ms": [[ms, n] for ms, n in tally["ok_ms"].items()], "epoch": epoch,
                     "entered": entered, "left": left})
    data["nightcap_open"] = {"epoch": _epoch, "in_flight": _in_flight, "epochs": rows}
    _tallies.clear()
    for epoch in [k for k, span in _spans.items() if span[1] is not None]:
        del _spans[epoch]  # its end is reported; later completions of its arrivals come as counts only
