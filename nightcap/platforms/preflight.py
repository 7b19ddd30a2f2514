"""`nightcap preflight`: everything a Kubernetes run needs, checked against the cluster without changing anything.

A night that cannot succeed should fail in seconds with the reason, not at 2 a.m. after the first rollout.
Each check gives one line; a failed one says what to change. Nothing is created: permissions are asked with
SelfSubjectAccessReview, manifests are judged with a server-side dry run (`dryRun=All`), the node pool is
only read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from nightcap.config import Config
from nightcap.load.base import LOCUSTFILE, locust_env
from nightcap.platforms import manifests as mf
from nightcap.platforms.base import HpaSpec, PlatformError, PodSpec
from nightcap.platforms import kube_client
from nightcap.platforms.kube_client import Kube, KubeApiError
from nightcap.platforms.rbac import RULES, Rule
from nightcap.quantities import QuantityError, format_cpu, format_memory, parse_cpu, parse_memory

PREFLIGHT_RUN = "preflight"  # the run id the dry-run manifests are named after
LOCUST_POD = (1.0, 256 * 2**20)  # each Locust pod's request (manifests._locust_pod)
_IMAGE = re.compile(r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")


@dataclass(frozen=True)
class Check:
    """One finding: `ok` False means the run cannot succeed (or would waste the night) until `text` is done."""

    name: str
    ok: bool
    text: str
    warning: bool = False  # ok, but worth a look

    def line(self) -> str:
        mark = "FAIL" if not self.ok else ("warn" if self.warning else "ok")
        return f"{mark:<4}  {self.name}: {self.text}"


def preflight(config: Config, api_client: k8s.ApiClient | None = None, gke_client: Any = None,
              payloads: list[bytes] | None = None) -> list[Check]:
    """Every check, in the order a first real run needs them; stops early only when the cluster is unreachable."""
    p = config.platform
    where = "the in-cluster service account" if p.in_cluster else (
        f"kubeconfig context {p.context!r}" if p.context else "the current kubeconfig context")
    try:
        kube = Kube(api_client or kube_client.api_client_for(p), p.namespace, attempts=2, backoff_initial_s=0.5)
        version = kube.call("get", "version", None, k8s.VersionApi(kube.api).get_code)
    except PlatformError as exc:
        return [Check("credentials", False, f"{exc}; check {where} (`kubectl --context ... get --raw /version`)")]
    checks = [Check("credentials", True, f"{where} reaches {kube.api.configuration.host} "
                                         f"(Kubernetes {version.get('gitVersion', '?')})")]
    checks += _rbac(kube)
    checks.append(_metrics_server(kube))
    pool = _node_pool(config, gke_client)
    if pool is not None:
        checks.append(pool[0])
    checks += _room(config, kube, pool[1] if pool else None)
    checks += _images(config)
    checks += _dry_run(config, kube, payloads or [b"{}"])
    return checks


def _rbac(kube: Kube) -> list[Check]:
    """One SelfSubjectAccessReview per rule and verb; the missing ones as the rules to add."""
    api = k8s.AuthorizationV1Api(kube.api)
    lines: list[Check] = []
    for rule in RULES:
        missing = tuple(v for v in rule.verbs if not _allowed(kube, api, rule, v))
        if missing:
            role = "ClusterRole" if rule.cluster else f"Role in namespace {kube.namespace}"
            lines.append(Check("rbac", False, f"missing {', '.join(missing)} on {_what(rule)} ({rule.why}): add to "
                                              f"the {role} bound to this identity: {rule.yaml(missing)} "
                                              "(deployments/k8s/rbac.yaml has them all)"))
    return lines or [Check("rbac", True, f"all {sum(len(r.verbs) for r in RULES)} permissions of "
                                         "deployments/k8s/rbac.yaml are granted")]


def _what(rule: Rule) -> str:
    return f"{rule.resource}" + (f".{rule.group}" if rule.group else "")


def _allowed(kube: Kube, api: k8s.AuthorizationV1Api, rule: Rule, verb: str) -> bool:
    resource, _, sub = rule.resource.partition("/")
    attributes = {"group": rule.group, "resource": resource, "verb": verb,
                  **({"subresource": sub} if sub else {}), **({} if rule.cluster else {"namespace": kube.namespace})}
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes}}
    answer = kube.call("create", "selfsubjectaccessreviews.authorization.k8s.io", None,
                       api.create_self_subject_access_review, body)
    return bool((answer.get("status") or {}).get("allowed"))


def _metrics_server(kube: Kube) -> Check:
    try:
        kube.pod_metrics({})
    except KubeApiError as exc:
        if exc.status == 404:
            return Check("metrics-server", False, "metrics.k8s.io is not served, so per-pod CPU and the HPA have no "
                                                  "data: install metrics-server (kubectl get apiservice "
                                                  "v1beta1.metrics.k8s.io)")
        return Check("metrics-server", False, f"metrics.k8s.io did not answer: {exc}")
    return Check("metrics-server", True, "metrics.k8s.io answers")


def _node_pool(config: Config, gke_client: Any) -> tuple[Check, Any] | None:
    """The GKE node pool (platform.gke), read only: it exists, and how it autoscales now."""
    gke = config.platform.gke
    if gke is None:
        return None
    from nightcap.platforms.gke import GkeNodePools

    try:
        pools = GkeNodePools(gke, client=gke_client)
        pools.attempts = 2
        pool = pools.read_pool()
    except Exception as exc:  # PlatformError with the fix, or no Google credentials at all
        return Check("node pool", False, f"{exc}; check platform.gke and the Google credentials "
                                         "(gcloud auth application-default login)"), None
    a = pool.autoscaling
    how = (f"autoscaling on, {a.min_node_count}-{a.max_node_count} nodes per zone" if a.enabled
           else "autoscaling off")
    nodes = config.autoscale.nodes
    plan = (f"; the autoscale stage sets {nodes.get('min', 1)}-{nodes.get('max', 3)} and restores this"
            if nodes and "autoscale" in config.stages else "")
    return Check("node pool", True, f"{gke.node_pool} in {gke.project}/{gke.location}/{gke.cluster}: {how}, "
                                    f"zones {', '.join(pool.locations) or '?'}{plan}"), pool


def _allocatable(node: dict[str, Any]) -> tuple[float, int] | None:
    alloc = (node.get("status") or {}).get("allocatable") or {}
    try:
        return parse_cpu(alloc.get("cpu", "0")), parse_memory(alloc.get("memory", "0"))
    except QuantityError:
        return None


def _fits(node: tuple[float, int], cpu: float | None, memory: int | None) -> int:
    """How many pods of this request one node's allocatable holds (requests = limits)."""
    by_cpu = math.floor(node[0] / cpu + 1e-9) if cpu else 10**6
    by_mem = math.floor(node[1] / memory) if memory else 10**6
    return min(by_cpu, by_mem)


