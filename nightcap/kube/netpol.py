"""Would a namespace's NetworkPolicies let a connection through? (pure: the policies as listed, no API calls)

Kubernetes' rules: a pod is isolated for ingress (egress) when some policy selects it with that policy type;
an isolated pod's connection is allowed when some such policy has a rule whose peers and ports match it, and
policies only add up. A peer is a pod selector (in the policy's namespace), a namespace selector, both (pods
in those namespaces), or an IP block. Without reading Namespace objects (the run may not), a namespace
selector can be judged only on `kubernetes.io/metadata.name`; IP blocks cannot be judged against pods at all:
such rules make the answer "unknown", never a guess.
"""

from __future__ import annotations

from typing import Any

NAMESPACE_NAME = "kubernetes.io/metadata.name"
ALLOWED, DENIED, UNKNOWN = "allowed", "denied", "unknown"


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool | None:
    """Does a LabelSelector match `labels`? None (unknown) when it asks about a key `labels` does not know and
    `labels` is partial (marked by the key "*": namespaces whose other labels we cannot read)."""
    if selector is None:
        return True
    partial = "*" in labels
    for key, value in (selector.get("matchLabels") or {}).items():
        if key not in labels and partial:
            return None
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if key not in labels and partial:
            return None
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def policy_types(policy: dict[str, Any]) -> list[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress"] + (["Egress"] if "egress" in spec else [])


def _ports_match(ports: list[dict[str, Any]] | None, port: int, protocol: str, named: dict[str, int]) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        value = p.get("port")
        if value is None:
            return True
        if isinstance(value, int) and value <= port <= int(p.get("endPort") or value):
            return True
        if isinstance(value, str) and named.get(value) == port:
            return True
    return False


def _peer_matches(peer: dict[str, Any], policy_ns: str, peer_ns: str, peer_labels: dict[str, str]) -> bool | None:
    if "ipBlock" in peer:
        return None
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        in_ns: bool | None = peer_ns == policy_ns
    else:
        in_ns = selects(ns_selector, {NAMESPACE_NAME: peer_ns, "*": ""})
    if in_ns is False:
        return False
    pod_ok = selects(peer.get("podSelector"), peer_labels)
    if pod_ok is False:
        return False
    return None if in_ns is None or pod_ok is None else True


def verdict(policies: list[dict[str, Any]], namespace: str, direction: str, pod_labels: dict[str, str],
            peer_ns: str, peer_labels: dict[str, str], port: int, protocol: str = "TCP",
            named_ports: dict[str, int] | None = None) -> tuple[str, list[str]]:
    """(allowed | denied | unknown, names of the policies isolating the pod) for one connection: `direction`
    "Ingress" (the peer connects to the pod's `port`) or "Egress" (the pod connects to the peer's `port`)."""
    key = "ingress" if direction == "Ingress" else "egress"
    side = "from" if direction == "Ingress" else "to"
    isolating = [p for p in policies if direction in policy_types(p)
                 and selects((p.get("spec") or {}).get("podSelector") or {}, pod_labels)]
    if not isolating:
        return ALLOWED, []
    unknown = False
    for policy in isolating:
        for rule in (policy.get("spec") or {}).get(key) or []:
            if not _ports_match(rule.get("ports"), port, protocol, named_ports or {}):
                continue
            peers = rule.get(side)
            if not peers:
                return ALLOWED, []
            for peer in peers:
                match = _peer_matches(peer, policy["metadata"].get("namespace", namespace), peer_ns, peer_labels)
                if match:
                    return ALLOWED, []
                unknown = unknown or match is None
    names = [p["metadata"]["name"] for p in isolating]
    return (UNKNOWN if unknown else DENIED), names
