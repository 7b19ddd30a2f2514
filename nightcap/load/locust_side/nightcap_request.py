"""What every request of the locustfile is, read once from the environment `nightcap.locust_env` builds (the
entry's docstring lists the variables): the target's path and method, the bodies and headers (the API key's
value from the variable NIGHTCAP_API_KEY_ENV names), the time-out, how often a connection is re-opened, and how
long a resolved host is reused (`resolve_cached`, which the entry installs into geventhttpclient).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import locust  # noqa: F401 (before geventhttpclient: its gevent monkey-patching comes first)

import geventhttpclient.connectionpool  # noqa: I001

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


def resolve_cached(pool: Any) -> Any:
    key = (pool._connection_host, pool._connection_port, pool.disable_ipv6)
    now = time.monotonic()
    hit = _resolved.get(key)
    if hit is None or now - hit[0] >= DNS_TTL_S:
        hit = _resolved[key] = (now, _resolve_uncached(pool))
    return hit[1]