def _room(config: Config, kube: Kube, pool: Any) -> list[Check]:
    """Allocatable CPU and memory for the largest tuning candidate, and for scaling.max_replicas pods."""
    p = config.platform
    try:
        items = kube.call("list", "nodes", None, kube.core.list_node).get("items", [])
    except KubeApiError as exc:
        return [Check("room", False, f"nodes could not be read ({exc})")]
    name = p.gke.node_pool if p.gke else None
    nodes = [a for n in items if not (n.get("spec") or {}).get("unschedulable")
             and (name is None or ((n.get("metadata") or {}).get("labels") or {}).get(mf.NODE_POOL_LABEL) == name)
             and (a := _allocatable(n))]
    where = f"node pool {name}" if name else "the cluster"
    if not nodes:
        return [Check("room", False, f"{where} has no schedulable node: add nodes" +
                      (" (or fix platform.gke.node_pool)" if name else ""))]
    shape = max(nodes)
    size = f"{len(nodes)} node(s), the largest allocating {format_cpu(shape[0])} CPU and {shape[1] / 2**30:.1f}Gi"
    checks = []
    tune = "tune" in config.stages
    cpu = max(config.tune.cpu) if tune else p.cpu
    memory = max(config.tune.memory) if tune else p.memory
    label = f"cpu {format_cpu(cpu) if cpu else 'unlimited'}, memory {format_memory(memory) if memory else 'unlimited'}"
    if not any(_fits(n, cpu, memory) for n in nodes):
        fix = "drop it from tune.cpu / tune.memory" if tune else "lower platform.cpu / platform.memory"
        checks.append(Check("room", False, f"no node of {where} ({size}) has room for a pod of {label} "
                                           f"({'the largest tuning candidate' if tune else 'platform.cpu/memory'}): "
                                           f"{fix}, or use a larger machine type"))
    # scaling.max_replicas pods of the configured size, beside the Locust pods when they run in the cluster
    locust = config.load.workers + 1 if config.generator_site == "cluster" else 0
    left = list(nodes)
    for placed in range(locust):  # conservatively, the Locust pods take room on these nodes first
        free = [k for k, n in enumerate(left) if _fits(n, *LOCUST_POD)]
        if not free:
            checks.append(Check("room", False, f"{where} ({size}) has room for {placed} of the {locust} Locust pods "
                                               "(1 CPU, 256Mi each): add nodes, or lower load.workers"))
            return checks
        k = max(free, key=lambda j: left[j][0])
        left[k] = (left[k][0] - LOCUST_POD[0], left[k][1] - LOCUST_POD[1])
    grows = ""
    if pool is not None and pool.autoscaling.enabled:
        extra = pool.autoscaling.max_node_count * max(len(pool.locations), 1) - len(nodes)
        left += [shape] * max(extra, 0)
        grows = f" (the pool autoscales to {len(left)} nodes)"
    room = sum(_fits(n, p.cpu, p.memory) for n in left)
    want = config.scaling.max_replicas if "scaling" in config.stages else p.replicas
    key = "scaling.max_replicas" if "scaling" in config.stages else "platform.replicas"
    pod = f"cpu {format_cpu(p.cpu) if p.cpu else 'unlimited'}, memory {format_memory(p.memory) if p.memory else 'unlimited'}"
    beside = f" beside {locust} Locust pod(s) of 1 CPU" if locust else ""
    if room < want:
        per_node = max(_fits(shape, p.cpu, p.memory), 1)
        add = math.ceil((want - room) / per_node)
        checks.append(Check("room", False, f"{where} ({size}){grows} holds {room} pod(s) of {pod}{beside}; "
                                           f"{key} is {want}: add {add} node(s) to {where}, or lower {key} to "
                                           f"{room}, or platform.cpu"))
    else:
        checks.append(Check("room", True, f"{where} ({size}){grows} holds {room} pod(s) of {pod}{beside} "
                                          f"({key} {want}; allocatable, before other workloads' requests)"))
    return checks


