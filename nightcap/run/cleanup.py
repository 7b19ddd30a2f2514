"""Clean up after dead runs: local processes and cgroups, Kubernetes objects by run label, node pools.

Used by `nightcap cleanup` and at the start of every run, so a runner killed with SIGKILL (or a lost
machine) leaves nothing behind for longer than one night. The local records cover a runner on this machine;
a runner that ran in the cluster left none here, so `nightcap cleanup --namespace NS` sweeps the namespace by
the runs' records in the cluster (`nightcap.kube.sweep`), as every Kubernetes run's start does.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from nightcap.processes.registry import STALE_AFTER_S, cleanup_dead

# a run's groups hold its replicas and processes while it lives; an empty one this much older than its run's start
# is a dead run's (load.max_duration_s is one hour by default)
ORPHAN_CGROUP_AGE_S = 2 * 3600.0


def kubernetes_cleanup(record: dict) -> None:
    """Delete the dead run's objects (its run-id label only: other runs may be live). Raises to keep the record."""
    from kubernetes import config as kconfig
    from kubernetes.client import ApiClient

    from nightcap.kube.sweep import cleanup_run

    try:
        kconfig.load_incluster_config()
    except kconfig.ConfigException:
        kconfig.load_kube_config(context=record.get("context"))
    cleanup_run(ApiClient(), record["namespace"], record["run_id"])


def node_pool_restore(pool: dict) -> None:
    """Write back a node pool's original autoscaling. Raises to keep the record for the next cleanup."""
    from nightcap.kube.gke import restore_recorded

    restore_recorded(pool)


def sweep_cluster(namespace: str, context: str | None = None, in_cluster: bool = False, api_client: Any = None,
                  clock: Any = time, restore_pool: Any = None, flow_run_state: Any = None) -> list[str]:
    """Delete the objects of the namespace's dead runs and restore their node pools from their records."""
    from nightcap.config import PlatformConfig
    from nightcap.kube.client import Kube, api_client_for
    from nightcap.kube.lease import prefect_flow_run_state
    from nightcap.kube.sweep import sweep_namespace

    api = api_client or api_client_for(PlatformConfig(kind="kubernetes", namespace=namespace, context=context,
                                                      in_cluster=in_cluster))
    return sweep_namespace(Kube(api, namespace, clock=clock), clock=clock,
                           flow_run_state=flow_run_state or prefect_flow_run_state,
                           restore_pool=restore_pool or node_pool_restore)


def reap_dead_runs(stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """Everything every dead run recorded on this machine left, on every platform it used (a namespace's dead runs
    without local records: `sweep_cluster`)."""
    from nightcap.platforms.cgroups import remove_group
    from nightcap.targets.plan import reap_orphan_models

    return cleanup_dead(stale_after_s=stale_after_s, kubernetes_cleanup=kubernetes_cleanup,
                        node_pool_restore=node_pool_restore, remove_cgroup=remove_group) \
        + reap_orphan_models() + reap_stale_cgroups()


def reap_stale_cgroups(older_than_s: float = ORPHAN_CGROUP_AGE_S) -> list[str]:
    """Empty nightcap cgroups of runs whose record is gone (`cgroups.stale_groups`): one line per group removed."""
    from datetime import datetime, timezone

    from nightcap.platforms.cgroups import detect, remove_group, stale_groups

    done = []
    for group in stale_groups(detect(), datetime.now(timezone.utc), older_than_s):
        remove_group(group)
        if not group.exists():
            done.append(f"removed cgroup {group} (empty, of a run with no record)")
    return done


# -- local retention (report folders, history steps, Prefect artifacts of old runs) -------------------------


def delete_prefect_artifacts(flow_run_ids: list[str], timeout_s: float = 5.0) -> int:
    """Delete the artifacts of these flow runs through the Prefect API; returns how many.

    Bounded: the API is checked first with a short timeout, so a night whose Prefect server is gone skips
    this (retention tries again next night) instead of waiting on client retries.
    """
    if not flow_run_ids:
        return 0
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if api:
        httpx.get(f"{api.rstrip('/')}/health", timeout=timeout_s).raise_for_status()
    deleted = 0
    with get_client(sync_client=True, httpx_settings={"timeout": timeout_s}) as client:
        for start in range(0, len(flow_run_ids), 50):
            chunk = flow_run_ids[start:start + 50]
            while True:
                found = client.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=chunk)), limit=200)
                if not found:
                    break
                for artifact in found:
                    client.delete_artifact(artifact.id)
                    deleted += 1
    return deleted


def apply_retention_for(config_path: str, overrides: list[str]) -> list[str]:
    """`nightcap cleanup --config CONFIG`: that config's retention on its store and report folders."""
    from nightcap.config import load_config
    from nightcap.results.retention import apply_retention
    from nightcap.results.store import HistoryStore

    cfg = load_config(config_path, overrides)
    store = HistoryStore(cfg.store.url)
    try:
        report = apply_retention(cfg, store, delete_artifacts=_artifacts_if_api(cfg))
    finally:
        store.close()
    return report.lines() or [f"retention: nothing to remove for target {cfg.target.name!r}"]


def _artifacts_if_api(cfg: object) -> Callable[[list[str]], int] | None:
    """Prefect artifacts are pruned only where a Prefect API is configured (PREFECT_API_URL)."""
    import os

    return delete_prefect_artifacts if os.environ.get("PREFECT_API_URL") else None
