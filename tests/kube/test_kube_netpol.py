"""The NetworkPolicy reading preflight uses (pure): Kubernetes' isolation and union rules, and "unknown" where
a rule cannot be judged without Namespace objects or pod IPs."""

from __future__ import annotations

from nightcap.kube.netpol import ALLOWED, DENIED, UNKNOWN, verdict

NS = "nightcap"
WORKER = {"app.kubernetes.io/component": "locust-worker"}
MODEL = {"app.kubernetes.io/component": "model"}


def policy(name: str, spec: dict) -> dict:
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


def test_unselected_pods_are_not_isolated() -> None:
    p = policy("only-db", {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Egress"]})
    assert verdict([p], NS, "Egress", WORKER, NS, MODEL, 8080) == (ALLOWED, [])


def test_a_default_deny_isolates_and_another_policy_can_admit() -> None:
    deny = policy("default-deny", {"podSelector": {}, "policyTypes": ["Egress"]})
    assert verdict([deny], NS, "Egress", WORKER, NS, MODEL, 8080) == (DENIED, ["default-deny"])
    allow = policy("to-model", {"podSelector": {"matchLabels": WORKER}, "policyTypes": ["Egress"],
                                "egress": [{"to": [{"podSelector": {"matchLabels": MODEL}}],
                                            "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}]}]})
    assert verdict([deny, allow], NS, "Egress", WORKER, NS, MODEL, 8080)[0] == ALLOWED
    assert verdict([deny, allow], NS, "Egress", WORKER, NS, MODEL, 9090)[0] == DENIED
    assert verdict([deny, allow], NS, "Egress", WORKER, "kube-system", {"k8s-app": "kube-dns"}, 53, "UDP")[0] == DENIED


def test_namespace_selectors_by_name_are_judged_others_are_unknown() -> None:
    dns = policy("dns", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
         "ports": [{"protocol": "UDP", "port": 53}]}]})
    assert verdict([dns], NS, "Egress", WORKER, "kube-system", {"k8s-app": "kube-dns"}, 53, "UDP")[0] == ALLOWED
    labelled = policy("team", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": {"matchLabels": {"team": "infra"}}}]}]})
    assert verdict([labelled], NS, "Egress", WORKER, "kube-system", {}, 53, "UDP")[0] == UNKNOWN
    ip = policy("ip", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]})
    assert verdict([ip], NS, "Egress", WORKER, NS, MODEL, 8080)[0] == UNKNOWN


def test_a_peer_without_namespace_selector_is_in_the_policys_namespace() -> None:
    """Why the runner rule names its namespace: a podSelector alone never admits a pod of another namespace."""
    master = {"app.kubernetes.io/component": "locust-master"}
    runner = {"nightcap.io/runner": "true"}
    rule = {"podSelector": {"matchLabels": master}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": runner}}], "ports": [{"port": 8089}]}]}
    assert verdict([policy("m", rule)], NS, "Ingress", master, "prefect", runner, 8089)[0] == DENIED
    named = {**rule, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "prefect"}}, "podSelector": {"matchLabels": runner}}], "ports": [{"port": 8089}]}]}
    assert verdict([policy("m", named)], NS, "Ingress", master, "prefect", runner, 8089)[0] == ALLOWED