def _images(config: Config) -> list[Check]:
    images = [("target.image", config.target.image)] if config.target.image else []
    if config.generator_site == "cluster":
        images.append(("load.locust_image", config.load.locust_image))
    checks = []
    for key, image in images:
        if not _IMAGE.match(image):
            checks.append(Check("images", False, f"{key} {image!r} is not an image reference "
                                                 "(registry/path/name:tag): fix it"))
            continue
        tail = image.rsplit("/", 1)[-1]
        if "@sha256:" not in image and (":" not in tail or tail.endswith(":latest")):
            checks.append(Check("images", True, f"{key} {image}: pin a tag, so that nights compared with each other "
                                                "ran the same image", warning=True))
        elif key == "load.locust_image" and ":2.47." not in image and "@sha256:" not in image:
            checks.append(Check("images", True, f"{key} {image}: the locustfile is written for Locust 2.47 (its "
                                                "stats keys change between releases)", warning=True))
        else:
            checks.append(Check("images", True, f"{key} {image} (whether the nodes may pull it shows at the first "
                                                "rollout)"))
    return checks


def run_manifests(config: Config, payloads: list[bytes]) -> list[dict[str, Any]]:
    """Every object the run will create, at its largest (tuning's biggest pod, the autoscale stage's HPA)."""
    c, r = config, PREFLIGHT_RUN
    tune = "tune" in c.stages
    spec = PodSpec(cpu=max(c.tune.cpu) if tune else c.platform.cpu,
                   memory=max(c.tune.memory) if tune else c.platform.memory,
                   concurrency=max(c.tune.concurrency) if tune else (c.platform.concurrency or 1))
    out = [mf.model_deployment(c, r, spec, c.platform.replicas), mf.model_service(c, r)]
    if "autoscale" in c.stages:
        a = c.autoscale
        out.append(mf.hpa(c, r, HpaSpec(target_cpu_pct=a.target_cpu_pct, min_replicas=a.min_replicas,
                                        max_replicas=a.max_replicas, stabilization_s=a.stabilization_s)))
    if c.generator_site == "cluster":
        key = bool(c.target.api_key_env or c.target.api_key_secret_block)
        t = c.target
        env = locust_env(t.path, t.method, t.headers, t.request_timeout_s, c.load.reconnect_s,
                         f"{mf.LOCUST_MOUNT}/payloads.jsonl", key)
        files = {"locustfile.py": LOCUSTFILE.read_text(), "payloads.jsonl": b"\n".join(payloads).decode(errors="replace")}
        secret_env = {"NIGHTCAP_API_KEY": (mf.locust_name(r, "key"), "api-key")} if key else None
        out += [mf.locust_configmap(c, r, files), mf.locust_network_policy(c, r),
                mf.locust_master_deployment(c, r, env), mf.locust_master_service(c, r),
                mf.locust_worker_deployment(c, r, c.load.workers, env, secret_env)]
        if key:
            out.append(mf.api_key_secret(c, r, "preflight-placeholder"))
    return out


def _dry_run(config: Config, kube: Kube, payloads: list[bytes]) -> list[Check]:
    problems = []
    objects = run_manifests(config, payloads)
    for obj in objects:
        what = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kube.dry_run(obj)
        except KubeApiError as exc:
            if exc.status == 404 and "namespace" in str(exc):
                return [Check("namespace", False, f"namespace {kube.namespace} does not exist: `kubectl create "
                                                  f"namespace {kube.namespace}`, or set platform.namespace")]
            problems.append(Check("dry run", False, f"{what} was refused: {exc}"))
    return problems or [Check("namespace", True, kube.namespace),
                        Check("dry run", True, f"the API server accepts all {len(objects)} objects the run creates "
                                               "(dryRun=All: validation, admission, quotas)")]
