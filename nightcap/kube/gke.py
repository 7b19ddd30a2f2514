"""GKE node-pool autoscaling: turned on for the autoscale stage, and put back exactly as found afterwards.

- The stage's limits (`autoscale.nodes: {min, max}`) are the pool's totals (`total_min_node_count`,
  `total_max_node_count`), so "1-5 nodes" means five nodes however many zones the pool spans; the per-zone
  fields (`min_node_count`...) would mean 3-15 on a regional pool. `describe()` says which a pool had.
- The original `NodePoolAutoscaling` message is kept verbatim and written back by `restore()`. A pool whose
  autoscaling was off also gets its size back, per zone as found: GKE's NodePool holds no current size, so
  it is counted from the Kubernetes nodes carrying the pool's label, by zone (`zone_counts`, injected by the
  platform). Equal zones go back with `set_node_pool_size` (a count per zone); uneven ones by resizing each
  zone's managed instance group (the pool's `instance_group_urls`) through the Compute Engine API.
- `record()` is what the run's record in the cluster keeps, so a later run restores the pool of a run that
  died: `restore_recorded(record)`.

Calls pass `retry=None` and our own bounded backoff runs on the injected clock: GKE refuses changes while
another cluster operation runs (FAILED_PRECONDITION with "operation ... in progress"), which is worth waiting
for; any other FAILED_PRECONDITION (an Autopilot cluster, a setting the pool refuses) is reported at once.
"""

from __future__ import annotations

import json
import logging
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
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def _busy(exc: gexc.GoogleAPICallError) -> bool:
    """FAILED_PRECONDITION because another operation runs on the cluster (gRPC type, or REST 400 body)."""
    status = ""
    response = getattr(exc, "response", None)
    try:
        status = (response.json().get("error") or {}).get("status", "") if response is not None else ""
    except (ValueError, AttributeError, TypeError):
        status = ""
    precondition = isinstance(exc, gexc.FailedPrecondition) or status == "FAILED_PRECONDITION" or exc.code == 400
    return precondition and bool(_BUSY.search(exc.message or ""))


