"""Kubernetes API access for a run: bounded retries, errors that say what to change, objects by label.

Design choices, and why:
- Responses are read as plain JSON (`_preload_content=False`): the generated models reject partial objects
  (events without fields, pods mid-creation), and dicts are what the manifests are written as anyway.
- Every call goes through `Kube.call`: transient answers (409 on patch, 429, 5xx, timeouts, dropped
  connections) are retried with bounded exponential backoff on the injected clock; permanent ones raise
  `PlatformError` naming the object, the RBAC verb and resource, or the invalid field.
- Objects are found by label only (`app.kubernetes.io/managed-by=nightcap`, `nightcap.io/run-id=<run>`), and
  the labels are checked again on each listed object before it is deleted: a server or proxy that ignored
  the selector still cannot make teardown touch anything else. Secrets alone are deleted by name: listing
  them would read every Secret in the namespace.
- Waiting ("rollout status") reads the Deployment: observedGeneration caught up, `updatedReplicas` (the pods
  of the new ReplicaSet) equal to the desired count and all of them ready, and no old pods left. A
  ProgressDeadlineExceeded condition ends the wait early only once the controller has observed this change
  and only if it was written after it (one left from the previous candidate says nothing about this one). On
  timeout `diagnosis` says why from the pods and the events newer than the change.
- A 403 is RBAC only when the server says the identity "cannot <verb> resource"; otherwise admission refused
  the object (PodSecurity, ResourceQuota, LimitRange, a webhook), and the message says which and what to change.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pydantic
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from nightcap.config import PlatformConfig
from nightcap.kube import manifests as mf
from nightcap.platforms.base import NoRoomForPods, PlatformError
from nightcap.kube.diagnosis import NO_ROOM, admission_hint, diagnose
from nightcap.kube.metrics import PodUsage, pod_usage, timestamp

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = {429, 500, 502, 503, 504}
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
ZONE_LABEL = "topology.kubernetes.io/zone"
_RBAC_DENIAL = re.compile(r"cannot [\w-]+ resource")


class KubeApiError(PlatformError):
    """A permanent (or exhausted) API failure; `status` is the HTTP code, 0 when the server never answered."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def api_client_for(platform: PlatformConfig) -> k8s.ApiClient:
    """In-cluster service-account credentials, or the kubeconfig context named in the config."""
    from kubernetes import config as kube_config

    try:
        if platform.in_cluster:
            kube_config.load_incluster_config()
            return k8s.ApiClient()
        return kube_config.new_client_from_config(context=platform.context)
    except Exception as exc:  # ConfigException, missing files: say which setting to change
        where = "the in-cluster service account" if platform.in_cluster else (
            f"kubeconfig context {platform.context!r}" if platform.context else "the current kubeconfig context")
        raise PlatformError(f"cannot load Kubernetes credentials from {where}: {exc}; set platform.context "
                            "or platform.in_cluster") from None


