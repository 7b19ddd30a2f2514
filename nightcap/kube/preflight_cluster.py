"""Preflight's reading of the cluster itself: room on the nodes the pods may use (taints, selectors, the Locust
pods kept off the model's pool), the namespace's own NetworkPolicies, and the runner pod's labels.

Read only, like all of preflight. Each function returns `Check`s; a failed one says what to change.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nightcap.config import Config
from nightcap.kube import pods as kube_pods, manifests as mf
from nightcap.kube.client import Kube, KubeApiError
from nightcap.kube import manifests_locust as locust_mf
from nightcap.kube.manifests_locust import runner_namespace
from nightcap.kube.netpol import ALLOWED, DENIED, verdict
from nightcap.kube.preflight_check import Check
from nightcap.quantities import QuantityError, format_cpu, format_memory, parse_cpu, parse_memory

LOCUST_POD = (1.0, 2**30)  # each Locust pod's request (manifests_locust.LOCUST_RESOURCES)
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass
class Node:
    name: str
    labels: dict[str, str]
    taints: list[dict[str, Any]]
    cpu: float
    memory: int


def _nodes(items: list[dict[str, Any]]) -> list[Node]:
    out = []
    for n in items:
        if (n.get("spec") or {}).get("unschedulable"):
            continue
        alloc = (n.get("status") or {}).get("allocatable") or {}
        try:
            cpu, mem = parse_cpu(alloc.get("cpu", "0")), parse_memory(alloc.get("memory", "0"))
        except QuantityError:
            continue
        meta = n.get("metadata") or {}
        out.append(Node(meta.get("name", "?"), dict(meta.get("labels") or {}),
                        list((n.get("spec") or {}).get("taints") or []), cpu, mem))
    return out


def tolerated(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    """Kubernetes' matching: Exists with no key tolerates all; else key (and value for Equal) and effect."""
    if taint.get("effect") == "PreferNoSchedule":
        return True  # a preference: the scheduler may still place the pod there
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t["key"] == taint.get("key")):
            return True
        if t.get("operator", "Equal") == "Equal" and t.get("key") == taint.get("key") \
                and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _untolerated(node: Node, tolerations: list[dict[str, Any]]) -> list[str]:
    return [f"{t.get('key')}={t.get('value', '')}:{t.get('effect')}" for t in node.taints if not tolerated(t, tolerations)]


def _fits(node: tuple[float, int], cpu: float | None, memory: int | None) -> int:
    """How many pods of this request one node's allocatable holds (requests = limits)."""
    by_cpu = math.floor(node[0] / cpu + 1e-9) if cpu else 10**6
    by_mem = math.floor(node[1] / memory) if memory else 10**6
    return min(by_cpu, by_mem)


def _matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def room(config: Config, kube: Kube, pool: Any) -> list[Check]:
    """Room for the largest tuning candidate and for the run's pods, on the nodes each may use: the model's on
    nodes its selector picks, Locust's on the others, and only nodes whose taints the pods tolerate."""
    p = config.platform
    try:
        nodes = _nodes(kube.nodes())
    except KubeApiError as exc:
        return [Check("room", False, f"nodes could not be read ({exc})")]
    tol = kube_pods.tolerations(config)
    model_sel = kube_pods.model_node_selector(config)
    where = "node pool " + model_sel[mf.NODE_POOL_LABEL] if mf.NODE_POOL_LABEL in model_sel else (
        f"nodes labelled {mf.selector_string(model_sel)}" if model_sel else "the cluster")
    checks: list[Check] = []
    tainted = {n.name: bad for n in nodes if (bad := _untolerated(n, tol))}
    usable = [n for n in nodes if n.name not in tainted]
    model_nodes = [n for n in usable if _matches(n.labels, model_sel)]
    excluded = sorted({t for n in nodes if _matches(n.labels, model_sel) for t in tainted.get(n.name, [])})
    if excluded:
        checks.append(Check("taints", True, f"{sum(1 for n in nodes if n.name in tainted and _matches(n.labels, model_sel))} "
                             f"node(s) of {where} have taints the pods do not tolerate ({', '.join(excluded)}): they "
                             "are not counted; add platform.kubernetes.tolerations to use them", warning=True))
    if not model_nodes:
        return checks + [Check("room", False, f"{where} has no schedulable node the model pods may use: add nodes" +
                                (", tolerate their taints (platform.kubernetes.tolerations)" if excluded else "") +
                                (" (or fix platform.gke.node_pool / platform.kubernetes.model_node_selector)"
                                 if model_sel else ""))]
    shapes = [(n.cpu, n.memory) for n in model_nodes]
    shape = max(shapes)
    size = f"{len(shapes)} node(s), the largest allocating {format_cpu(shape[0])} CPU and {shape[1] / 2**30:.1f}Gi"
    too_large = _largest_pod_check(config, where, size, shapes)
    if too_large:
        checks.append(too_large)
    left = list(shapes)
    locust = config.load.workers + 1 if config.generator_site == "cluster" else 0
    if locust:
        problem = _place_locust(config, usable, model_sel, left, locust)
        if problem:
            return checks + [Check("room", False, problem)]
    grows = ""
    if pool is not None and pool.autoscaling.enabled:
        a = pool.autoscaling
        top = a.total_max_node_count or a.max_node_count * max(len(pool.locations), 1)
        left += [shape] * max(top - len(shapes), 0)
        grows = f" (the pool autoscales to {len(left)} nodes)"
    fit = sum(_fits(n, p.cpu, p.memory) for n in left)
    want = config.scaling.max_replicas if "scaling" in config.stages else p.replicas
    key = "scaling.max_replicas" if "scaling" in config.stages else "platform.replicas"
    pod = f"cpu {format_cpu(p.cpu) if p.cpu else 'unlimited'}, memory {format_memory(p.memory) if p.memory else 'unlimited'}"
    if fit < want:
        add = math.ceil((want - fit) / max(_fits(shape, p.cpu, p.memory), 1))
        checks.append(Check("room", False, f"{where} ({size}){grows} holds {fit} pod(s) of {pod}; {key} is {want}: "
                                            f"add {add} node(s) to {where}, or lower {key} to {fit}, or platform.cpu"))
    else:
        checks.append(Check("room", True, f"{where} ({size}){grows} holds {fit} pod(s) of {pod} ({key} {want}; "
                                           "allocatable, before other workloads' requests)"))
    return checks


