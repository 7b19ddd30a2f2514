"""The reference server's capacity and stall latency, from its parameters: the truth tests and benchmarks
compare with.

Pure (the standard library's math only); the server itself is `reference_server.py`.
"""

from __future__ import annotations

import math

__all__ = ["reference_capacity", "reference_throughput", "stall_latency_ms"]


def reference_capacity(
    slots: int,
    service_ms: float,
    cpu_ms: float = 0.0,
    cpu_limit: float | None = None,
    replicas: int = 1,
) -> float:
    """Saturation throughput (rps) of ``replicas`` reference servers: the checks' ground truth.

    ``min(slots*1000/(service_ms+cpu_ms), cpu_limit*1000/cpu_ms)`` per replica, times replicas.
    The slot term is exact; the CPU term is exact when ``cpu_limit`` (cores) is enforced, e.g. by a
    cgroup. Approximation: near the crossover of the two terms the real figure is lower than the
    min (slots then also wait for CPU); use :func:`reference_throughput` for that region.
    ``cpu_ms`` is the request's whole CPU cost: the server measures its own overhead (parsing,
    event loop, thread handoffs, ~0.25 ms) and burns that much less, as long as the overhead is
    under half of ``cpu_ms``. Measured under cgroup v1 quotas: 50.0 rps for 0.5 core x 10 ms
    (formula 50), 198 rps for 1 core x 5 ms (formula 200). ``cpu_limit=None`` means no CPU bound:
    pass the core count when the machine's cores, not a limit, are the bound (and remember that
    the load generator shares them).
    ``coherency_ms`` is not covered (its capacity depends on concurrency).
    """
    if slots <= 0 or replicas <= 0:
        raise ValueError("slots and replicas must be positive")
    if service_ms < 0 or cpu_ms < 0:
        raise ValueError("service_ms and cpu_ms must be >= 0")
    per_slot_ms = service_ms + cpu_ms
    per_replica = math.inf if per_slot_ms == 0 else slots * 1000.0 / per_slot_ms
    if cpu_limit is not None and cpu_ms > 0:
        if cpu_limit <= 0:
            raise ValueError("cpu_limit must be positive (cores)")
        per_replica = min(per_replica, cpu_limit * 1000.0 / cpu_ms)
    return per_replica * replicas


def reference_throughput(
    users: int,
    slots: int,
    service_ms: float,
    cpu_ms: float = 0.0,
    cpu_limit: float | None = None,
    coherency_ms: float = 0.0,
    replicas: int = 1,
) -> float:
    """Expected rps of closed-loop clients (no think time) spread evenly over the replicas.

    Why: the ramps and the USL fit need the whole curve, not only the saturation point. Exact mean
    value analysis of the slot holders (at most ``slots`` per replica) cycling through a delay
    station (``service_ms``) and a processor-sharing CPU with ``min(k, cpu_limit)`` cores busy
    when k requests burn CPU. The coherency lock is modelled as a FCFS station holding
    ``coherency_ms * (users_per_replica - 1)``: an approximation (its service time is constant,
    MVA assumes exponential); measured here within 10% (16 slots x 10 ms, coherency 3 ms, 1-16
    users). Client round-trip time is ignored, so real figures are a few percent lower when the
    users are fewer than the slots (2 users on 4 slots x 20 ms: 95 rps measured, 100 modelled).
    """
    if users <= 0:
        return 0.0
    per_replica_users = users / replicas
    k_max = max(1, min(slots, math.floor(per_replica_users)))
    cores = math.inf if cpu_limit is None else float(cpu_limit)
    lock_ms = coherency_ms * max(0.0, per_replica_users - 1)
    # Load-dependent MVA for the CPU station: p[j] = P(j requests at the CPU).
    p_cpu = [1.0]
    q_lock = 0.0
    throughput = 0.0
    for k in range(1, k_max + 1):
        r_cpu = 0.0
        if cpu_ms > 0:
            r_cpu = sum(j * cpu_ms / min(j, cores) * p_cpu[j - 1] for j in range(1, k + 1))
        r_lock = lock_ms * (1 + q_lock)
        cycle_ms = service_ms + r_cpu + r_lock
        if cycle_ms <= 0:
            return math.inf
        throughput = k / cycle_ms  # per ms
        if cpu_ms > 0:
            new_p = [0.0] * (k + 1)
            for j in range(1, k + 1):
                new_p[j] = cpu_ms / min(j, cores) * throughput * p_cpu[j - 1]
            new_p[0] = max(0.0, 1.0 - sum(new_p[1:]))
            p_cpu = new_p
        q_lock = throughput * r_lock
    return throughput * 1000.0 * replicas



def stall_latency_ms(quantile: float, service_ms: float, stall_every_s: float, stall_s: float) -> float:
    """The latency quantile requests arriving at a steady rate see on a server that stalls periodically.

    Why: the open-loop benchmark needs the truth a stalling target implies. A response is due
    ``service_ms`` after its arrival; arrivals at a steady rate (constant spacing or Poisson) fall
    uniformly over the stall period, so the due time's phase is uniform too, and a response due
    ``x`` into a stall leaves ``stall_s - x`` later. The extra wait exceeds ``e`` for a share
    ``(stall_s - e) / stall_every_s`` of requests, so quantile q adds
    ``max(0, stall_s - (1 - q) * stall_every_s)``: every 2 s a 0.5 s stall gives
    p50 = service, p95 = service + 400 ms, p99 = service + 480 ms. It holds while the slots keep up
    with the rate (no queueing besides the stall), and is what a closed-loop client does *not* see:
    each of its users meets a stall once per period and sends nothing meanwhile.
    """
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    if stall_every_s <= 0 or not 0 <= stall_s < stall_every_s:
        raise ValueError("stall_s must be in [0, stall_every_s) and stall_every_s > 0")
    extra_s = max(0.0, stall_s - (1.0 - quantile) * stall_every_s)
    return service_ms + 1000.0 * extra_s