def _api_message(exc: ApiException) -> tuple[str, list[str]]:
    """The Status message and the invalid fields from an error body."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return (exc.reason or "").strip(), []
    causes = (body.get("details") or {}).get("causes") or []
    fields = [f"{c.get('field')}: {c.get('message')}" for c in causes if c.get("field")]
    return str(body.get("message") or exc.reason or ""), fields


def _retry_after(exc: ApiException) -> float | None:
    try:
        value = (exc.headers or {}).get("Retry-After")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@dataclass
class Kube:
    """Namespaced API access with bounded retries: the one place that decides what is transient."""

    api: k8s.ApiClient
    namespace: str
    clock: Any = time
    attempts: int = 6
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    request_timeout_s: float = 15.0
    core: k8s.CoreV1Api = field(init=False)
    apps: k8s.AppsV1Api = field(init=False)
    autoscaling: k8s.AutoscalingV2Api = field(init=False)
    custom: k8s.CustomObjectsApi = field(init=False)
    networking: k8s.NetworkingV1Api = field(init=False)

    def __post_init__(self) -> None:
        self.core = k8s.CoreV1Api(self.api)
        self.apps = k8s.AppsV1Api(self.api)
        self.autoscaling = k8s.AutoscalingV2Api(self.api)
        self.custom = k8s.CustomObjectsApi(self.api)
        self.networking = k8s.NetworkingV1Api(self.api)

    def call(self, verb: str, resource: str, name: str | None, fn: Callable[..., Any], *args: Any,
             **kwargs: Any) -> dict[str, Any]:
        """Call `fn` and return the JSON answer; `verb`/`resource` are the RBAC terms used in messages."""
        what = f"{resource}/{name}" if name else resource
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        delay = self.backoff_initial_s
        started = self.clock.monotonic()
        last = ""
        for attempt in range(1, self.attempts + 1):
            wait = delay
            try:
                response = fn(*args, _preload_content=False, _request_timeout=self.request_timeout_s, **kwargs)
                data = response.data
                return json.loads(data) if data else {}
            except ApiException as exc:
                status = exc.status or 0
                message, fields = _api_message(exc)
                transient = status in TRANSIENT_STATUSES or (status == 409 and verb in ("patch", "update"))
                last = f"{status} {exc.reason or ''}: {message}".strip()
                if not transient:
                    raise KubeApiError(self._permanent(verb, resource, what, where, status, message, fields),
                                       status) from None
                wait = max(delay, min(_retry_after(exc) or 0.0, self.backoff_max_s))
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                last = f"no answer ({type(exc).__name__}: {exc})"
            except pydantic.ValidationError as exc:  # the client validates bodies before sending
                raise KubeApiError(f"{verb} {what} {where}: the client refused the request body: "
                                   f"{exc.errors(include_url=False)}", 0) from None
            if attempt < self.attempts:
                log.info("%s %s %s: %s; retrying in %.1fs", verb, what, where, last, wait)
                self.clock.sleep(wait)
                delay = min(delay * 2, self.backoff_max_s)
        spent = self.clock.monotonic() - started
        raise KubeApiError(f"{verb} {what} {where} still failed after {self.attempts} attempts over {spent:.0f}s "
                           f"(last: {last}); the API server is overloaded, restarting or unreachable", 0)

    @staticmethod
    def _permanent(verb: str, resource: str, what: str, where: str, status: int, message: str,
                   fields: list[str]) -> str:
        head = f"{verb} {what} {where} failed ({status})"
        if status == 401:
            return f"{head}: the credentials were refused ({message}); check platform.context or the token"
        if status == 403 and message and not _RBAC_DENIAL.search(message):
            return f"{head}: refused by admission: {message}. {admission_hint(message)}"
        if status == 403:
            group = resource.split(".", 1)[1] if "." in resource else "\"\" (core)"
            plural = resource.split(".", 1)[0]
            return (f"{head}: forbidden: {message}. The identity needs RBAC verb '{verb}' on resource "
                    f"'{plural}' in API group {group}; apply deployments/k8s/rbac.yaml")
        if status == 422:
            detail = "; ".join(fields) or message
            return f"{head}: the object was rejected as invalid: {detail}. Fix the config value that sets it"
        if status == 404:
            return f"{head}: not found: {message} (does namespace exist? is the API served?)"
        if status == 409:
            return f"{head}: conflict: {message}"
        return f"{head}: {message}"

    # --- objects -----------------------------------------------------------------------------------------

    def create(self, obj: dict[str, Any], run_id: str) -> dict[str, Any]:
        """Create, or adopt an object of the same name that this run already created (a retried create)."""
        kind = obj["kind"]
        name = obj["metadata"]["name"]
        resource, create, read, patch = self._ops(kind)
        try:
            return self.call("create", resource, name, create, self.namespace, obj)
        except KubeApiError as exc:
            if exc.status != 409:
                raise
        existing = self.call("get", resource, name, read, name, self.namespace)
        labels = existing.get("metadata", {}).get("labels") or {}
        if labels.get(mf.RUN_ID) != mf.run_label(run_id) or labels.get(mf.MANAGED_BY) != mf.MANAGER:
            raise PlatformError(f"{resource}/{name} already exists in namespace {self.namespace} and does not belong "
                                f"to this run ({mf.RUN_ID}={labels.get(mf.RUN_ID)!r}); nightcap will not touch it. "
                                "Delete it, or use another platform.namespace")
        body = {"metadata": {"labels": obj["metadata"]["labels"]},
                **{k: v for k, v in obj.items() if k in ("spec", "data", "stringData")}}
        return self.call("patch", resource, name, patch, name, self.namespace, body, _content_type=MERGE_PATCH)

    def _ops(self, kind: str) -> tuple[str, Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        c, a, h, n = self.core, self.apps, self.autoscaling, self.networking
        table: dict[str, tuple[str, Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = {
            "Deployment": ("deployments.apps", a.create_namespaced_deployment, a.read_namespaced_deployment,
                           a.patch_namespaced_deployment),
            "Service": ("services", c.create_namespaced_service, c.read_namespaced_service,
                        c.patch_namespaced_service),
            "ConfigMap": ("configmaps", c.create_namespaced_config_map, c.read_namespaced_config_map,
                          c.patch_namespaced_config_map),
            "Secret": ("secrets", c.create_namespaced_secret, c.read_namespaced_secret, c.patch_namespaced_secret),
            "HorizontalPodAutoscaler": ("horizontalpodautoscalers.autoscaling",
                                        h.create_namespaced_horizontal_pod_autoscaler,
                                        h.read_namespaced_horizontal_pod_autoscaler,
                                        h.patch_namespaced_horizontal_pod_autoscaler),
            "NetworkPolicy": ("networkpolicies.networking.k8s.io", n.create_namespaced_network_policy,
                              n.read_namespaced_network_policy, n.patch_namespaced_network_policy),
            # created only as a dry run (preflight): admission judges Pods, not Deployments
            "Pod": ("pods", c.create_namespaced_pod, c.read_namespaced_pod, c.patch_namespaced_pod),
        }
        return table[kind]

    def dry_run(self, obj: dict[str, Any]) -> None:
        """Create `obj` with dryRun=All: validation, admission (quotas, policies, webhooks) and RBAC judge it
        as they would the real one, and nothing is stored."""
        resource, create, _, _ = self._ops(obj["kind"])
        self.call("create", resource, obj["metadata"]["name"], create, self.namespace, obj, dry_run="All")

    def delete_secret(self, name: str, selector: dict[str, str]) -> list[str]:
        """Delete one Secret by name when it carries `selector`'s labels; [] when it is not there.

        By name, not by label: listing Secrets would read every Secret in the namespace, and a Secret whose
        owner reference could not be set (or whose owner is already gone) is not garbage-collected."""
        c = self.core
        try:
            found = self.call("get", "secrets", name, c.read_namespaced_secret, name, self.namespace)
        except KubeApiError as exc:
            if exc.status == 404:
                return []
            raise
        if not has_labels(found, selector):
            return []  # same name, someone else's: never touched
        try:
            self.call("delete", "secrets", name, c.delete_namespaced_secret, name, self.namespace)
        except KubeApiError as exc:
            if exc.status != 404:
                raise
        return [f"secrets/{name}"]

    def get_deployment(self, name: str) -> dict[str, Any]:
        return self.call("get", "deployments.apps", name, self.apps.read_namespaced_deployment, name, self.namespace)

    def patch_deployment(self, name: str, body: Any, content_type: str) -> dict[str, Any]:
        return self.call("patch", "deployments.apps", name, self.apps.patch_namespaced_deployment, name,
                         self.namespace, body, _content_type=content_type)

    def pods(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        """Pods carrying every selector label (checked here too), without those already terminating."""
        data = self.call("list", "pods", None, self.core.list_namespaced_pod, self.namespace,
                         label_selector=mf.selector_string(selector))
        return [p for p in data.get("items", []) if has_labels(p, selector)
                and not p.get("metadata", {}).get("deletionTimestamp")]

    def pod_metrics(self, selector: dict[str, str]) -> dict[str, PodUsage]:
        """Pod name -> its usage from metrics.k8s.io; KubeApiError 404 when not served (no metrics-server)."""
        data = self.call("list", "pods.metrics.k8s.io", None, self.custom.list_namespaced_custom_object,
                         "metrics.k8s.io", "v1beta1", self.namespace, "pods",
                         label_selector=mf.selector_string(selector))
        return {item.get("metadata", {}).get("name", ""): pod_usage(item) for item in data.get("items", [])}

    def events(self) -> list[dict[str, Any]]:
        return self.call("list", "events", None, self.core.list_namespaced_event, self.namespace).get("items", [])

    def node_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes():
            pool = (node.get("metadata", {}).get("labels") or {}).get(mf.NODE_POOL_LABEL, "(no pool label)")
            counts[pool] = counts.get(pool, 0) + 1
        return counts

    def nodes(self) -> list[dict[str, Any]]:
        return self.call("list", "nodes", None, self.core.list_node).get("items", [])

    def node_zones(self, pool: str) -> dict[str, int]:
        """Nodes of one node pool per zone (`topology.kubernetes.io/zone`)."""
        zones: dict[str, int] = {}
        for node in self.nodes():
            labels = node.get("metadata", {}).get("labels") or {}
            if labels.get(mf.NODE_POOL_LABEL) == pool:
                zone = labels.get(ZONE_LABEL, "(no zone label)")
                zones[zone] = zones.get(zone, 0) + 1
        return zones

    def delete_labelled(self, selector: dict[str, str], records: bool = True) -> list[str]:
        """Delete every HPA, Deployment, Service, ConfigMap and NetworkPolicy carrying all `selector` labels;
        return resource/name of each. `records=False` keeps the run's record (its lease and node-pool originals),
        which must outlive everything else until the node pool is restored."""
        deleted: list[str] = []
        errors: list[str] = []
        c, a, h, n = self.core, self.apps, self.autoscaling, self.networking
        kinds = [
            ("horizontalpodautoscalers.autoscaling", h.list_namespaced_horizontal_pod_autoscaler,
             h.delete_namespaced_horizontal_pod_autoscaler),
            ("deployments.apps", a.list_namespaced_deployment, a.delete_namespaced_deployment),
            ("services", c.list_namespaced_service, c.delete_namespaced_service),
            ("configmaps", c.list_namespaced_config_map, c.delete_namespaced_config_map),
            ("networkpolicies.networking.k8s.io", n.list_namespaced_network_policy, n.delete_namespaced_network_policy),
        ]
        for resource, list_fn, delete_fn in kinds:
            try:
                items = self.call("list", resource, None, list_fn, self.namespace,
                                  label_selector=mf.selector_string(selector)).get("items", [])
            except PlatformError as exc:
                errors.append(str(exc))
                continue
            for item in items:
                if not has_labels(item, selector):
                    continue  # the server ignored the selector: never delete what is not ours
                if not records and ((item.get("metadata") or {}).get("labels") or {}).get(mf.COMPONENT) == mf.RUN_RECORD:
                    continue
                name = item["metadata"]["name"]
                try:
                    self.call("delete", resource, name, delete_fn, name, self.namespace,
                              propagation_policy="Background")
                    deleted.append(f"{resource}/{name}")
                except KubeApiError as exc:
                    if exc.status != 404:
                        errors.append(str(exc))
        if errors:
            raise PlatformError("cleanup could not delete everything: " + " | ".join(errors))
        return deleted

    # --- rollout -----------------------------------------------------------------------------------------

    def wait_rollout(self, name: str, replicas: int, timeout_s: float, action: str, selector: dict[str, str],
                     poll_s: float, since: float | None = None, keys: dict[str, str] | None = None) -> dict[str, Any]:
        """Until the rollout is done; `since` is when the change was sent (epoch seconds on this clock, default
        now): only a stall and events after it are this change's. `keys` names the config keys in the hints."""
        since = self.clock.time() if since is None else since
        deadline = self.clock.monotonic() + timeout_s
        while True:
            dep = self.get_deployment(name)
            if rollout_done(dep, replicas):
                return dep
            if stalled(dep, since) or self.clock.monotonic() >= deadline:
                message, causes = diagnose(self, dep, replicas, timeout_s, action, selector, since, keys)
                room = [text for reason in NO_ROOM for text in causes.get(reason, [])]
                if room and "Placement" not in causes:
                    raise NoRoomForPods(message, room[0].split(": ", 1)[-1])
                raise PlatformError(message)
            self.clock.sleep(poll_s)


def stalled(dep: dict[str, Any], since: float) -> bool:
    """ProgressDeadlineExceeded for this change: the controller has observed the current generation, and the
    condition was updated after the change was sent (when the server says when)."""
    generation = (dep.get("metadata") or {}).get("generation")
    st = dep.get("status") or {}
    if generation is not None and (st.get("observedGeneration") or 0) < generation:
        return False
    for c in st.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            when = timestamp(c.get("lastUpdateTime") or c.get("lastTransitionTime"))
            if when is None or when >= since:
                return True
    return False


def rollout_done(dep: dict[str, Any], replicas: int) -> bool:
    """kubectl's rollout-status rule: new ReplicaSet fully updated and ready, old pods gone."""
    meta = dep.get("metadata") or {}
    st = dep.get("status") or {}
    generation = meta.get("generation")
    if generation is not None and (st.get("observedGeneration") or 0) < generation:
        return False
    updated = st.get("updatedReplicas") or 0
    total = st.get("replicas") or 0
    ready = st.get("readyReplicas") or 0
    available = st.get("availableReplicas") or 0
    if replicas == 0:
        return total == 0
    return updated >= replicas and total <= updated and ready >= replicas and available >= replicas


def has_labels(obj: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])
