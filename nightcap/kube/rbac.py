"""Every Kubernetes permission a run uses, in one table (pure: no client, no I/O).

`deployments/k8s/rbac.yaml` grants exactly these (`nightcap render` writes it from this table), `nightcap preflight` asks
the API server about each one (SelfSubjectAccessReview) and prints the missing ones as rules to add, and the
Kubernetes tests check that every request the code makes is one of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One RBAC rule: `verbs` on `resource` (`pods/portforward` for a subresource) in API group `group`."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    why: str
    cluster: bool = False  # cluster-scoped (nodes): a ClusterRole, not the namespaced Role

    def yaml(self, verbs: tuple[str, ...] | None = None) -> str:
        """The rule as one line of a Role's `rules:` list."""
        words = ", ".join(f'"{v}"' for v in (verbs or self.verbs))
        return f'{{apiGroups: ["{self.group}"], resources: ["{self.resource}"], verbs: [{words}]}}'


OBJECT_VERBS = ("create", "get", "list", "patch", "delete")

RULES: tuple[Rule, ...] = (
    Rule("apps", "deployments", OBJECT_VERBS,
         "the model and Locust: create, get (rollout status), patch (scale, resources), list + delete (teardown)"),
    Rule("", "services", OBJECT_VERBS, "create, get + patch (adopt after a retried create), list + delete"),
    Rule("", "configmaps", OBJECT_VERBS, "the locustfile and payloads; as services"),
    Rule("autoscaling", "horizontalpodautoscalers", OBJECT_VERBS, "the autoscale stage; as services"),
    Rule("networking.k8s.io", "networkpolicies", OBJECT_VERBS, "who may reach the Locust master; as services"),
    Rule("", "secrets", ("create", "get", "patch", "delete"),
         "the target's API key for the Locust workers, by name only (never listed)"),
    Rule("", "pods", ("create", "get", "list"),
         "observe, rollout diagnosis, port-forward target; create only as preflight's dry run (admission judges Pods)"),
    Rule("", "pods/portforward", ("create", "get"), "reach the model and the Locust master from outside the cluster"),
    Rule("", "events", ("list",), "readiness probe failures, FailedScheduling in step rows"),
    Rule("metrics.k8s.io", "pods", ("get", "list"), "per-pod CPU and memory (metrics-server)"),
    Rule("", "nodes", ("get", "list"), "node count per node pool, allocatable CPU and memory", cluster=True),
)


def allowed(group: str, resource: str, verb: str) -> bool:
    """Is (group, resource, verb) one of the RULES?"""
    return any(r.group == group and r.resource == resource and verb in r.verbs for r in RULES)