def describe(autoscaling: container_v1.NodePoolAutoscaling, zones: int) -> str:
    """A pool's autoscaling in words that say whether its limits are per zone or the pool's total."""
    a = autoscaling
    if not a.enabled:
        return "autoscaling off"
    if a.total_max_node_count:
        return f"autoscaling on, {a.total_min_node_count}-{a.total_max_node_count} nodes in total"
    z = max(zones, 1)
    over = f" ({a.min_node_count * z}-{a.max_node_count * z} over {z} zones)" if z > 1 else ""
    return f"autoscaling on, {a.min_node_count}-{a.max_node_count} nodes per zone{over}"


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
                 on_restored: Callable[[], None] | None = None,
                 zone_counts: Callable[[], dict[str, int]] | None = None,
                 original_zones: dict[str, int] | None = None, http: Any = None):
        """`on_original(record)` runs after the original is read and before anything is changed (the run's
        record stores it); `on_restored()` after a successful restore. `zone_counts()` counts the pool's nodes
        per zone now; read only when autoscaling is off. `http`: an authorized requests session for the
        Compute Engine API (uneven zones only; default: Application Default Credentials)."""
        self.gke = gke
        self.on_original = on_original
        self.on_restored = on_restored
        self.client = client or container_v1.ClusterManagerClient()
        self.clock = clock
        self.zone_counts = zone_counts
        self.http = http
        self._original_zones = dict(original_zones) if original_zones else None  # None: the autoscaler's size
        self._original: container_v1.NodePoolAutoscaling | None = (
            container_v1.NodePoolAutoscaling.from_json(json.dumps(original)) if original is not None else None)
        self._changed = original is not None

    @property
    def pool_name(self) -> str:
        g = self.gke
        return f"projects/{g.project}/locations/{g.location}/clusters/{g.cluster}/nodePools/{g.node_pool}"

    @property
    def cluster_name(self) -> str:
        g = self.gke
        return f"projects/{g.project}/locations/{g.location}/clusters/{g.cluster}"

    def _operation_name(self, operation: container_v1.Operation) -> str:
        if operation.name.startswith("projects/"):
            return operation.name
        return f"projects/{self.gke.project}/locations/{self.gke.location}/operations/{operation.name}"

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        delay = self.backoff_initial_s
        last: Exception | None = None
        busy = False
        for attempt in range(1, self.attempts + 1):
            try:
                return fn(**kwargs, retry=None, timeout=self.request_timeout_s)
            except gexc.GoogleAPICallError as exc:
                busy = _busy(exc)
                if not (isinstance(exc, _TRANSIENT) or busy):
                    raise PlatformError(self._permanent(what, exc)) from None
                last = exc
            if attempt < self.attempts:
                log.info("%s: %s; retrying in %.0fs", what, last, delay)
                self.clock.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
        why = ("another cluster operation kept running (see the cluster's operations in the GKE console)" if busy
               else "the GKE API kept failing: check its status and retry later")
        raise PlatformError(f"{what} on node pool {self.pool_name} still failed after {self.attempts} attempts "
                            f"(last: {last}); {why}")

    def _permanent(self, what: str, exc: gexc.GoogleAPICallError) -> str:
        head = f"{what} on node pool {self.pool_name} failed ({exc.code}): {exc.message}"
        if isinstance(exc, (gexc.PermissionDenied, gexc.Unauthenticated)) or exc.code in (401, 403):
            return f"{head}. The credentials need {_PERMISSION}"
        if isinstance(exc, gexc.NotFound) or exc.code == 404:
            return f"{head}. Check platform.gke project, location, cluster and node_pool"
        if isinstance(exc, gexc.FailedPrecondition) or "autopilot" in (exc.message or "").lower():
            return (f"{head}. The cluster refuses this change (an Autopilot cluster has no node pools to change: "
                    "remove autoscale.nodes)")
        return f"{head}. Check autoscale.nodes (min <= max, within the pool's limits)"

    def read_pool(self) -> container_v1.NodePool:
        return self._call("get node pool", self.client.get_node_pool, request={"name": self.pool_name})

    def read_cluster(self) -> container_v1.Cluster:
        return self._call("get cluster", self.client.get_cluster, request={"name": self.cluster_name})

    def read(self) -> container_v1.NodePoolAutoscaling:
        """The pool's current autoscaling settings (a copy)."""
        return container_v1.NodePoolAutoscaling(self.read_pool().autoscaling)

    def _count_zones(self) -> dict[str, int]:
        """The pool's nodes per zone now; refuses to go on when it cannot be told."""
        if self.zone_counts is None:
            raise PlatformError(f"node pool {self.pool_name} has autoscaling off and its node count is unknown, so "
                                "its size could not be restored: nothing was changed")
        try:
            return {str(z): int(n) for z, n in self.zone_counts().items()}
        except Exception as exc:
            raise PlatformError(f"node pool {self.pool_name} has autoscaling off and its size could not be read "
                                f"({exc}), so it could not be restored: nothing was changed. Grant list on nodes "
                                "(deployments/k8s/rbac.yaml)") from None

    def original_settings(self) -> dict[str, Any] | None:
        """What `restore()` will write back, as JSON-able data (None: nothing changed)."""
        if self._original is None:
            return None
        return json.loads(container_v1.NodePoolAutoscaling.to_json(self._original))

    def set_autoscaling(self, enabled: bool, min_node_count: int, max_node_count: int) -> None:
        """Set the pool's autoscaling (limits as the pool's totals) and wait for the operation; the first call
        remembers the original."""
        if enabled and not 0 <= min_node_count <= max_node_count:
            raise PlatformError(f"autoscale.nodes min ({min_node_count}) must be between 0 and max ({max_node_count})")
        if self._original is None:
            pool = self.read_pool()
            original = container_v1.NodePoolAutoscaling(pool.autoscaling)
            if not original.enabled:
                self._original_zones = self._count_zones()
            self._original = original
            if self.on_original is not None:
                self.on_original(self.record())
        settings = container_v1.NodePoolAutoscaling(enabled=enabled, total_min_node_count=min_node_count,
                                                    total_max_node_count=max_node_count)
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
        """Write back the settings found before the first change, and the size per zone when autoscaling was
        off; a no-op when nothing was changed or after a successful restore. On failure the original is kept,
        so calling again retries."""
        if not self._changed or self._original is None:
            return
        self._apply(container_v1.NodePoolAutoscaling(self._original), "restore node-pool autoscaling")
        zones = self._original_zones
        if not self._original.enabled and zones:
            if len(set(zones.values())) == 1:
                request = container_v1.SetNodePoolSizeRequest(name=self.pool_name,
                                                              node_count=next(iter(zones.values())))
                operation = self._call("restore node-pool size", self.client.set_node_pool_size, request=request)
                self._wait(operation, "restore node-pool size")
            else:
                self._resize_zones(zones)
        self._changed = False
        log.info("node pool %s autoscaling restored", self.pool_name)
        if self.on_restored is not None:
            self.on_restored()

    def _resize_zones(self, zones: dict[str, int]) -> None:
        """Uneven zones: `set_node_pool_size` sets every zone alike, so each zone's instance group is resized."""
        from nightcap.kube.gke_compute import resize_groups

        groups = list(self.read_pool().instance_group_urls)
        resize_groups(self.pool_name, groups, zones, self.http, self.clock, self.poll_s, self.operation_timeout_s)

    def record(self) -> dict[str, Any]:
        """What a later process needs to restore this pool: its name, where it is, and the original settings."""
        return {"name": self.pool_name, "gke": self.gke.model_dump(), "original": self.original_settings(),
                "zones": self._original_zones}


def restore_recorded(record: dict[str, Any], client: container_v1.ClusterManagerClient | None = None,
                     clock: Any = time, http: Any = None) -> None:
    """Put back a node pool's autoscaling (and size per zone) from a `GkeNodePools.record()` of a dead run."""
    if record.get("original") is None:
        return  # the run died before it read (so before it changed) anything
    GkeNodePools(GkeConfig(**record["gke"]), client=client, clock=clock, original=record["original"],
                 original_zones=record.get("zones"), http=http).restore()