def _largest_pod_check(config: Config, where: str, size: str, shapes: list[tuple[float, int]]) -> Check | None:
    """None when some node holds the largest pod the run starts (the largest tuning candidate, else the
    platform's pod), else the failed check saying what to change."""
    p = config.platform
    tune = "tune" in config.stages
    cpu = max(config.tune.cpu) if tune else p.cpu
    memory = max(config.tune.memory) if tune else p.memory
    label = f"cpu {format_cpu(cpu) if cpu else 'unlimited'}, memory {format_memory(memory) if memory else 'unlimited'}"
    if any(_fits(n, cpu, memory) for n in shapes):
        return None
    fix = "drop it from tune.cpu / tune.memory" if tune else "lower platform.cpu / platform.memory"
    return Check("room", False, f"no node of {where} ({size}) has room for a pod of {label} "
                                f"({'the largest tuning candidate' if tune else 'platform.cpu/memory'}): "
                                f"{fix}, or use a larger machine type")


def _place_locust(config: Config, usable: list[Node], model_sel: dict[str, str], model_left: list[tuple[float, int]],
                  count: int) -> str:
    """Place the Locust pods (1 CPU, 1Gi each) on the nodes they may use; "" when they fit, else what to do.
    Apart from a known model pool they never share its nodes; without one, they take room from it first."""
    gen_sel = dict(config.platform.kubernetes.generator_node_selector)
    apart = bool(model_sel)
    if apart:
        free = [(n.cpu, n.memory) for n in usable if not _matches(n.labels, model_sel) and _matches(n.labels, gen_sel)]
    else:
        free = model_left  # shared: what Locust takes is gone for the model
    for placed in range(count):
        fits = [k for k, n in enumerate(free) if _fits(n, *LOCUST_POD)]
        if not fits:
            where = ("nodes outside the model's pool" + (f" labelled {mf.selector_string(gen_sel)}" if gen_sel else "")
                     if apart else "the cluster")
            return (f"{where} have room for {placed} of the {count} Locust pods (1 CPU, 1Gi each; they are kept off "
                    "the model's nodes): add a node pool for the generator (platform.kubernetes."
                    "generator_node_selector picks it), or lower load.workers")
        k = max(fits, key=lambda j: free[j][0])
        free[k] = (free[k][0] - LOCUST_POD[0], free[k][1] - LOCUST_POD[1])
    return ""


