"""What runs the flow in the cluster: its RBAC (and the Prefect worker's), a volume for reports, and the Job
manifest for a Prefect Kubernetes work pool (pure: plain dicts).

Why the Job looks as it does:
- the container runs `python -m prefect.engine` itself (PID 1): `prefect flow-run execute` would run the flow
  in a child process, which the kubelet's SIGTERM never reaches (and which the supervisor kills 30 s after
  its own SIGTERM); so SIGTERM reaches the flow, whose handler starts the teardown;
- `terminationGracePeriodSeconds` covers the longest teardown (`teardown_bound_s`: Locust, deletions and
  two GKE operations), instead of the default 30 s; `backoffLimit: 0` (a new attempt is a new run, and the
  next run's start sweeps what an evicted one left);
- the pod carries `nightcap.io/runner: "true"` (the label the Locust master's NetworkPolicy admits) and
  `safe-to-evict: "false"`, stays off the model's pool, and has CPU and memory requests = limits;
- reports go to a PersistentVolumeClaim mounted at /reports (a pod's own disk dies with it).
"""

from __future__ import annotations

from typing import Any

from nightcap.config import Config
from nightcap.kube import pods, manifests as mf
from nightcap.kube.rbac import RULES

RUNNER_ACCOUNT = "nightcap"
WORKER_ACCOUNT = "prefect-worker"
REPORTS_CLAIM = "nightcap-reports"
REPORTS_MOUNT = "/reports"
RUNNER_RESOURCES = {"cpu": "1", "memory": "2Gi"}
LOCUST_STOP_S = 60.0  # KubernetesLocust._wait_gone
DELETIONS_S = 120.0  # API deletes with retries, a generous bound
# what the Prefect Kubernetes worker does with jobs (the prefect-worker Helm chart's Role)
WORKER_RULES = (
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "update", "patch",
                                                               "delete"]},
    {"apiGroups": [""], "resources": ["pods", "pods/log", "pods/status"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
)


def teardown_bound_s(config: Config) -> int:
    """The longest a teardown may take: stopping Locust, deletions, and (with GKE) two pool operations."""
    from nightcap.kube.gke import GkeNodePools

    gke = 2 * GkeNodePools.operation_timeout_s if config.platform.gke and config.autoscale.nodes else 0.0
    return int(LOCUST_STOP_S + DELETIONS_S + gke)


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {mf.NAME: "nightcap", mf.PART_OF: "nightcap",
                                                       mf.COMPONENT: "runner"}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def rbac_objects(config: Config) -> list[dict[str, Any]]:
    """The runner's ServiceAccount, Role and ClusterRole (exactly `rbac.RULES`), the Prefect worker's account
    and Role (jobs and their pods), and the reports' PersistentVolumeClaim."""
    ns = config.platform.namespace
    rules = [{"apiGroups": [r.group], "resources": [r.resource], "verbs": list(r.verbs)} for r in RULES if not r.cluster]
    cluster_rules = [{"apiGroups": [r.group], "resources": [r.resource], "verbs": list(r.verbs)} for r in RULES
                     if r.cluster]

    def binding(kind: str, name: str, account: str) -> dict[str, Any]:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": f"{kind}Binding",
                "metadata": _meta(name, ns if kind == "Role" else None),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]}

    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(RUNNER_ACCOUNT, ns),
         "automountServiceAccountToken": True},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta("nightcap-runner", ns),
         "rules": rules},
        binding("Role", "nightcap-runner", RUNNER_ACCOUNT),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta("nightcap-nodes-read"),
         "rules": cluster_rules},
        binding("ClusterRole", "nightcap-nodes-read", RUNNER_ACCOUNT),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(WORKER_ACCOUNT, ns)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(WORKER_ACCOUNT, ns),
         "rules": [dict(r) for r in WORKER_RULES]},
        binding("Role", WORKER_ACCOUNT, WORKER_ACCOUNT),
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(REPORTS_CLAIM, ns),
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}},
    ]


def prefect_job(config: Config) -> dict[str, Any]:
    """The `job_manifest` of a Prefect Kubernetes work pool's base job template (`{{ }}` are the pool's
    default variables, filled by the worker)."""
    model = {mf.MANAGED_BY: mf.MANAGER, mf.COMPONENT: mf.MODEL}
    placement = pods.generator_placement(config, model)
    spec: dict[str, Any] = {
        **pods.common_pod_spec(config),
        "automountServiceAccountToken": True,  # the runner talks to the API server
        "restartPolicy": "Never",
        "serviceAccountName": "{{ service_account_name }}",
        "terminationGracePeriodSeconds": teardown_bound_s(config),
        "containers": [{
            "name": "prefect-job",
            "image": "{{ image }}",
            "imagePullPolicy": "{{ image_pull_policy }}",
            "env": "{{ env }}",
            "command": ["python", "-m", "prefect.engine"],
            "resources": {"requests": dict(RUNNER_RESOURCES), "limits": dict(RUNNER_RESOURCES)},
            "securityContext": pods.container_security(),
            "volumeMounts": [{"name": "reports", "mountPath": REPORTS_MOUNT}],
        }],
        "volumes": [{"name": "reports", "persistentVolumeClaim": {"claimName": REPORTS_CLAIM}}],
        **placement,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"labels": "{{ labels }}", "namespace": "{{ namespace }}", "generateName": "{{ name }}-"},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": "{{ finished_job_ttl }}",
            "template": {
                "metadata": {"labels": {mf.RUNNER_LABEL: "true", mf.PART_OF: "nightcap"},
                             "annotations": {pods.SAFE_TO_EVICT: "false"}},
                "spec": spec,
            },
        },
    }
