"""`nightcap preflight configs/gke.yaml` against the API mocks: the real `kubernetes` client against kmock (with
SelfSubjectAccessReview and dryRun=All), the real ClusterManagerClient against a fake GKE API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gke_api import FakeGke, serve
from kmock_api import KmockApi
from nightcap.cli import app
from nightcap.kube import manifests as mf

ROOT = Path(__file__).resolve().parents[2]
GKE_YAML = str(ROOT / "configs" / "gke.yaml")
POOL = "projects/my-project/locations/europe-west4/clusters/capacity/nodePools/models"
OPS = "projects/my-project/locations/europe-west4/operations"
E2_STANDARD_4 = {"cpu": "3920m", "memory": "13554796Ki"}  # what GKE allocates on e2-standard-4
RESOURCES = ["v1/pods", "v1/events", "v1/nodes", "v1/services", "v1/configmaps", "v1/secrets", "apps/v1/deployments",
             "autoscaling/v2/horizontalpodautoscalers", "networking.k8s.io/v1/networkpolicies",
             "metrics.k8s.io/v1beta1/pods"]


class Cluster(KmockApi):
    def nodes(self, n: int, pool: str = "models") -> None:
        for i in range(n):
            self.run(lambda i=i: self.kmock.objects.__setitem__(("v1/nodes", None, f"{pool}-{i}"), {
                "metadata": {"name": f"{pool}-{i}", "labels": {mf.NODE_POOL_LABEL: pool}},
                "status": {"allocatable": dict(E2_STANDARD_4)}}))

    def stored(self) -> list[Any]:
        return self.run(lambda: [k for k, o in self.kmock.objects.items() if not o.deleted and k[0].plural != "nodes"])


@pytest.fixture()
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    from google.auth.credentials import AnonymousCredentials

    c = Cluster(RESOURCES)
    c.kmock.namespaces = {"nightcap"}
    c.nodes(3)
    c.nodes(2, pool="load")  # the Locust pods' nodes: never the model's pool
    gke = FakeGke()
    gke.autoscaling = {}  # the pool does not autoscale by itself
    client, stop = serve(gke, POOL, OPS)
    monkeypatch.setattr("nightcap.kube.client.api_client_for", lambda platform: c.api)
    monkeypatch.setattr("nightcap.kube.gke.container_v1.ClusterManagerClient", lambda *a, **k: client)
    # the runner's Google identity (Application Default Credentials) and Resource Manager, answered by the fake
    monkeypatch.setattr("google.auth.default", lambda scopes=None: (AnonymousCredentials(), "my-project"))
    monkeypatch.setattr("nightcap.kube.preflight_gke.CRM_URL", gke.base_url + "/v1")
    c.gke = gke  # type: ignore[attr-defined]
    yield c
    stop()
    c.close()


def preflight(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["preflight", GKE_YAML, *args])
    return result.exit_code, result.output.splitlines()


def test_everything_present_exits_0_and_changes_nothing(cluster: Cluster) -> None:
    code, lines = preflight()
    assert code == 0, lines
    assert lines[-1] == "ready" and not [line for line in lines if line.startswith("FAIL")]
    names = [line[6:].split(":")[0] for line in lines[:-1]]
    assert names == ["credentials", "rbac", "metrics-server", "node pool", "network policy", "google identity",
                     "room", "network policies", "images", "images", "images", "namespace", "dry run"], lines
    assert any("autoscaling off" in line for line in lines)
    assert any("network policy: enforced (Dataplane V2)" in line for line in lines)
    assert any("canary.image python:3.12-slim" in line for line in lines)  # the canary's image is checked too
    # a Pod of each Deployment (model, canary, Locust master and worker) was judged by admission too
    pods = [r.data["metadata"]["name"] for r in cluster.run(lambda: list(cluster.kmock))
            if str(r.method.value).upper() == "POST" and str(r.url.path).endswith("/pods")]
    assert len(pods) == 4 and all(r.endswith("-preflight") for r in pods)
    # nothing was created: every POST was a dry run or an access review
    assert cluster.stored() == []
    posts = [r for r in cluster.run(lambda: list(cluster.kmock)) if str(r.method.value).upper() == "POST"]
    assert posts and all(r.params.get("dryRun") == "All" or "selfsubjectaccessreviews" in str(r.url.path)
                         for r in posts)
    # the GKE side was only read (testIamPermissions asks, it changes nothing)
    assert [p for m, p, _ in cluster.gke.requests if m == "POST"] == [  # type: ignore[attr-defined]
        "/v1/projects/my-project:testIamPermissions"]


def test_a_missing_verb_is_one_line_with_the_rule_to_add(cluster: Cluster) -> None:
    cluster.kmock.denied = {("", "secrets", "delete"), ("", "secrets", "patch")}
    code, lines = preflight()
    assert code == 1
    fails = [line for line in lines if line.startswith("FAIL")]
    assert fails == ['FAIL  rbac: missing patch, delete on secrets (the target\'s API key for the Locust workers, by '
                     'name only (never listed)): add to the Role in namespace nightcap bound to this identity: '
                     '{apiGroups: [""], resources: ["secrets"], verbs: ["patch", "delete"]} '
                     '(deployments/k8s/rbac.yaml has them all)']
    assert lines[-1] == "not ready: 1 problem(s) to fix"


def test_a_missing_metrics_server_is_one_line(cluster: Cluster) -> None:
    cluster.run(lambda: cluster.kmock.resources.__delitem__("metrics.k8s.io/v1beta1/pods"))
    code, lines = preflight()
    assert code == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL  metrics-server: metrics.k8s.io is not served, so per-pod CPU and the HPA have no data: install "
        "metrics-server (kubectl get apiservice v1beta1.metrics.k8s.io)"]


def test_a_node_pool_too_small_for_scaling_max_replicas_is_one_line(cluster: Cluster) -> None:
    for name in ("models-1", "models-2"):
        cluster.run(lambda name=name: cluster.kmock.objects.__delitem__(("v1/nodes", None, name)))
    code, lines = preflight()
    assert code == 1
    # one e2-standard-4 holds three 1-CPU model pods (the Locust pods are on the load pool)
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL  room: node pool models (1 node(s), the largest allocating 3920m CPU and 12.9Gi) holds 3 pod(s) of "
        "cpu 1, memory 1Gi; scaling.max_replicas is 4: add 1 node(s) to node pool models, or lower "
        "scaling.max_replicas to 3, or platform.cpu"]
    # the same pool autoscaling up to 3 nodes has the room
    cluster.gke.autoscaling = {"enabled": True, "minNodeCount": 1, "maxNodeCount": 3}  # type: ignore[attr-defined]
    code, lines = preflight()
    assert code == 0, lines


def test_a_missing_namespace_a_bad_image_and_a_missing_pool_say_what_to_change(cluster: Cluster) -> None:
    code, lines = preflight("--set", "platform.namespace=capacity", "--set", "target.image=Not An Image",
                            "--set", "platform.gke.node_pool=gone")
    assert code == 1
    fails = "\n".join(line for line in lines if line.startswith("FAIL"))
    assert "namespace capacity does not exist: `kubectl create namespace capacity`, or set platform.namespace" in fails
    assert "target.image 'Not An Image' is not an image reference" in fails
    assert "Check platform.gke project, location, cluster and node_pool" in fails
    assert "node pool gone has no schedulable node" in fails


def test_unreachable_cluster_and_bad_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from nightcap.platforms.base import PlatformError

    def refuse(platform: Any) -> Any:
        raise PlatformError("cannot load Kubernetes credentials from kubeconfig context 'x': no such context")

    monkeypatch.setattr("nightcap.kube.client.api_client_for", refuse)
    code, lines = preflight()
    assert code == 1 and lines[0].startswith("FAIL  credentials: cannot load Kubernetes credentials")
    bad = tmp_path / "bad.yaml"
    bad.write_text("target: {name: x, kind: reference}\nslo: {p95_ms: 0}\n")
    result = CliRunner().invoke(app, ["preflight", str(bad)])
    assert result.exit_code == 2
    local = tmp_path / "local.yaml"
    local.write_text("target: {name: x, kind: reference}\nslo: {p95_ms: 100}\n")
    result = CliRunner().invoke(app, ["preflight", str(local)])
    assert result.exit_code == 0 and "no cluster to check" in result.output


# --- what admission, the cluster and Google answer (simulated from their documented responses) -------------

PSS_DENIAL = ('pods "{name}" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != '
              'false (container "model" must set securityContext.allowPrivilegeEscalation=false), runAsNonRoot != '
              'true (pod or container "model" must set securityContext.runAsNonRoot=true)')


def _admission(cluster: Cluster, judge: Any) -> None:
    """Answer pod dry runs as the API server's admission would: `judge(pod)` is None (admit) or a message."""
    cluster.kmock.admission = judge


