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
from nightcap.platforms import manifests as mf

ROOT = Path(__file__).resolve().parents[1]
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
    c = Cluster(RESOURCES)
    c.kmock.namespaces = {"nightcap"}
    c.nodes(3)
    gke = FakeGke()
    gke.autoscaling = {}  # the pool does not autoscale by itself
    client, stop = serve(gke, POOL, OPS)
    monkeypatch.setattr("nightcap.platforms.kube_client.api_client_for", lambda platform: c.api)
    monkeypatch.setattr("nightcap.platforms.gke.container_v1.ClusterManagerClient", lambda *a, **k: client)
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
    names = [line.split(":")[0].split()[-1] for line in lines[:-1]]
    assert names == ["credentials", "rbac", "metrics-server", "pool", "room", "images", "images", "namespace", "run"]
    assert any("autoscaling off" in line for line in lines)
    # nothing was created: every POST was a dry run or an access review
    assert cluster.stored() == []
    posts = [r for r in cluster.run(lambda: list(cluster.kmock)) if str(r.method.value).upper() == "POST"]
    assert posts and all(r.params.get("dryRun") == "All" or "selfsubjectaccessreviews" in str(r.url.path)
                         for r in posts)
    assert not any(m == "POST" for m, _, _ in cluster.gke.requests)  # type: ignore[attr-defined]


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
    cluster.run(lambda: cluster.kmock.objects.__delitem__(("v1/nodes", None, "models-2")))
    code, lines = preflight()
    assert code == 1
    # 5 Locust pods (4 workers + master, 1 CPU each) leave room for one 1-CPU model pod on two e2-standard-4
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL  room: node pool models (2 node(s), the largest allocating 3920m CPU and 12.9Gi) holds 1 pod(s) of "
        "cpu 1, memory 1Gi beside 5 Locust pod(s) of 1 CPU; scaling.max_replicas is 4: add 1 node(s) to node pool "
        "models, or lower scaling.max_replicas to 1, or platform.cpu"]
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

    monkeypatch.setattr("nightcap.platforms.kube_client.api_client_for", refuse)
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
