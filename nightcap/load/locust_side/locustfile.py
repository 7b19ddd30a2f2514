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
  with --open-connection per-request every arrival opens its own (the autoscale stage: see its `_send`).

Everything else comes from environment variables so the same files serve local processes and the
ConfigMap in a cluster:

NIGHTCAP_PATH, NIGHTCAP_METHOD, NIGHTCAP_PAYLOADS (JSON-lines file of bodies), NIGHTCAP_HEADERS (JSON of
non-secret headers), NIGHTCAP_API_KEY_ENV (the name of the variable holding the key; its value is sent as
`Authorization: Bearer` and never logged), NIGHTCAP_TIMEOUT_S, NIGHTCAP_RECONNECT_S (re-open the
connection this often, so new replicas behind a per-connection balancer receive traffic),
NIGHTCAP_REPORT_INTERVAL_S (how often workers report to the master), NIGHTCAP_DNS_TTL_S (how long a resolved
target host is reused by new connections, 30 s), NIGHTCAP_BIN_S (the goodput bins, 0.1 s).

This is the entry (`locust -f .../locustfile.py`). Locust puts its directory on sys.path while it loads it, so
the files beside it are imported by their bare names (`nightcap_*`, names no other module has); a pod gets them
all in its ConfigMap (`nightcap.locust_env.LOCUST_SOURCES`) and has no nightcap package:

- `nightcap_request.py`: what every request is (path, method, bodies, headers, time-out) and the DNS cache;
- `nightcap_window.py`: the closed loop's exact windows, per worker, and the master's `GET /nightcap/window`;
- `nightcap_open_loop.py`: `OpenLoopUser`, and each worker's count of its arrivals by the window that planned them;
- `nightcap_open_ledger.py`: the master's ledger of those arrivals, `GET /nightcap/open` and its mark.

Their hooks into Locust are all installed here, at the end: importing them installs nothing.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from typing import Any

import locust.runners
import locust.stats
from locust import FastHttpUser, events, task

import geventhttpclient.connectionpool  # noqa: E402,I001 (after locust: its gevent monkey-patching comes first)

import nightcap_open_ledger
import nightcap_open_loop
import nightcap_request
import nightcap_window
from nightcap_open_loop import OpenLoopUser  # noqa: F401 (Locust finds the user classes among this file's names)
from nightcap_request import HEADERS, METHOD, PATH, PAYLOADS, RECONNECT_S, TIMEOUT_S

locust.stats.PERCENTILES_TO_STATISTICS = [0.5, 0.9, 0.95, 0.99]
locust.runners.WORKER_REPORT_INTERVAL = float(os.environ.get("NIGHTCAP_REPORT_INTERVAL_S", "0.5"))


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


# --- the hooks of the files beside this one, in the order they were always installed ---------------------------

geventhttpclient.connectionpool.ConnectionPool._resolve = nightcap_request.resolve_cached  # type: ignore[method-assign]
events.report_to_master.add_listener(nightcap_open_loop.report_open)
events.report_to_master.add_listener(nightcap_window.stamp_report)
events.request.add_listener(nightcap_window.count_completion)
events.report_to_master.add_listener(nightcap_window.send_goodput)
events.worker_report.add_listener(nightcap_window.on_report)
events.reset_stats.add_listener(nightcap_window.on_reset)
events.reset_stats.add_listener(nightcap_open_ledger.on_open_reset)
events.worker_report.add_listener(nightcap_open_ledger.on_open_report)
events.init.add_listener(nightcap_open_ledger.add_open_routes)
events.init.add_listener(nightcap_window.add_routes)
