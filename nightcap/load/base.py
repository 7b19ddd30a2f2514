"""What every load generator shares: the `Generator` protocol, waiting for workers, the target URL.

Two generators implement the protocol: `LocalLocust` (`local.py`, master and workers as processes on this
machine) and `KubernetesLocust` (`kubernetes.py`, pods next to the model). Both run the same
`locust_side/locustfile.py` (and the files beside it), configured only through the environment built by
`nightcap.locust_env` (below platforms: the manifest preview renders it too), and both are driven through the
master's HTTP API (`driver.py`). The step runner (`runner.py`) measures windows with whichever one runs;
`factory.py` starts the one `load.generator` asks for (it imports both, so this module imports neither).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

import httpx

from nightcap.load.driver import LoadError, MasterClient
from nightcap.platforms.base import Platform


class GeneratorError(LoadError):
    """The load generator failed (its processes, its pods, its workers), not the target: never a candidate's
    answer. In a cluster it wraps the Locust pods' rollout failures, "no room" included, so tuning cannot
    record a Locust pod that does not fit as a model pod size that does not fit."""


class Generator(Protocol):
    """The load side: local processes or pods in a cluster."""

    client: MasterClient
    workers: int
    cpu_source: str  # where generator_cpu_pct comes from (steps.csv generator_cpu_source)

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def alive_workers(self) -> int: ...

    def mark_cpu(self) -> None: ...

    def generator_cpu_pct(self) -> list[float]: ...


def wait_for_workers(client: MasterClient, expected: int, timeout_s: float, *, joined_since: set[str] | None = None,
                     joined: int = 0, clock: Any = time, poll_s: float = 0.2,
                     check: Callable[[Exception | None], None] | None = None, where: str = "",
                     request_timeout_s: float = 1.0) -> set[str]:
    """Block until the master counts exactly `expected` connected workers, `joined` of them not in `joined_since`.

    Ready worker processes or pods are not enough: a Locust 2.47 master with no connected worker refuses to
    start a swarm while `/swarm` still answers success, so every window would come back empty. A replaced
    worker is counted once the master dropped the dead one (a missed heartbeat) and the new one joined, so no
    user is sent to a dead worker. `check(error)` runs after each poll (the local master's exit, a port taken);
    returns the connected worker ids.
    """
    deadline = clock.monotonic() + timeout_s
    active: set[str] = set()
    while True:
        error: Exception | None = None
        try:
            raw = client.window(timeout_s=request_timeout_s)  # whoever holds the port may never answer
            active = set(raw.get("active_workers", []))
            if len(active) == expected and len(active - (joined_since or set())) >= joined:
                return active
        except httpx.HTTPError as exc:
            error = exc
        if check is not None:
            check(error)
        if clock.monotonic() >= deadline:
            last = f"; last error: {error}" if error else ""
            new = f" ({len(active - joined_since)} of them new, {joined} needed)" if joined_since is not None else ""
            raise LoadError(f"the Locust master counts {len(active)} connected worker(s){new}, not {expected}, "
                            f"{timeout_s:.0f}s after they started{last}" + (f"; see {where}" if where else ""))
        clock.sleep(poll_s)


def target_url(generator: object, platform: Platform) -> str:
    """The URL the generator's users send to: the generator knows where it runs.

    In-cluster Locust sends to the Service's DNS name (`generator.target_url(platform)`); local processes
    send to `platform.service_url` (local replicas, or a port-forward into the cluster).
    """
    own = getattr(generator, "target_url", None)
    return own(platform) if callable(own) else platform.service_url


def tunnelled(generator: object, platform: Platform) -> bool:
    """Local processes reaching Kubernetes pods through the port-forward: every new connection there is a tunnel
    through the API server (and a pod lookup), so load must keep its connections open."""
    return (getattr(platform, "kind", "") == "kubernetes"
            and target_url(generator, platform) != getattr(platform, "cluster_service_url", None))
