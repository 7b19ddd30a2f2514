"""`nightcap preflight`: everything a Kubernetes run needs, checked against the cluster without changing anything.

A night that cannot succeed should fail in seconds with the reason, not at 2 a.m. after the first rollout.
Each check gives one line; a failed one says what to change, a warning says what could not be known. Nothing
is created: permissions are asked with SelfSubjectAccessReview, every object and one Pod of each kind (model,
Locust master and worker, canary) are judged with a server-side dry run (`dryRun=All`), so PodSecurity
admission, ResourceQuota and LimitRange answer as they will for the ReplicaSets' pods; the node pool and
cluster are only read (`preflight_gke`), and so are nodes, taints and NetworkPolicies (`preflight_cluster`).
"""

from __future__ import annotations

import re
from typing import Any

from kubernetes import client as k8s

from nightcap.config import Config
from nightcap.kube import pods as kube_pods
from nightcap.platforms.base import PlatformError
from nightcap.kube import client as kube_client
from nightcap.kube.client import Kube, KubeApiError
from nightcap.kube.preflight_check import Check
from nightcap.kube.preflight_cluster import network_policies, room, runner_pod
from nightcap.kube.preflight_gke import gke_checks
from nightcap.kube.rbac import RULES, Rule
from nightcap.kube.render import PREVIEW_RUN, run_manifests
_IMAGE = re.compile(r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")


def preflight(config: Config, api_client: k8s.ApiClient | None = None, gke_client: Any = None,
              payloads: list[bytes] | None = None, google_credentials: Any = None, google_http: Any = None,
              **gke: Any) -> list[Check]:
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
    found, pool = gke_checks(config, gke_client, google_credentials, google_http, **gke)
    checks += found
    checks += room(config, kube, pool)
    checks += network_policies(config, kube)
    checks += runner_pod(config, kube)
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


def _images(config: Config) -> list[Check]:
    from nightcap.targets.canary import canary_wanted

    images = [("target.image", config.target.image)] if config.target.image else []
    if config.generator_site == "cluster":
        images.append(("load.locust_image", config.load.locust_image))
    if canary_wanted(config)[0]:
        images.append(("canary.image", config.canary.image))
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


def _dry_run(config: Config, kube: Kube, payloads: list[bytes]) -> list[Check]:
    """Every object the run creates, and one Pod of each Deployment's template: admission judges Pods."""
    problems = []
    objects = run_manifests(config, payloads, PREVIEW_RUN)
    pods = [kube_pods.pod_from(o) for o in objects if o["kind"] == "Deployment"]
    for obj in objects + pods:
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
                                               f"and a pod of each of its {len(pods)} Deployments (dryRun=All: "
                                               "validation, PodSecurity, ResourceQuota, LimitRange, webhooks)")]
