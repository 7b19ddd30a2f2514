"""What every pod nightcap creates carries, decided in one place (pure: plain dicts, no API calls).

- Pod Security: each pod passes the `restricted` Pod Security Standard as written (non-root, RuntimeDefault
  seccomp, no privilege escalation, every capability dropped), so a namespace that enforces it admits them.
- Placement: the model on its node pool (`platform.kubernetes.model_node_selector`, else the GKE pool's
  label); Locust kept off the model's nodes (required node anti-affinity to that pool, and required pod
  anti-affinity to every nightcap model pod), and marked `safe-to-evict: "false"` so the scale-down the
  autoscale stage provokes cannot evict the generator mid-measurement. Tolerations and imagePullSecrets
  as configured.
- Probes: a startupProbe bounded by `target.startup_timeout_s` (a slow model load is a start, not a failing
  probe), then a readiness probe slow to give up: under the deliberate overload `/ping` queues behind
  `/invocations` on the same workers, and a pod that left the Service would both hide the overload and read
  as 0% CPU to the HPA.
"""

from __future__ import annotations

import math
from typing import Any

from nightcap.config import Config

NODE_POOL_LABEL = "cloud.google.com/gke-nodepool"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
HOSTNAME = "kubernetes.io/hostname"
STARTUP_PERIOD_S = 2
READY_PERIOD_S = 5
READY_FAILURES = 6  # 30 s without one answer before a pod leaves the Service

Manifest = dict[str, Any]


def pod_security(config: Config) -> Manifest:
    """The pod-level securityContext of the `restricted` profile (runAsNonRoot, seccomp RuntimeDefault)."""
    sc: Manifest = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    uid = config.platform.kubernetes.run_as_user
    if uid is not None:
        sc.update(runAsUser=uid, runAsGroup=uid)
    return sc


def container_security() -> Manifest:
    """The container-level part of `restricted`: no privilege escalation, all capabilities dropped."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def model_node_selector(config: Config) -> dict[str, str]:
    """Where the model pods go: the configured selector, else the GKE pool the run sizes and autoscales."""
    k = config.platform.kubernetes
    if k.model_node_selector:
        return dict(k.model_node_selector)
    gke = config.platform.gke
    return {NODE_POOL_LABEL: gke.node_pool} if gke else {}


def model_pool(config: Config) -> str | None:
    """The node pool the model runs on, when one is known (its nodes are the ones the run counts)."""
    return model_node_selector(config).get(NODE_POOL_LABEL)


def tolerations(config: Config) -> list[Manifest]:
    out = []
    for t in config.platform.kubernetes.tolerations:
        item: Manifest = {"operator": t.operator}
        for key, value in (("key", t.key), ("value", t.value), ("effect", t.effect),
                           ("tolerationSeconds", t.toleration_seconds)):
            if value is not None:
                item[key] = value
        out.append(item)
    return out


def common_pod_spec(config: Config) -> Manifest:
    """What every pod spec gets: security context, tolerations, pull secrets, no API token."""
    spec: Manifest = {"automountServiceAccountToken": False, "securityContext": pod_security(config)}
    tol = tolerations(config)
    if tol:
        spec["tolerations"] = tol
    secrets = config.platform.kubernetes.image_pull_secrets
    if secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in secrets]
    return spec


def model_placement(config: Config) -> Manifest:
    selector = model_node_selector(config)
    return {"nodeSelector": selector} if selector else {}


def generator_placement(config: Config, model_labels: dict[str, str]) -> Manifest:
    """Locust apart from the model: never on a node of the model's pool, never beside a model pod."""
    out: Manifest = {}
    if config.platform.kubernetes.generator_node_selector:
        out["nodeSelector"] = dict(config.platform.kubernetes.generator_node_selector)
    affinity: Manifest = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": dict(model_labels)}, "topologyKey": HOSTNAME}]}}
    away = model_node_selector(config)
    if away:
        affinity["nodeAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": k, "operator": "NotIn", "values": [v]} for k, v in sorted(away.items())]}]}}
    out["affinity"] = affinity
    return out


def model_probes(config: Config) -> Manifest:
    """startupProbe bounded by target.startup_timeout_s; readiness that outlasts a deliberate overload."""
    t = config.target
    get = {"httpGet": {"path": t.ready_path, "port": "http"}}
    return {
        "startupProbe": {**get, "periodSeconds": STARTUP_PERIOD_S, "timeoutSeconds": 2,
                         "failureThreshold": max(1, math.ceil(t.startup_timeout_s / STARTUP_PERIOD_S)),
                         "successThreshold": 1},
        "readinessProbe": {**get, "periodSeconds": READY_PERIOD_S,
                           "timeoutSeconds": max(2, min(60, math.ceil(t.request_timeout_s))),
                           "failureThreshold": READY_FAILURES, "successThreshold": 1},
    }


def rollout_timeout_s(config: Config) -> float:
    """How long a model rollout may take: scheduling and pulls (platform.ready_timeout_s), then the model's
    load, which the startupProbe bounds (target.startup_timeout_s)."""
    return config.platform.ready_timeout_s + config.target.startup_timeout_s


def pod_from(deployment: Manifest, suffix: str = "preflight") -> Manifest:
    """A Pod of a Deployment's template, for a server-side dry run: PodSecurity admission, ResourceQuota and
    LimitRange judge Pods, not Deployments, so only a Pod tells whether the ReplicaSet could create one."""
    template = deployment["spec"]["template"]
    meta = deployment["metadata"]
    pod_meta: Manifest = {"name": f"{meta['name']}-{suffix}"[:63].rstrip("-"), "namespace": meta["namespace"],
                          "labels": dict(template["metadata"].get("labels") or {})}
    if template["metadata"].get("annotations"):
        pod_meta["annotations"] = dict(template["metadata"]["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template["spec"]}