def _restricted(pod: dict[str, Any]) -> str | None:
    """The restricted profile's runAsNonRoot, seccomp, privilege escalation and capabilities rules."""
    spec = pod["spec"]
    for c in spec["containers"]:
        sc = c.get("securityContext") or {}
        if (sc.get("allowPrivilegeEscalation") is not False or "ALL" not in (sc.get("capabilities") or {}).get("drop", [])
                or not (spec.get("securityContext") or {}).get("runAsNonRoot")
                or (spec.get("securityContext") or {}).get("seccompProfile", {}).get("type") != "RuntimeDefault"):
            return PSS_DENIAL.format(name=pod["metadata"]["name"])
    return None


def _cpu_limits_quota(pod: dict[str, Any]) -> str | None:
    """A ResourceQuota on limits.cpu: a container without a CPU limit is refused (the documented message)."""
    missing = [c["name"] for c in pod["spec"]["containers"] if "cpu" not in (c.get("resources") or {}).get("limits", {})]
    if missing:
        return f'pods "{pod["metadata"]["name"]}" is forbidden: failed quota: compute: must specify limits.cpu for: ' \
               + ",".join(missing)
    return None


def test_a_restricted_namespace_and_a_cpu_quota_admit_the_pods(cluster: Cluster) -> None:
    _admission(cluster, lambda pod: _restricted(pod) or _cpu_limits_quota(pod))
    code, lines = preflight()
    assert code == 0, [line for line in lines if line.startswith("FAIL")]
    # a control: the old pods (only allowPrivilegeEscalation set, Locust without a CPU limit) are refused
    old = {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "locust", "securityContext": {"allowPrivilegeEscalation": False},
         "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}}]}}
    assert _restricted(old) and _cpu_limits_quota(old)


def test_a_pod_refused_by_admission_is_one_line_saying_what_refused_it(cluster: Cluster) -> None:
    """Deployments pass a dry run whatever their pods are; only a Pod meets PodSecurity and quotas."""
    _admission(cluster, lambda pod: PSS_DENIAL.format(name=pod["metadata"]["name"]) if "canary" in
               pod["metadata"]["name"] else None)
    code, lines = preflight()
    fails = [line for line in lines if line.startswith("FAIL")]
    assert code == 1 and len(fails) == 1, fails
    assert fails[0].startswith("FAIL  dry run: Pod/nc-wine-classifier-canary-") and "refused by admission" in fails[0]
    assert "violates PodSecurity" in fails[0] and "platform.kubernetes.run_as_user" in fails[0]
    assert "RBAC" not in fails[0]
    _admission(cluster, lambda pod: f'pods "{pod["metadata"]["name"]}" is forbidden: exceeded quota: compute, '
                                    'requested: limits.cpu=2, used: limits.cpu=3, limited: limits.cpu=4')
    code, lines = preflight()
    fails = [line for line in lines if line.startswith("FAIL")]
    assert len(fails) == 4 and all("ResourceQuota" in f and "tune.cpu" in f for f in fails)


def test_taints_a_default_deny_policy_and_no_enforcement_are_each_one_line(cluster: Cluster) -> None:
    cluster.run(lambda: cluster.kmock.objects["v1/nodes", None, "models-0"].patch(
        {"spec": {"taints": [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]}}))
    cluster.run(lambda: cluster.kmock.objects.__setitem__(
        ("networking.k8s.io/v1/networkpolicies", "nightcap", "default-deny-egress"),
        {"metadata": {"name": "default-deny-egress", "namespace": "nightcap"},
         "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}))
    cluster.gke.cluster = {"name": "c1"}  # type: ignore[attr-defined]  # no Dataplane V2, no enforcement
    code, lines = preflight("--set", "platform.in_cluster=true")
    text = "\n".join(lines)
    assert "taints: 1 node(s) of node pool models have taints the pods do not tolerate (dedicated=ml:NoSchedule)" in text
    assert "add platform.kubernetes.tolerations" in text
    assert "FAIL  network policy: the cluster does not enforce NetworkPolicy" in text
    denied = [line for line in lines if line.startswith("FAIL  network policies")]
    assert len(denied) == 3 and all("NetworkPolicy default-deny-egress isolates the Locust workers (egress)" in d
                                    for d in denied)
    assert any("to DNS (53/UDP)" in d for d in denied) and any("to the model's pods (8080/TCP)" in d for d in denied)
    assert code == 1


def test_autopilot_and_a_missing_google_permission_say_what_to_change(cluster: Cluster) -> None:
    cluster.gke.granted = {"container.operations.get"}  # type: ignore[attr-defined]
    code, lines = preflight()
    fails = [line for line in lines if line.startswith("FAIL")]
    assert fails == ["FAIL  google identity: AnonymousCredentials lacks container.clusters.update on project my-project: "
                     "grant it roles/container.clusterAdmin (or a custom role with them), or remove autoscale.nodes"]
    cluster.gke.cluster = {"name": "c1", "autopilot": {"enabled": True}}  # type: ignore[attr-defined]
    code, lines = preflight()
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL  autopilot: the cluster is Autopilot: it has no node pool nightcap may change; remove autoscale.nodes "
        "(Autopilot adds nodes for pending pods itself)"]