def network_policies(config: Config, kube: Kube) -> list[Check]:
    """The namespace's own NetworkPolicies (not nightcap's): would they block workers -> model, workers -> DNS,
    workers -> master, or the runner -> master? One line per blocked path, naming the policies."""
    if config.generator_site != "cluster":
        return []
    try:
        items = kube.call("list", "networkpolicies.networking.k8s.io", None,
                          kube.networking.list_namespaced_network_policy, kube.namespace).get("items", [])
    except KubeApiError as exc:
        return [Check("network policies", False, f"could not be read ({exc})")]
    theirs = [p for p in items if ((p.get("metadata") or {}).get("labels") or {}).get(mf.MANAGED_BY) != mf.MANAGER]
    if not theirs:
        return [Check("network policies", True, f"none of the namespace's own select nightcap's pods ({len(items)} "
                                                 "nightcap policies)")]
    ns, run, port = kube.namespace, "preflight", config.platform.port
    worker = mf.labels(config, run, mf.LOCUST_WORKER)
    master = mf.labels(config, run, mf.LOCUST_MASTER)
    model = mf.labels(config, run, mf.MODEL)
    paths = [("the Locust workers", worker, "Egress", ns, model, port, "TCP", "the model's pods"),
             ("the Locust workers", worker, "Egress", "kube-system", {"k8s-app": "kube-dns"}, 53, "UDP", "DNS"),
             ("the Locust workers", worker, "Egress", ns, master, mf.LOCUST_MASTER_PORT, "TCP", "the Locust master"),
             ("the model's pods", model, "Ingress", ns, worker, port, "TCP", "the Locust workers"),
             ("the Locust master", master, "Ingress", ns, worker, mf.LOCUST_MASTER_PORT, "TCP", "the Locust workers")]
    if config.platform.in_cluster:
        paths.append(("the Locust master", master, "Ingress", runner_namespace(config), {mf.RUNNER_LABEL: "true"},
                      mf.LOCUST_WEB_PORT, "TCP", "the runner"))
    checks = []
    for what, labels, direction, peer_ns, peer, p_, proto, other in paths:
        policies = theirs if direction == "Egress" or what != "the Locust master" else theirs + [
            locust_mf.locust_network_policy(config, run)]
        answer, names = verdict(policies, ns, direction, labels, peer_ns, peer, p_, proto)
        if answer == ALLOWED:
            continue
        towards = f"to {other} ({p_}/{proto})" if direction == "Egress" else f"from {other} on {p_}/{proto}"
        text = (f"NetworkPolicy {', '.join(names)} isolates {what} ({direction.lower()}) and "
                f"{'no rule admits' if answer == DENIED else 'it cannot be told (ipBlock or namespace labels) whether a rule admits'} "
                f"traffic {towards}: add a rule for pods labelled {mf.COMPONENT}={labels.get(mf.COMPONENT)}")
        checks.append(Check("network policies", answer != DENIED, text, warning=answer != DENIED))
    return checks or [Check("network policies", True, f"{len(theirs)} of the namespace's own let the workers reach "
                                                      "the model, DNS and the master")]


def runner_pod(config: Config, kube: Kube) -> list[Check]:
    """In the cluster: the runner's own pod carries the label the Locust master's NetworkPolicy admits, in the
    namespace it names, and may not be evicted by the autoscaler mid-run."""
    if not config.platform.in_cluster or config.generator_site != "cluster":
        return []
    name = os.environ.get("HOSTNAME", "")
    try:
        namespace = SA_NAMESPACE.read_text().strip()
    except OSError:
        namespace = ""
    if not name or not namespace:
        return [Check("runner pod", True, "not in a pod (no HOSTNAME or service-account namespace): its label "
                                           "and namespace were not checked", warning=True)]
    try:
        pod = Kube(kube.api, namespace, attempts=2).call("get", "pods", name, kube.core.read_namespaced_pod, name,
                                                          namespace)
    except KubeApiError as exc:
        return [Check("runner pod", True, f"its pod {namespace}/{name} could not be read ({exc})", warning=True)]
    meta = pod.get("metadata") or {}
    problems = []
    if (meta.get("labels") or {}).get(mf.RUNNER_LABEL) != "true":
        problems.append(f"label it {mf.RUNNER_LABEL}: \"true\" (prefect.yaml job_variables.labels)")
    if namespace != runner_namespace(config):
        problems.append(f"set platform.kubernetes.runner_namespace to {namespace}")
    if problems:
        return [Check("runner pod", False, f"{namespace}/{name} is not the runner the Locust master's NetworkPolicy "
                                            f"admits: {'; '.join(problems)}")]
    evict = (meta.get("annotations") or {}).get(kube_pods.SAFE_TO_EVICT)
    return [Check("runner pod", True, f"{namespace}/{name} is labelled {mf.RUNNER_LABEL}=true" +
                   ("" if evict == "false" else f"; annotate it {kube_pods.SAFE_TO_EVICT}: \"false\" so the autoscale "
                    "stage's scale-down cannot evict it"), warning=evict != "false")]
