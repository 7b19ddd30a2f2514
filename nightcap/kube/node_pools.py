"""The GKE node pool the model runs on, as the Kubernetes platform changes it (the autoscale stage) and puts it back.

A mixin of `KubernetesPlatform`: the pool's original settings go into the run's record in the cluster (and the
local registry) before anything is changed; the limits are the pool's totals, and the notes say what the pool
had (per zone or in total); the restore happens after the Deployment was scaled back (the caller's order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nightcap.config import Config
    from nightcap.kube.gke import GkeNodePools
    from nightcap.kube.client import Kube
    from nightcap.kube.lease import RunLease
    from nightcap.processes.registry import RunRegistry


class NodePoolControl:
    """Node-pool autoscaling for a platform that has `config`, `kube`, `clock`, `notes` and a run record."""

    config: "Config"
    kube: "Kube"
    clock: Any
    notes: list[str]
    node_pools: "GkeNodePools | None"
    lease: "RunLease | None"
    registry: "RunRegistry | None"
    _said: set[str]
    _nodes_on: bool

    def hold_lease(self) -> None:  # pragma: no cover - KubernetesPlatform's
        raise NotImplementedError

    def _pools(self) -> "GkeNodePools | None":
        if self.node_pools is None and self.config.platform.gke is not None:
            from nightcap.kube.gke import GkeNodePools

            self.node_pools = GkeNodePools(self.config.platform.gke, clock=self.clock)
        if self.node_pools is not None and getattr(self.node_pools, "zone_counts", False) is None:
            self.node_pools.zone_counts = self._zone_counts  # type: ignore[union-attr]
        if self.node_pools is not None and getattr(self.node_pools, "on_original", False) is None:
            self.node_pools.on_original = self._record_pool  # type: ignore[union-attr]
            self.node_pools.on_restored = self._forget_pool  # type: ignore[union-attr]
        return self.node_pools

    def _zone_counts(self) -> dict[str, int]:
        """The GKE pool's nodes per zone, from the Kubernetes nodes carrying its label."""
        pool = self.config.platform.gke.node_pool if self.config.platform.gke else ""
        return self.kube.node_zones(pool)

    def _record_pool(self, record: dict[str, Any]) -> None:
        """Before the pool is changed: into the run's record in the cluster (raises if it cannot be written,
        so nothing is changed that a later run could not restore), and into the local registry."""
        self.hold_lease()
        assert self.lease is not None
        self.lease.record_pool(record)
        if self.registry is not None:
            self.registry.update(lambda r: r.node_pools.append(record))

    def _forget_pool(self) -> None:
        assert self.node_pools is not None
        name = self.node_pools.pool_name  # type: ignore[union-attr]
        if self.lease is not None:
            self.lease.forget_pool(name)
        if self.registry is not None:
            self.registry.update(lambda r: r.node_pools.__setitem__(
                slice(None), [p for p in r.node_pools if p.get("name") != name]))

    def enable_node_autoscaling(self, min_nodes: int, max_nodes: int) -> None:
        """Turn on the GKE node pool's autoscaling (platform.gke); its original settings are recorded first."""
        pools = self._pools()
        if pools is None:
            if "nodes-no-gke" not in self._said:
                self._said.add("nodes-no-gke")
                self.notes.append("autoscale.nodes is set but platform.gke is not: node-pool autoscaling was "
                                  "not changed")
            return
        pools.set_autoscaling(True, int(min_nodes), int(max_nodes))
        self._nodes_on = True
        self._note_pool(pools, int(min_nodes), int(max_nodes))

    def _note_pool(self, pools: Any, min_nodes: int, max_nodes: int) -> None:
        """Say what the limits mean: the pool's total, and what the pool had (per zone or in total)."""
        original = getattr(pools, "_original", None)
        if original is None or "pool-limits" in self._said:
            return
        from nightcap.kube.gke import describe

        self._said.add("pool-limits")
        zones = getattr(pools, "_original_zones", None) or {}
        found = describe(original, len(zones))
        if zones:
            found += ", " + " + ".join(f"{n} in {z}" for z, n in sorted(zones.items())) + " nodes"
        self.notes.append(f"node pool {self.config.platform.gke.node_pool if self.config.platform.gke else '?'}: "
                          f"autoscaled {min_nodes}-{max_nodes} nodes in total (total_min/max_node_count, all zones) "
                          f"during the stage; before it: {found} (restored after)")

    def restore_node_autoscaling(self) -> None:
        """Put the node pool's autoscaling back as found (a no-op when nothing was changed)."""
        if self.node_pools is not None:
            self.node_pools.restore()
        self._nodes_on = False
