"""Preflight's questions to Google Cloud: the node pool, the cluster (Autopilot, NetworkPolicy enforcement,
Workload Identity), the runner's Google identity, and whether it may change the pool (`container.clusters.update`,
asked with Resource Manager's testIamPermissions, which changes nothing).

Read only. `google_credentials` and `http` are injectable (tests; another credential source).
"""

from __future__ import annotations

from typing import Any, Callable

from nightcap.config import Config
from nightcap.kube.gke_compute import CLOUD_SCOPE
from nightcap.kube.preflight_check import Check

CRM_URL = "https://cloudresourcemanager.googleapis.com/v1"
NEEDED = ("container.clusters.update", "container.operations.get")
FOR_UNEVEN_ZONES = "compute.instanceGroupManagers.update"


def changes_pool(config: Config) -> bool:
    return bool(config.platform.gke and config.autoscale.nodes and "autoscale" in config.stages)


def gke_checks(config: Config, client: Any = None, google_credentials: Callable[[], Any] | None = None,
               http: Any = None, crm_url: str | None = None) -> tuple[list[Check], Any]:
    """Every GKE check, and the node pool read (for the room check), or None."""
    gke = config.platform.gke
    if gke is None:
        return [], None
    from nightcap.kube.gke import GkeNodePools, describe

    try:
        pools = GkeNodePools(gke, client=client)
        pools.attempts = 2
        pool = pools.read_pool()
        cluster = pools.read_cluster()
    except Exception as exc:  # PlatformError with the fix, or no Google credentials at all
        return [Check("node pool", False, f"{exc}; check platform.gke and the Google credentials "
                                           "(gcloud auth application-default login, or Workload Identity)")], None
    nodes = config.autoscale.nodes
    plan = (f"; the autoscale stage sets {nodes.get('min', 1)}-{nodes.get('max', 3)} nodes in total and restores this"
            if changes_pool(config) else "")
    checks = [Check("node pool", True, f"{gke.node_pool} in {gke.project}/{gke.location}/{gke.cluster}: "
                                        f"{describe(pool.autoscaling, len(pool.locations))}, zones "
                                        f"{', '.join(pool.locations) or '?'}{plan}")]
    checks += _cluster(config, cluster)
    if changes_pool(config) and not cluster.autopilot.enabled:
        checks += _identity(config, cluster, google_credentials, http, crm_url or CRM_URL, pool)
    return checks, pool


def _cluster(config: Config, cluster: Any) -> list[Check]:
    out = []
    autopilot = bool(cluster.autopilot.enabled)
    if autopilot and changes_pool(config):
        out.append(Check("autopilot", False, "the cluster is Autopilot: it has no node pool nightcap may change; "
                                              "remove autoscale.nodes (Autopilot adds nodes for pending pods itself)"))
    elif autopilot:
        out.append(Check("autopilot", True, "the cluster is Autopilot: pod sizes are rounded up to its steps",
                          warning=True))
    if config.generator_site == "cluster":
        from google.cloud import container_v1

        dataplane = cluster.network_config.datapath_provider == container_v1.DatapathProvider.ADVANCED_DATAPATH
        enforced = autopilot or dataplane or bool(cluster.network_policy.enabled)
        how = "Autopilot" if autopilot else ("Dataplane V2" if dataplane else "network policy enforcement")
        if enforced:
            out.append(Check("network policy", True, f"enforced ({how}): the Locust master's NetworkPolicy holds"))
        else:
            exposed = config.platform.in_cluster
            out.append(Check("network policy", not exposed,
                              "the cluster does not enforce NetworkPolicy, so the Locust master's web API (which can "
                              "send load anywhere) is open to every pod" + (
                                  "" if exposed else " on its master port (its web API listens on loopback here)") +
                              ": turn on Dataplane V2 or `gcloud container clusters update --enable-network-policy`",
                              warning=not exposed))
    if config.platform.in_cluster and changes_pool(config) and not cluster.workload_identity_config.workload_pool:
        out.append(Check("google identity", True, "Workload Identity is off: the runner pod calls GKE as the node's "
                                                   "service account; bind the runner's Kubernetes service account to "
                                                   "a Google one instead", warning=True))
    return out


def _identity(config: Config, cluster: Any, google_credentials: Callable[[], Any] | None, http: Any, crm_url: str,
              pool: Any) -> list[Check]:
    """Who the runner is to Google, and whether it may change the pool (and resize uneven zones)."""
    try:
        if google_credentials is not None:
            credentials = google_credentials()
        else:
            import google.auth

            credentials, _ = google.auth.default(scopes=[CLOUD_SCOPE])
    except Exception as exc:
        return [Check("google identity", False, f"no Google credentials ({exc}): run `gcloud auth "
                                                 "application-default login`, or give the runner pod Workload "
                                                 "Identity (annotate its service account iam.gke.io/"
                                                 "gcp-service-account=<google account>)")]
    who = getattr(credentials, "service_account_email", None) or type(credentials).__name__
    project = config.platform.gke.project  # type: ignore[union-attr]
    if http is None:
        from google.auth.transport.requests import AuthorizedSession

        http = AuthorizedSession(credentials)
    try:
        answer = http.post(f"{crm_url}/projects/{project}:testIamPermissions",
                           json={"permissions": [*NEEDED, FOR_UNEVEN_ZONES]}, timeout=30)
        granted = set((answer.json() or {}).get("permissions", [])) if answer.status_code < 400 else None
    except Exception as exc:
        return [Check("google identity", True, f"{who}: its permissions could not be asked ({exc})", warning=True)]
    if granted is None:
        return [Check("google identity", True, f"{who}: testIamPermissions answered {answer.status_code}; whether it "
                                                "may change the pool shows at the autoscale stage", warning=True)]
    missing = [p for p in NEEDED if p not in granted]
    if missing:
        return [Check("google identity", False, f"{who} lacks {', '.join(missing)} on project {project}: grant it "
                                                 "roles/container.clusterAdmin (or a custom role with them), or "
                                                 "remove autoscale.nodes")]
    checks = [Check("google identity", True, f"{who} may change node pools in project {project}")]
    if not pool.autoscaling.enabled and FOR_UNEVEN_ZONES not in granted and len(pool.locations) > 1:
        checks.append(Check("google identity", True, f"{who} lacks {FOR_UNEVEN_ZONES}: a pool found with uneven "
                                                      "zones could not be resized back zone by zone (grant "
                                                      "roles/compute.instanceAdmin.v1)", warning=True))
    return checks
