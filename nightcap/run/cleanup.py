"""Clean up after dead runs: local processes and cgroups, Kubernetes objects by run label, node pools.

Used by `nightcap cleanup` and at the start of every run, so a runner killed with SIGKILL (or a lost
machine) leaves nothing behind for longer than one night.
"""

from __future__ import annotations

from nightcap.run.registry import STALE_AFTER_S, cleanup_dead


def kubernetes_cleanup(record: dict) -> None:
    """Delete the dead run's objects (its run-id label only: other runs may be live). Raises to keep the record."""
    from kubernetes import config as kconfig
    from kubernetes.client import ApiClient

    from nightcap.platforms.kube_client import cleanup_run

    try:
        kconfig.load_incluster_config()
    except kconfig.ConfigException:
        kconfig.load_kube_config(context=record.get("context"))
    cleanup_run(ApiClient(), record["namespace"], record["run_id"])


def node_pool_restore(pool: dict) -> None:
    """Write back a node pool's original autoscaling. Raises to keep the record for the next cleanup."""
    from nightcap.platforms.gke import restore_recorded

    restore_recorded(pool)


def reap_dead_runs(stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """Everything every dead run left, on every platform it used (the Kubernetes-only part is
    `nightcap.platforms.kube_client.cleanup_dead_runs`, which deletes one namespace's objects of dead runs)."""
    from nightcap.targets.plan import reap_orphan_models

    return cleanup_dead(stale_after_s=stale_after_s, kubernetes_cleanup=kubernetes_cleanup,
                        node_pool_restore=node_pool_restore) + reap_orphan_models()
