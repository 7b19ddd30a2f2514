"""The locustfile nightcap runs in its own Locust processes (never imported by the flow process).

Two user classes, chosen per swarm (the master runs with --class-picker; POST /swarm names the class):

- `ModelUser`, closed loop (no think time, or paced at --user-rps): each holds one request in flight, so
  `users` is the offered concurrency;
- `OpenLoopUser`, open loop: one per worker, it sends at planned arrival times (--open-rps per user,
  constant spacing or Poisson) without waiting for earlier responses, a greenlet per arrival, at most
  --open-max-in-flight per worker (beyond that an arrival is dropped and counted). Latency is measured
  from the planned send time, so a stalled server cannot hold back the arrivals that would have seen it
  (coordinated omission); arrivals sent more than --open-late-ms after plan are counted late. With
  NIGHTCAP_RECONNECT_S it re-opens each connection it uses about that often, however many are in flight;
  with --open-connection per-request every arrival opens its own (the autoscale stage: see `_send`).

Everything else comes from environment variables so the same file serves local processes and the
ConfigMap in a cluster:

NIGHTCAP_PATH, NIGHTCAP_METHOD, NIGHTCAP_PAYLOADS (JSON-lines file of bodies), NIGHTCAP_HEADERS (JSON of
non-secret headers), NIGHTCAP_API_KEY_ENV (the name of the variable holding the key; its value is sent as
`Authorization: Bearer` and never logged), NIGHTCAP_TIMEOUT_S, NIGHTCAP_RECONNECT_S (re-open the
connection this often, so new replicas behind a per-connection balancer receive traffic),
NIGHTCAP_REPORT_INTERVAL_S (how often workers report to the master), NIGHTCAP_DNS_TTL_S (how long a resolved
target host is reused by new connections, 30 s).

The master also serves `GET /nightcap/window`: exact request counts per worker over the time each
worker's reports actually covered since the last `/stats/reset`, because Locust's own `total_rps`
counts the first report after a reset (which holds pre-reset requests) against a shorter interval.
With them, per worker: successful and failed completions per `NIGHTCAP_BIN_S` (0.1 s) of wall clock, the
sub-windows the driver turns into a confidence interval of the goodput, and a histogram of the response
times of successful requests only (a window of fast 503s must not report the 503s' latency as the p95).
And `GET /nightcap/open`: the open-loop counters (planned, sent, late, dropped, completed, ok, latency
sum, in-flight peak) per worker over the same kind of interval.
Each worker's CPU seconds over the window's interval (`cpu_s`, from the counter it reports) come with the
request counts, so a worker pod's CPU is known over the window without metrics-server.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from typing import Any

import gevent
import gevent.pool
import locust.runners
import locust.stats
from locust import FastHttpUser, events, task

import geventhttpclient.connectionpool  # noqa: E402,I001 (after locust: its gevent monkey-patching comes first)

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

# A connection resolves its host when it opens. Per-request connections (the autoscale stage) would then ask
# DNS once per arrival: in a cluster, for `svc.ns.svc` with the default ndots:5, several queries each, on every
# request's clock. Keep each answer DNS_TTL_S, as a long-lived client's pool effectively does.
DNS_TTL_S = float(os.environ.get("NIGHTCAP_DNS_TTL_S", "30"))
_resolved: dict[tuple[Any, ...], tuple[float, Any]] = {}
_resolve_uncached = geventhttpclient.connectionpool.ConnectionPool._resolve


def _resolve_cached(pool: Any) -> Any:
    key = (pool._connection_host, pool._connection_port, pool.disable_ipv6)
    now = time.monotonic()
    hit = _resolved.get(key)
    if hit is None or now - hit[0] >= DNS_TTL_S:
        hit = _resolved[key] = (now, _resolve_uncached(pool))
    return hit[1]


geventhttpclient.connectionpool.ConnectionPool._resolve = _resolve_cached  # type: ignore[method-assign]


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    # Set per swarm through POST /swarm (user_rps=...): paces each user, so a phase offers a rate, not just
    # a concurrency. 0 = closed loop, no think time.
    parser.add_argument("--user-rps", type=float, default=0.0, include_in_web_ui=True,
                        help="requests per second per user (0: no pacing)")
    # Open loop (OpenLoopUser): the driver splits the total rate over the workers, one user each.
    parser.add_argument("--open-rps", type=float, default=0.0, include_in_web_ui=True,
                        help="open loop: planned arrivals per second per OpenLoopUser")
    parser.add_argument("--open-arrivals", type=str, default="constant", include_in_web_ui=True,
                        help="open loop: 'constant' spacing or 'poisson' arrivals")
    parser.add_argument("--open-max-in-flight", type=int, default=1000, include_in_web_ui=True,
                        help="open loop: arrivals in flight per worker before new ones are dropped")
    parser.add_argument("--open-late-ms", type=float, default=5.0, include_in_web_ui=True,
                        help="open loop: an arrival sent this much after its planned time counts as late")
    parser.add_argument("--open-connection", type=str, default="keep-alive", include_in_web_ui=True,
                        help="open loop: 'keep-alive' connections, or a new one 'per-request'")


# Every change of the user count starts a new generation of connections: Locust stops an arbitrary subset
# of users when the count goes down (its greenlets are a set), which left 16 users spread 8 + 8 over two
# replicas as 8 + 4 at 12 users, and the fuller replica answered 503s a balanced 6 + 6 never sees. After
# each spawn every user re-opens its connection once; those new connections are consecutive picks of a
# per-connection round robin, so they spread as evenly as the users allow.
_generation = 0


@events.spawning_complete.add_listener
def _new_connection_generation(user_count: int, **_: Any) -> None:
    global _generation
    _generation += 1


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
        self._generation = _generation

    @task
    def predict(self) -> None:
        headers = HEADERS
        if (RECONNECT_S and time.monotonic() - self._opened > RECONNECT_S) or self._generation != _generation:
            # Ask the server to close after this response; the next request opens a new connection,
            # which a per-connection balancer (kube-proxy, the local proxy) may send to another replica.
            headers = {**HEADERS, "Connection": "close"}
            self._opened = time.monotonic()
            self._generation = _generation
        body = next(self._bodies) if METHOD != "GET" else None
        self.client.request(METHOD, PATH, data=body, headers=headers, name=PATH)


# --- open loop ---------------------------------------------------------------------------------------

# Accounting by arrival. Every arrival belongs to the window (an epoch) its worker was in when the arrival was
# planned: the master starts a new one on each /stats/reset and POST /nightcap/open/mark and tells the workers.
# Its send, drop, success, failure and latency are counted in that epoch whenever they happen, so a window holds
# only its own arrivals (an overload's 10 s time-outs landing in the next phase once made it "155% failed").
# Workers report per-epoch deltas; the master keeps every epoch for later reads (`_open_read`).
_OPEN_ZERO = {"planned": 0, "sent": 0, "late": 0, "dropped": 0, "completed": 0, "ok": 0, "abandoned": 0,
              "latency_ms_sum": 0.0, "late_ms_max": 0.0, "in_flight_max": 0}
_MAXIMA = ("late_ms_max", "in_flight_max")
_epoch = 0  # the window arrivals planned now belong to (the master says which)
_switched = (0.0, 0)  # when (perf_counter) this worker entered `_epoch`, and the epoch before it
_tallies: dict[int, dict[str, Any]] = {}  # epoch -> counters since this worker's last report, with "ok_ms"
_spans: dict[int, list[Any]] = {0: [time.time(), None]}  # epoch -> [entered, left] on this worker's clock
_in_flight = 0  # this worker's open-loop requests in flight now (all its OpenLoopUsers)
_schedulers = 0  # OpenLoopUsers planning arrivals on this worker now


def _tally(epoch: int) -> dict[str, Any]:
    tally = _tallies.get(epoch)
    if tally is None:
        tally = _tallies[epoch] = {**_OPEN_ZERO, "ok_ms": {}}
    return tally


def _enter_epoch(environment: Any, msg: Any) -> None:
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


@events.report_to_master.add_listener
def _report_open(client_id: str, data: dict[str, Any]) -> None:
    if not (_tallies or _in_flight or _schedulers):
        return
    rows = []
    for epoch in sorted(set(_tallies) | set(_spans)):
        tally = _tallies.get(epoch) or {**_OPEN_ZERO, "ok_ms": {}}
        entered, left = _spans.get(epoch, (None, None))
        rows.append({**tally, "ok_ms": [[ms, n] for ms, n in tally["ok_ms"].items()], "epoch": epoch,
                     "entered": entered, "left": left})
    data["nightcap_open"] = {"epoch": _epoch, "in_flight": _in_flight, "epochs": rows}
    _tallies.clear()
    for epoch in [k for k, span in _spans.items() if span[1] is not None]:
        del _spans[epoch]  # its end is reported; later completions of its arrivals come as counts only


# --- worker side: stamp each report with the time it was cut -------------------------------------


@events.report_to_master.add_listener
def _stamp(client_id: str, data: dict[str, Any]) -> None:
    data["nightcap_t"] = time.time()
    data["nightcap_cpu_s"] = time.process_time()  # this worker's CPU seconds so far (one gevent process)


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
    cpu = float(data.get("nightcap_cpu_s", 0.0))
    total = data.get("stats_total") or {}
    state = _workers.setdefault(client_id, {"since": stamp, "last": stamp, "requests": 0, "failures": 0,
                                            "cpu_since": cpu, "cpu_last": cpu})
    state["requests"] += int(total.get("num_requests", 0))
    state["failures"] += int(total.get("num_failures", 0))
    state["last"] = stamp
    state["cpu_last"] = cpu
    _add_goodput(client_id, data)


@events.reset_stats.add_listener
def _on_reset() -> None:
    for state in _workers.values():
        # Requests in the next report were made after this worker's last report: count from there (its CPU too).
        state.update(since=state["last"], requests=0, failures=0, cpu_since=state["cpu_last"])
    _goodput.clear()


# --- master side: the open-loop ledger, by arrival -----------------------------------------------

KEEP_EPOCHS = 2000  # windows kept for later reads (the autoscale stage re-reads its samples when they settled)
_open_epoch = 0
_ledger: dict[int, dict[str, dict[str, Any]]] = {}  # epoch -> worker -> what the arrivals it planned then did
_open_now: dict[str, dict[str, float]] = {}  # worker -> its last report's stamp, epoch and requests in flight
_master: list[Any] = []  # the master's environment (to tell workers about a new epoch)


def _new_epoch() -> int:
    """Close the current window and start the next on every worker; returns the closed one."""
    global _open_epoch
    closed, _open_epoch = _open_epoch, _open_epoch + 1
    for old in [k for k in _ledger if k <= _open_epoch - KEEP_EPOCHS]:
        del _ledger[old]
    runner = _master[0].runner if _master else None
    if isinstance(runner, locust.runners.MasterRunner):
        runner.send_message("nightcap_epoch", {"epoch": _open_epoch})
    return closed


@events.reset_stats.add_listener
def _on_open_reset() -> None:
    _new_epoch()


@events.worker_report.add_listener
def _on_open_report(client_id: str, data: dict[str, Any]) -> None:
    stamp = float(data.get("nightcap_t", time.time()))
    now = _open_now.setdefault(client_id, {"epoch": 0, "in_flight": 0, "last": stamp})
    now["last"] = stamp
    report = data.get("nightcap_open")
    if not report:
        return
    now.update(epoch=report["epoch"], in_flight=report["in_flight"])
    if report["epoch"] != _open_epoch and _master:  # it missed the message (it joined later): say it again
        _master[0].runner.send_message("nightcap_epoch", {"epoch": _open_epoch}, client_id)
    for row in report["epochs"]:
        if row["epoch"] <= _open_epoch - KEEP_EPOCHS:
            continue
        state = _ledger.setdefault(row["epoch"], {}).setdefault(
            client_id, {**_OPEN_ZERO, "ok_ms": {}, "entered": None, "left": None})
        for key in _OPEN_ZERO:
            state[key] = max(state[key], row[key]) if key in _MAXIMA else state[key] + row[key]
        for ms, n in row["ok_ms"]:
            state["ok_ms"][int(ms)] = state["ok_ms"].get(int(ms), 0) + int(n)
        state["entered"] = state["entered"] if state["entered"] is not None else row["entered"]
        state["left"] = row["left"] if row["left"] is not None else state["left"]


def _open_read(first: int, last: int, live: Any = None) -> dict[str, Any]:
    """The arrivals planned in epochs `first`..`last`, per worker, whenever they came back; `covered_s` is the
    time the worker spent in those epochs. Settled: every worker left them and nothing of theirs is in flight."""
    workers: dict[str, dict[str, Any]] = {}
    for epoch in range(first, last + 1):
        for wid, s in _ledger.get(epoch, {}).items():
            if live is not None and wid not in live:
                continue
            w = workers.setdefault(wid, {**_OPEN_ZERO, "ok_ms": {}, "covered_s": 0.0, "settled": True})
            for key in _OPEN_ZERO:
                w[key] = max(w[key], s[key]) if key in _MAXIMA else w[key] + s[key]
            for ms, n in s["ok_ms"].items():
                w["ok_ms"][ms] = w["ok_ms"].get(ms, 0) + n
            end = s["left"] if s["left"] is not None else _open_now[wid]["last"]
            w["covered_s"] += max(end - s["entered"], 0.0) if s["entered"] is not None else 0.0
            w["settled"] = w["settled"] and s["left"] is not None and s["sent"] == s["completed"] + s["abandoned"]
    for wid, w in workers.items():
        w.update(ok_ms=sorted([ms, n] for ms, n in w["ok_ms"].items()), in_flight=_open_now[wid]["in_flight"],
                 unsettled=w["sent"] - w["completed"] - w["abandoned"])
    settled = last < _open_epoch and all(w["settled"] for w in workers.values())
    return {"now": time.time(), "epoch": _open_epoch, "first": first, "last": last, "settled": settled,
            "workers": workers}


@events.init.add_listener
def _add_open_routes(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, locust.runners.WorkerRunner):
        environment.runner.register_message("nightcap_epoch", _enter_epoch)
    if environment.web_ui is None:
        return
    _master[:] = [environment]

    @environment.web_ui.app.route("/nightcap/open")
    def open_window() -> Any:
        """?first=&last= (epochs; default the current one); live=1 leaves out workers that left the master."""
        from flask import jsonify, request

        first = request.args.get("first", default=_open_epoch, type=int)
        last = request.args.get("last", default=first if "first" in request.args else _open_epoch, type=int)
        runner = environment.runner
        live = runner.clients if request.args.get("live") and hasattr(runner, "clients") else None
        return jsonify(_open_read(first, last, live))

    @environment.web_ui.app.route("/nightcap/open/mark", methods=["POST"])
    def open_mark() -> Any:
        from flask import jsonify

        closed = _new_epoch()
        return jsonify({"closed": closed, "epoch": _open_epoch})


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
