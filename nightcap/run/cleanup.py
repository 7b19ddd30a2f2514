"""Clean up after dead runs: local processes and cgroups, Kubernetes objects by run label, node pools.

Used by `nightcap cleanup` and at the start of every run, so a runner killed with SIGKILL (or a lost
machine) leaves nothing behind for longer than one night. The local records cover a runner on this machine;
a runner that ran in the cluster left none here, so `nightcap cleanup --namespace NS` sweeps the namespace by
the runs' records in the cluster (`nightcap.platforms.kube_sweep`), as every Kubernetes run's start does.
"""

from __future__ import annotations

import time
from typing import Any

from nightcap.run.registry import STALE_AFTER_S, cleanup_dead


def kubernetes_cleanup(record: dict) -> None:
    """Delete the dead run's objects (its run-id label only: other runs may be live). Raises to keep the record."""
    from kubernetes import config as kconfig
    from kubernetes.client import ApiClient

    from nightcap.platforms.kube_sweep import cleanup_run

    try:
        kconfig.load_incluster_config()
    except kconfig.ConfigException:
        kconfig.load_kube_config(context=record.get("context"))
    cleanup_run(ApiClient(), record["namespace"], record["run_id"])


def node_pool_restore(pool: dict) -> None:
    """Write back a node pool's original autoscaling. Raises to keep the record for the next cleanup."""
    from nightcap.platforms.gke import restore_recorded

    restore_recorded(pool)


def sweep_cluster(namespace: str, context: str | None = None, in_cluster: bool = False, api_client: Any = None,
                  clock: Any = time, restore_pool: Any = None, flow_run_state: Any = None) -> list[str]:
    """Delete the objects of the namespace's dead runs and restore their node pools from their records."""
    from nightcap.config import PlatformConfig
    from nightcap.platforms.kube_client import Kube, api_client_for
    from nightcap.platforms.kube_lease import prefect_flow_run_state
    from nightcap.platforms.kube_sweep import sweep_namespace

    api = api_client or api_client_for(PlatformConfig(kind="kubernetes", namespace=namespace, context=context,
                                                      in_cluster=in_cluster))
    return sweep_namespace(Kube(api, namespace, clock=clock), clock=clock,
                           flow_run_state=flow_run_state or prefect_flow_run_state,
                           restore_pool=restore_pool or node_pool_restore)


def reap_dead_runs(stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """Everything every dead run recorded on this machine left, on every platform it used (a namespace's dead runs
    without local records: `sweep_cluster`)."""
    from nightcap.targets.plan import reap_orphan_models

    return cleanup_dead(stale_after_s=stale_after_s, kubernetes_cleanup=kubernetes_cleanup,
                        node_pool_restore=node_pool_restore) + reap_orphan_models()
