"""deployments/k8s/rbac.yaml grants exactly what nightcap/kube/rbac.py says a run uses."""

from __future__ import annotations

from pathlib import Path

import yaml

from kmock_api import rbac_access
from nightcap.kube.rbac import RULES, allowed

RBAC_YAML = Path(__file__).resolve().parents[2] / "deployments" / "k8s" / "rbac.yaml"


def _granted(kind: str) -> set[tuple[str, str, str]]:
    """What the runner's Role (or ClusterRole) grants; the Prefect worker's Role is its own."""
    docs = [d for d in yaml.safe_load_all(RBAC_YAML.read_text()) if d and d["kind"] == kind
            and d["metadata"]["name"].startswith("nightcap-")]
    return {(g, r, v) for d in docs for rule in d["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_rbac_yaml_grants_exactly_the_table() -> None:
    want_ns = {(r.group, r.resource, v) for r in RULES if not r.cluster for v in r.verbs}
    want_cluster = {(r.group, r.resource, v) for r in RULES if r.cluster for v in r.verbs}
    assert _granted("Role") == want_ns
    assert _granted("ClusterRole") == want_cluster


def test_secrets_are_never_listed() -> None:
    assert not allowed("", "secrets", "list") and not allowed("", "secrets", "watch")


def test_request_paths_map_to_rbac_terms() -> None:
    assert rbac_access("GET", "/apis/apps/v1/namespaces/ns/deployments/x") == ("apps", "deployments", "get")
    assert rbac_access("GET", "/apis/apps/v1/namespaces/ns/deployments") == ("apps", "deployments", "list")
    assert rbac_access("POST", "/api/v1/namespaces/ns/secrets") == ("", "secrets", "create")
    assert rbac_access("GET", "/api/v1/namespaces/ns/pods/p/portforward") == ("", "pods/portforward", "get")
    assert rbac_access("GET", "/api/v1/nodes") == ("", "nodes", "list")
    assert rbac_access("DELETE", "/api/v1/namespaces/ns/secrets/k") == ("", "secrets", "delete")
    assert rbac_access("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods") == ("metrics.k8s.io", "pods", "list")


def test_the_prefect_worker_may_run_jobs_but_not_read_secrets() -> None:
    docs = [d for d in yaml.safe_load_all(RBAC_YAML.read_text()) if d]
    (worker,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "prefect-worker"]
    granted = {(g, r, v) for rule in worker["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert ("batch", "jobs", "create") in granted and ("", "pods/log", "get") in granted
    assert not any(r == "secrets" for _, r, _ in granted)
