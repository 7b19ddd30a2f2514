"""GKE node-pool autoscaling: turned on for the autoscale stage, and put back exactly as found afterwards.

The original `NodePoolAutoscaling` message is kept verbatim (min/max, total_*, location policy) and written
back by `restore()`, which teardown calls on every path. A pool whose autoscaling was off also gets its
node count back (`set_node_pool_size`): the autoscaler chose its size meanwhile. GKE's NodePool holds no
current size, so it is counted from the Kubernetes nodes carrying the pool's label (`node_count`, injected by
the platform) and divided over the pool's zones, as `set_node_pool_size` takes a count per zone. `original_settings()` can be stored by the run
registry, so a later run (or `nightcap cleanup`) can restore the pool of a run that died:
`GkeNodePools(gke, original=saved).restore()`.

Calls pass `retry=None` and our own bounded backoff runs on the injected clock: GKE refuses changes while
another cluster operation runs (FAILED_PRECONDITION), which is worth waiting for, and tests must not sleep.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from typing import Any, Callable

from google.api_core import exceptions as gexc
from google.cloud import container_v1

from nightcap.config import GkeConfig
from nightcap.platforms.base import PlatformError

log = logging.getLogger(__name__)

_TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.TooManyRequests,
              gexc.ResourceExhausted, gexc.Aborted, gexc.BadGateway, gexc.GatewayTimeout)
_BUSY = re.compile(r"(another|incompatible|running|in progress|currently).{0,40}operation|operation.{0,60}"
                   r"(in progress|currently|running)", re.IGNORECASE)
_PERMISSION = "container.clusters.update (role roles/container.clusterAdmin or a custom role)"


def _busy(exc: gexc.GoogleAPICallError) -> bool:
    """FAILED_PRECONDITION because another operation runs on the cluster (gRPC type, or REST 400 body)."""
    if isinstance(exc, gexc.FailedPrecondition):
        return True
    status = ""
    response = getattr(exc, "response", None)
    try:
        status = (response.json().get("error") or {}).get("status", "") if response is not None else ""
    except (ValueError, AttributeError, TypeError):
        status = ""
    return status == "FAILED_PRECONDITION" or (exc.code == 400 and bool(_BUSY.search(exc.message or "")))


class GkeNodePools:
    """One node pool's autoscaling, changed for a stage and restored afterwards (idempotently)."""

    poll_s = 5.0
    operation_timeout_s = 900.0
    attempts = 8
    backoff_initial_s = 2.0
    backoff_max_s = 30.0
    request_timeout_s = 60.0

    def __init__(self, gke: GkeConfig, client: container_v1.ClusterManagerClient | None = None, clock: Any = time,
                 original: dict[str, Any] | None = None,
                 on_original: Callable[[dict[str, Any]], None] | None = None,
                 on_restored: Callable[[], None] | None = None, node_count: Callable[[], int] | None = None,
                 original_node_count: int | None = None):
        """`on_original(record)` runs after the original is read and before anything is changed (the run
        registry stores `record`, which `restore_recorded` takes); `on_restored()` after a successful restore.
        `node_count()` counts the pool's nodes now (all zones); it is read only when autoscaling is off."""
        self.gke = gke
        self.on_original = on_original
        self.on_restored = on_restored
        self.client = client or container_v1.ClusterManagerClient()
        self.clock = clock
        self.node_count = node_count
        self._original_nodes = original_node_count  # per zone; None: the size is the autoscaler's
        self._original: container_v1.NodePoolAutoscaling | None = (
            container_v1.NodePoolAutoscaling.from_json(json.dumps(original)) if original is not None else None)
        self._changed = original is not None

    @property
    def pool_name(self) -> str:
        g = self.gke
        return f"projects/{g.project}/locations/{g.location}/clusters/{g.cluster}/nodePools/{g.node_pool}"

    def _operation_name(self, operation: container_v1.Operation) -> str:
        if operation.name.startswith("projects/"):
            return operation.name
        return f"projects/{self.gke.project}/locations/{self.gke.location}/operations/{operation.name}"

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        delay = self.backoff_initial_s
        last: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                return fn(**kwargs, retry=None, timeout=self.request_timeout_s)
            except gexc.GoogleAPICallError as exc:
                if not (isinstance(exc, _TRANSIENT) or _busy(exc)):
                    raise PlatformError(self._permanent(what, exc)) from None
                last = exc
            if attempt < self.attempts:
                log.info("%s: %s; retrying in %.0fs", what, last, delay)
                self.clock.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
        raise PlatformError(f"{what} on node pool {self.pool_name} still failed after {self.attempts} attempts "
                            f"(last: {last}); another cluster operation may be running for a long time")

    def _permanent(self, what: str, exc: gexc.GoogleAPICallError) -> str:
        head = f"{what} on node pool {self.pool_name} failed ({exc.code}): {exc.message}"
        if isinstance(exc, (gexc.PermissionDenied, gexc.Unauthenticated)) or exc.code in (401, 403):
            return f"{head}. The credentials need {_PERMISSION}"
        if isinstance(exc, gexc.NotFound) or exc.code == 404:
            return f"{head}. Check platform.gke project, location, cluster and node_pool"
        return f"{head}. Check autoscale.nodes (min <= max, within the pool's limits)"

    def read_pool(self) -> container_v1.NodePool:
        return self._call("get node pool", self.client.get_node_pool, request={"name": self.pool_name})

    def read(self) -> container_v1.NodePoolAutoscaling:
        """The pool's current autoscaling settings (a copy)."""
        return container_v1.NodePoolAutoscaling(self.read_pool().autoscaling)

    def _nodes_per_zone(self, zones: int) -> int:
        """The pool's size as `set_node_pool_size` takes it; refuses to go on when it cannot be told."""
        if self.node_count is None:
            raise PlatformError(f"node pool {self.pool_name} has autoscaling off and its node count is unknown, so "
                                "its size could not be restored: nothing was changed")
        try:
            total = int(self.node_count())
        except Exception as exc:
            raise PlatformError(f"node pool {self.pool_name} has autoscaling off and its size could not be read "
                                f"({exc}), so it could not be restored: nothing was changed. Grant list on nodes "
                                "(deployments/k8s/rbac.yaml)") from None
        return math.ceil(total / max(zones, 1))

    def original_settings(self) -> dict[str, Any] | None:
        """What `restore()` will write back, as JSON-able data for the run registry (None: nothing changed)."""
        if self._original is None:
            return None
        return json.loads(container_v1.NodePoolAutoscaling.to_json(self._original))

    def set_autoscaling(self, enabled: bool, min_node_count: int, max_node_count: int) -> None:
        """Set the pool's autoscaling and wait for the operation; the first call remembers the original."""
        if enabled and not 0 <= min_node_count <= max_node_count:
            raise PlatformError(f"autoscale.nodes min ({min_node_count}) must be between 0 and max ({max_node_count})")
        if self._original is None:
            pool = self.read_pool()
            original = container_v1.NodePoolAutoscaling(pool.autoscaling)
            if not original.enabled:
                self._original_nodes = self._nodes_per_zone(len(pool.locations))
            self._original = original
            if self.on_original is not None:
                self.on_original(self.record())
        settings = container_v1.NodePoolAutoscaling(enabled=enabled, min_node_count=min_node_count,
                                                    max_node_count=max_node_count)
        self._changed = True
        self._apply(settings, "set node-pool autoscaling")

    def _apply(self, settings: container_v1.NodePoolAutoscaling, what: str) -> None:
        request = container_v1.SetNodePoolAutoscalingRequest(name=self.pool_name, autoscaling=settings)
        operation = self._call(what, self.client.set_node_pool_autoscaling, request=request)
        self._wait(operation, what)

    def _wait(self, operation: container_v1.Operation, what: str) -> None:
        name = self._operation_name(operation)
        deadline = self.clock.monotonic() + self.operation_timeout_s
        while operation.status != container_v1.Operation.Status.DONE:
            if self.clock.monotonic() >= deadline:
                raise PlatformError(f"{what}: operation {name} not done after {self.operation_timeout_s:.0f}s "
                                    f"(status {operation.status.name}); see the GKE console")
            self.clock.sleep(self.poll_s)
            operation = self._call("get operation", self.client.get_operation, request={"name": name})
        if operation.error and operation.error.code:
            raise PlatformError(f"{what}: operation {name} failed: {operation.error.message}")
        if operation.status_message and "error" in operation.status_message.lower():
            raise PlatformError(f"{what}: operation {name} failed: {operation.status_message}")

    def restore(self) -> None:
        """Write back the settings found before the first change, and the node count when autoscaling was
        off; a no-op when nothing was changed or after a successful restore. On failure the original is
        kept, so calling again retries."""
        if not self._changed or self._original is None:
            return
        self._apply(container_v1.NodePoolAutoscaling(self._original), "restore node-pool autoscaling")
        if not self._original.enabled and self._original_nodes is not None:
            request = container_v1.SetNodePoolSizeRequest(name=self.pool_name, node_count=self._original_nodes)
            operation = self._call("restore node-pool size", self.client.set_node_pool_size, request=request)
            self._wait(operation, "restore node-pool size")
        self._changed = False
        log.info("node pool %s autoscaling restored", self.pool_name)
        if self.on_restored is not None:
            self.on_restored()

    def record(self) -> dict[str, Any]:
        """What a later process needs to restore this pool: its name, where it is, and the original settings."""
        return {"name": self.pool_name, "gke": self.gke.model_dump(), "original": self.original_settings(),
                "node_count": self._original_nodes}


def restore_recorded(record: dict[str, Any], client: container_v1.ClusterManagerClient | None = None,
                     clock: Any = time) -> None:
    """Put back a node pool's autoscaling from a `GkeNodePools.record()` left by a run that died."""
    if record.get("original") is None:
        return  # the run died before it read (so before it changed) anything
    GkeNodePools(GkeConfig(**record["gke"]), client=client, clock=clock, original=record["original"],
                 original_node_count=record.get("node_count")).restore()
