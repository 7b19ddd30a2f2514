"""Clean up after dead runs: local processes and cgroups, Kubernetes objects by run label, node pools.

Used by `nightcap cleanup` and at the start of every run, so a runner killed with SIGKILL (or a lost
machine) leaves nothing behind for longer than one night.
"""

from __future__ import annotations

from typing import Callable

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
