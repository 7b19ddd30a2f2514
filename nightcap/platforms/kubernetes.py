"""The model as a Deployment + Service in one namespace, driven through the official `kubernetes` client.

Design choices, and why:
- Responses are read as plain JSON (`_preload_content=False`): the generated models reject partial objects
  (events without fields, pods mid-creation), and dicts are what the manifests are written as anyway.
- Every call goes through `Kube.call`: transient answers (409 on patch, 429, 5xx, timeouts, dropped
  connections) are retried with bounded exponential backoff on the injected clock; permanent ones raise
  `PlatformError` naming the object, the RBAC verb and resource, or the invalid field.
- Objects are found by label only (`app.kubernetes.io/managed-by=nightcap`, `nightcap.io/run-id=<run>`), and
  the labels are checked again on each listed object before it is deleted: a server or proxy that ignored
  the selector still cannot make teardown touch anything else.
- Waiting ("rollout status") reads the Deployment: observedGeneration caught up, `updatedReplicas` (the pods
  of the new ReplicaSet) equal to the desired count and all of them ready, and no old pods left. On timeout
  the pods and events say why (ImagePullBackOff, FailedScheduling, readiness probe failures...).
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

import pydantic
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from nightcap.config import Config, PlatformConfig
from nightcap.platforms import manifests as mf
from nightcap.platforms.base import AutoscaleStatus, HpaSpec, Observation, PlatformError, PodSpec, ReplicaSample
from nightcap.quantities import QuantityError, parse_cpu, parse_memory

if TYPE_CHECKING:
    from nightcap.platforms.gke import GkeNodePools
    from nightcap.run.registry import RunRegistry

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = {429, 500, 502, 503, 504}
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"

_HINTS = {
    "ImagePullBackOff": "check that target.image exists and that the nodes may pull it (imagePullSecrets)",
    "ErrImagePull": "check that target.image exists and that the nodes may pull it (imagePullSecrets)",
    "InvalidImageName": "target.image is not a valid image reference",
    "FailedScheduling": "no node has room for the pod: lower platform.cpu / platform.memory, or add nodes "
                        "(autoscale.nodes turns on node-pool autoscaling)",
    "Unschedulable": "no node has room for the pod: lower platform.cpu / platform.memory, or add nodes",
    "Unhealthy": "the readiness probe fails: check target.ready_path, platform.port and the server's startup",
    "CrashLoopBackOff": "the container keeps exiting: check target.command and `kubectl logs`",
    "CreateContainerConfigError": "the container spec refers to something missing (ConfigMap, Secret)",
    "OOMKilled": "the container ran out of memory: raise platform.memory",
    "FailedCreate": "the ReplicaSet cannot create pods (ResourceQuota, LimitRange or admission webhook)",
    "FailedMount": "a volume cannot be mounted",
    "BackOff": "the container keeps restarting or the image keeps failing to pull",
}
_WAITING_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                    "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
_EVENT_REASONS = {"FailedScheduling", "Unhealthy", "FailedCreate", "FailedMount", "BackOff", "Failed"}


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

    def __post_init__(self) -> None:
        self.core = k8s.CoreV1Api(self.api)
        self.apps = k8s.AppsV1Api(self.api)
        self.autoscaling = k8s.AutoscalingV2Api(self.api)
        self.custom = k8s.CustomObjectsApi(self.api)

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
        c, a, h = self.core, self.apps, self.autoscaling
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
        }
        return table[kind]

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
        if not _has_labels(found, selector):
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
        return [p for p in data.get("items", []) if _has_labels(p, selector)
                and not p.get("metadata", {}).get("deletionTimestamp")]

    def pod_metrics(self, selector: dict[str, str]) -> dict[str, tuple[float, int]]:
        """Pod name -> (CPU cores, memory bytes) from metrics.k8s.io; KubeApiError 404 when not served."""
        data = self.call("list", "pods.metrics.k8s.io", None, self.custom.list_namespaced_custom_object,
                         "metrics.k8s.io", "v1beta1", self.namespace, "pods",
                         label_selector=mf.selector_string(selector))
        out: dict[str, tuple[float, int]] = {}
        for item in data.get("items", []):
            cpu = mem = 0.0
            for c in item.get("containers", []):
                usage = c.get("usage") or {}
                cpu += usage_cpu(usage.get("cpu", "0"))
                mem += usage_memory(usage.get("memory", "0"))
            out[item.get("metadata", {}).get("name", "")] = (cpu, int(mem))
        return out

    def events(self) -> list[dict[str, Any]]:
        return self.call("list", "events", None, self.core.list_namespaced_event, self.namespace).get("items", [])

    def node_counts(self) -> dict[str, int]:
        data = self.call("list", "nodes", None, self.core.list_node)
        counts: dict[str, int] = {}
        for node in data.get("items", []):
            pool = (node.get("metadata", {}).get("labels") or {}).get(mf.NODE_POOL_LABEL, "(no pool label)")
            counts[pool] = counts.get(pool, 0) + 1
        return counts

    def delete_labelled(self, selector: dict[str, str]) -> list[str]:
        """Delete every HPA, Deployment, Service and ConfigMap carrying all `selector` labels; return kind/name."""
        deleted: list[str] = []
        errors: list[str] = []
        c, a, h = self.core, self.apps, self.autoscaling
        kinds = [
            ("horizontalpodautoscalers.autoscaling", h.list_namespaced_horizontal_pod_autoscaler,
             h.delete_namespaced_horizontal_pod_autoscaler),
            ("deployments.apps", a.list_namespaced_deployment, a.delete_namespaced_deployment),
            ("services", c.list_namespaced_service, c.delete_namespaced_service),
            ("configmaps", c.list_namespaced_config_map, c.delete_namespaced_config_map),
        ]
        for resource, list_fn, delete_fn in kinds:
            try:
                items = self.call("list", resource, None, list_fn, self.namespace,
                                  label_selector=mf.selector_string(selector)).get("items", [])
            except PlatformError as exc:
                errors.append(str(exc))
                continue
            for item in items:
                if not _has_labels(item, selector):
                    continue  # the server ignored the selector: never delete what is not ours
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
                     poll_s: float) -> dict[str, Any]:
        deadline = self.clock.monotonic() + timeout_s
        while True:
            dep = self.get_deployment(name)
            if rollout_done(dep, replicas):
                return dep
            stalled = any(c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
                          for c in (dep.get("status") or {}).get("conditions") or [])
            if stalled or self.clock.monotonic() >= deadline:
                raise PlatformError(self.diagnose(dep, replicas, timeout_s, action, selector))
            self.clock.sleep(poll_s)

    def diagnose(self, dep: dict[str, Any], replicas: int, timeout_s: float, action: str,
                 selector: dict[str, str]) -> str:
        """Why a rollout did not finish, from pod statuses and the events of the run's objects."""
        name = dep.get("metadata", {}).get("name", "?")
        status = dep.get("status") or {}
        head = (f"{action}: deployment {self.namespace}/{name} was not ready within {timeout_s:.0f}s "
                f"({status.get('readyReplicas', 0) or 0}/{replicas} ready, "
                f"{status.get('updatedReplicas', 0) or 0} updated)")
        causes: dict[str, list[str]] = {}

        def add(reason: str, text: str) -> None:
            causes.setdefault(reason, [])
            if text and text not in causes[reason]:
                causes[reason].append(text)

        try:
            pods = self.pods(selector)
        except PlatformError:
            pods = []
        for pod in pods:
            pname = pod["metadata"]["name"]
            st = pod.get("status") or {}
            for cond in st.get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                    add(cond.get("reason") or "Unschedulable", f"pod {pname}: {cond.get('message', '')}")
            for cs in st.get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in _WAITING_REASONS:
                    add(waiting["reason"], f"pod {pname}: {waiting.get('message', '')}".rstrip(": "))
                last = (cs.get("lastState") or {}).get("terminated") or {}
                if last.get("reason") == "OOMKilled":
                    add("OOMKilled", f"pod {pname}")
        try:
            events = self.events()
        except PlatformError:
            events = []
        for ev in events:
            involved = ev.get("involvedObject") or {}
            if not str(involved.get("name", "")).startswith(name) or ev.get("reason") not in _EVENT_REASONS:
                continue
            reason = ev["reason"]
            message = ev.get("message") or ev.get("note") or ""
            if reason == "Unhealthy" and "eadiness" not in message:
                continue
            add(reason, f"{involved.get('kind', '')} {involved.get('name', '')}: {message}")
        if not causes:
            return (f"{head}; no pod status or event explains it yet: run `kubectl describe deployment -n "
                    f"{self.namespace} {name}`, or raise platform.ready_timeout_s if the image starts slowly")
        parts = []
        for reason, texts in causes.items():
            hint = _HINTS.get(reason, "")
            shown = "; ".join(texts[:2]) + (f" (+{len(texts) - 2} more)" if len(texts) > 2 else "")
            parts.append(f"{reason}: {shown}" + (f" -> {hint}" if hint else ""))
        return head + ". Causes: " + " | ".join(parts)


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


def _has_labels(obj: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def usage_cpu(text: str) -> float:
    """Cores from metrics-server quantities (`123456789n`, `250u`, `15m`, `1`)."""
    text = str(text).strip()
    for suffix, factor in (("n", 1e-9), ("u", 1e-6), ("m", 1e-3)):
        if text.endswith(suffix):
            return float(text[:-1]) * factor
    return float(text or 0)


def usage_memory(text: str) -> int:
    text = str(text).strip()
    if text in ("", "0"):
        return 0
    try:
        return parse_memory(text)
    except QuantityError:
        return 0


def _limit(pod: dict[str, Any], key: str) -> float | None:
    total = 0.0
    for c in (pod.get("spec") or {}).get("containers") or []:
        value = ((c.get("resources") or {}).get("limits") or {}).get(key)
        if value is None:
            return None
        try:
            total += parse_cpu(value) if key == "cpu" else parse_memory(value)
        except QuantityError:
            return None
    return total or None


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class PortForward:
    """127.0.0.1:<free port> whose every connection is piped to a socket from `open_remote`.

    `open_remote` is called per connection, so a connection opened after a scale-up may reach a new pod
    (as behind a Service). The default opener tunnels through the API server (pods/portforward).
    """

    def __init__(self, open_remote: Callable[[], socket.socket], what: str = "port-forward"):
        self._open_remote = open_remote
        self.what = what
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"nightcap {what}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            remote = self._open_remote()
        except Exception as exc:  # the pod went away, RBAC: close this connection, keep listening
            log.warning("%s: cannot open the remote side: %s", self.what, exc)
            conn.close()
            return
        with self._lock:
            self._conns.update((conn, remote))
        sel = selectors.DefaultSelector()
        sel.register(conn, selectors.EVENT_READ, remote)
        sel.register(remote, selectors.EVENT_READ, conn)
        try:
            while not self._closed.is_set():
                for key, _ in sel.select(timeout=0.5):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (conn, remote):
                try:
                    s.close()
                except OSError:
                    pass
            with self._lock:
                self._conns.difference_update((conn, remote))

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            for s in list(self._conns):
                try:
                    s.close()
                except OSError:
                    pass


def open_pod_socket(api: k8s.ApiClient, namespace: str, pod: str, port: int) -> socket.socket:
    """A socket to `pod:port` tunnelled through the API server (needs `create` on pods/portforward).

    A separate ApiClient is used: `kubernetes.stream` swaps `call_api` on the client while it connects,
    which must not race with ordinary calls made by other threads.
    """
    from kubernetes.stream import portforward

    tunnel_api = k8s.CoreV1Api(k8s.ApiClient(configuration=api.configuration))
    forward = portforward(tunnel_api.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
    sock = forward.socket(port)
    sock.setblocking(True)
    return sock


class KubernetesPlatform:
    """`Platform` on a Kubernetes namespace: one Deployment + Service per run, an HPA when asked."""

    kind = "kubernetes"
    limits_enforced = True
    limits_note = "CPU and memory limits enforced by the kubelet (requests = limits: Guaranteed QoS)"
    poll_s = 2.0  # rollout polling period

    def __init__(self, config: Config, run_id: str, api_client: k8s.ApiClient | None = None,
                 node_pools: "GkeNodePools | None" = None, clock: Any = time, registry: "RunRegistry | None" = None):
        """`node_pools`: injected, or built on first use from platform.gke when autoscale.nodes is set.
        `registry`: where the namespace/run id and the pool's original autoscaling are recorded before they
        are touched, so `nightcap cleanup` can undo them if this process dies."""
        self.config = config
        self.registry = registry
        self.run_id = run_id
        self.namespace = config.platform.namespace
        self.clock = clock
        self.kube = Kube(api_client or api_client_for(config.platform), self.namespace, clock=clock)
        self.node_pools = node_pools
        self.name = mf.model_name(config, run_id)
        self.selector = {**mf.run_selector(run_id), mf.COMPONENT: mf.MODEL}
        self.notes: list[str] = []  # things the report should say (metrics absent, cluster-level HPA settings)
        self._spec: PodSpec | None = None
        self._replicas = 0
        self._seen_events: set[tuple[str, int]] = set()
        self._ooms: dict[str, tuple[int, int]] = {}  # pod -> (restarts seen, OOM kills counted)
        self._forward: PortForward | None = None
        self._next_pod = 0
        self._hpa = False
        self._nodes_on = False
        self._said: set[str] = set()

    # --- addresses ---------------------------------------------------------------------------------------

    @property
    def cluster_service_url(self) -> str:
        """The Service's DNS name: what in-cluster Locust workers send load to."""
        return f"http://{self.name}.{self.namespace}.svc:{self.config.platform.port}"

    @property
    def service_url(self) -> str:
        if self.config.platform.in_cluster:
            return self.cluster_service_url
        if self._forward is None:
            self._forward = PortForward(self._open_ready_pod, what=f"port-forward to {self.name}")
        return self._forward.url

    def _open_ready_pod(self) -> socket.socket:
        ready = [p["metadata"]["name"] for p in self.kube.pods(self.selector) if pod_ready(p)]
        if not ready:
            raise PlatformError(f"no ready pod of deployment {self.namespace}/{self.name} to forward to")
        self._next_pod += 1
        return self._open_pod_socket(ready[self._next_pod % len(ready)], self.config.platform.port)

    def _open_pod_socket(self, pod: str, port: int) -> socket.socket:
        return open_pod_socket(self.kube.api, self.namespace, pod, port)

    @property
    def replicas(self) -> int:
        return self._replicas

    # --- lifecycle ---------------------------------------------------------------------------------------

    def deploy(self, spec: PodSpec, replicas: int) -> None:
        if self.registry is not None:
            record = {"namespace": self.namespace, "run_id": self.run_id, "context": self.config.platform.context,
                      "in_cluster": self.config.platform.in_cluster}
            self.registry.update(lambda r: setattr(r, "kubernetes", record))
        self._spec, self._replicas = spec, replicas
        self.kube.create(mf.model_deployment(self.config, self.run_id, spec, replicas), self.run_id)
        self.kube.create(mf.model_service(self.config, self.run_id), self.run_id)
        self._wait(replicas, "deploy")

    def scale(self, replicas: int) -> None:
        self.kube.patch_deployment(self.name, {"spec": {"replicas": replicas}}, MERGE_PATCH)
        self._replicas = replicas
        self._wait(replicas, f"scale to {replicas}")

    def set_resources(self, spec: PodSpec) -> None:
        """Replace the whole container (a JSON patch), so a removed limit is really removed."""
        container = mf.model_container(self.config, spec)
        body = [
            {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": mf.MODEL},
            {"op": "replace", "path": "/spec/template/spec/containers/0", "value": container},
        ]
        self.kube.patch_deployment(self.name, body, JSON_PATCH)
        self._spec = spec
        self._wait(self._replicas, f"set resources (cpu={spec.cpu}, memory={spec.memory}, "
                                   f"concurrency={spec.concurrency})")

    def _wait(self, replicas: int, action: str) -> None:
        self.kube.wait_rollout(self.name, replicas, self.config.platform.ready_timeout_s, action, self.selector,
                               self.poll_s)

    # --- observation -------------------------------------------------------------------------------------

    def _note(self, key: str, text: str, out: list[str]) -> None:
        if key not in self._said:
            self._said.add(key)
            self.notes.append(text)
            out.append(f"nightcap: {text}")

    def observe(self) -> Observation:
        obs = Observation(at=self.clock.time())
        pods = self.kube.pods(self.selector)
        usage: dict[str, tuple[float, int]] = {}
        try:
            usage = self.kube.pod_metrics(self.selector)
        except KubeApiError as exc:
            obs.metrics_available = False
            if exc.status == 404:
                self._note("metrics", "metrics.k8s.io is not served (metrics-server absent): per-pod CPU and "
                                      "memory were not measured; install metrics-server", obs.events)
            else:
                self._note("metrics", f"pod metrics unavailable: {exc}", obs.events)
        for pod in pods:
            obs.replicas.append(self._sample(pod, usage.get(pod["metadata"]["name"]), obs.metrics_available))
        obs.pending = sum(1 for r in obs.replicas if r.phase == "Pending")
        try:
            obs.nodes = self.kube.node_counts()
        except KubeApiError as exc:
            self._note("nodes", f"node counts unavailable: {exc}", obs.events)
        obs.events.extend(self._new_events())
        return obs

    def _sample(self, pod: dict[str, Any], usage: tuple[float, int] | None, metrics: bool) -> ReplicaSample:
        name = pod["metadata"]["name"]
        st = pod.get("status") or {}
        statuses = st.get("containerStatuses") or []
        restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
        oom_now = any(((cs.get("lastState") or {}).get("terminated") or {}).get("reason") == "OOMKilled"
                      or ((cs.get("state") or {}).get("terminated") or {}).get("reason") == "OOMKilled"
                      for cs in statuses)
        if name not in self._ooms:
            ooms = 1 if oom_now else 0  # first sight: the last termination is all we can know
        else:
            seen, ooms = self._ooms[name]
            if oom_now and restarts > seen:
                ooms += restarts - seen
        self._ooms[name] = (restarts, ooms)
        ready = pod_ready(pod)
        phase = st.get("phase") or "Pending"
        if phase == "Running" and not ready:
            phase = "Starting"
        elif phase in ("Failed", "Succeeded", "Unknown"):
            phase = "Failed"
        return ReplicaSample(
            name=name, ready=ready, phase=phase,
            cpu_cores=usage[0] if usage and metrics else None,
            cpu_limit=_limit(pod, "cpu"),
            memory_bytes=usage[1] if usage and metrics else None,
            memory_limit=int(m) if (m := _limit(pod, "memory")) else None,
            restarts=restarts, oom_kills=ooms,
        )

    def _new_events(self) -> list[str]:
        """Events of this run's objects not reported before (keyed by uid and count: no clock-skew games)."""
        try:
            events = self.kube.events()
        except KubeApiError as exc:
            out: list[str] = []
            self._note("events", f"events unavailable: {exc}", out)
            return out
        fresh = []
        for ev in events:
            involved = ev.get("involvedObject") or ev.get("regarding") or {}
            iname = str(involved.get("name", ""))
            if iname != self.name and not iname.startswith(self.name + "-"):
                continue
            key = (ev.get("metadata", {}).get("uid") or ev.get("metadata", {}).get("name", ""),
                   int(ev.get("count") or 1))
            if key in self._seen_events:
                continue
            self._seen_events.add(key)
            when = _timestamp(ev.get("lastTimestamp") or ev.get("eventTime")
                              or ev.get("metadata", {}).get("creationTimestamp")) or 0.0
            text = f"{ev.get('type', 'Normal')} {involved.get('kind', '')}/{iname} {ev.get('reason', '')}: " \
                   f"{(ev.get('message') or '').strip()}"
            if key[1] > 1:
                text += f" (x{key[1]})"
            fresh.append((when, text))
        return [text for _, text in sorted(fresh, key=lambda x: x[0])]

    # --- autoscaling -------------------------------------------------------------------------------------

    def enable_autoscaling(self, hpa: HpaSpec) -> None:
        if self._spec is not None and self._spec.cpu is None:
            raise PlatformError("an HPA on CPU utilization needs a CPU request: set platform.cpu (or the tuned cpu)")
        cluster_level = []
        if hpa.sync_period_s != 15.0:
            cluster_level.append(f"sync period {hpa.sync_period_s:g}s")
        if hpa.tolerance != 0.1:
            cluster_level.append(f"tolerance {hpa.tolerance:g}")
        if hpa.readiness_delay_s != 30.0:
            cluster_level.append(f"readiness delay {hpa.readiness_delay_s:g}s")
        if cluster_level:
            self.notes.append("HPA " + ", ".join(cluster_level) + " are kube-controller-manager settings and were "
                              "not applied; the cluster's own values were in effect")
        self.kube.create(mf.hpa(self.config, self.run_id, hpa), self.run_id)
        self._hpa = True
        nodes = self.config.autoscale.nodes
        if nodes and not self._nodes_on:
            self.enable_node_autoscaling(int(nodes.get("min", 1)), int(nodes.get("max", 3)))

    def _pools(self) -> "GkeNodePools | None":
        if self.node_pools is None and self.config.platform.gke is not None:
            from nightcap.platforms.gke import GkeNodePools

            self.node_pools = GkeNodePools(self.config.platform.gke, clock=self.clock)
        if self.node_pools is not None and getattr(self.node_pools, "node_count", False) is None:
            pool = self.config.platform.gke.node_pool if self.config.platform.gke else None
            self.node_pools.node_count = lambda: self.kube.node_counts().get(pool or "", 0)  # type: ignore[union-attr]
        if self.node_pools is not None and self.registry is not None and hasattr(self.node_pools, "on_original"):
            if self.node_pools.on_original is None:
                self.node_pools.on_original = self._record_pool
                self.node_pools.on_restored = self._forget_pool
        return self.node_pools

    def _record_pool(self, record: dict[str, Any]) -> None:
        assert self.registry is not None
        self.registry.update(lambda r: r.node_pools.append(record))

    def _forget_pool(self) -> None:
        assert self.registry is not None and self.node_pools is not None
        name = self.node_pools.pool_name  # type: ignore[union-attr]
        self.registry.update(lambda r: r.node_pools.__setitem__(
            slice(None), [p for p in r.node_pools if p.get("name") != name]))

    def enable_node_autoscaling(self, min_nodes: int, max_nodes: int) -> None:
        """Turn on the GKE node pool's autoscaling (platform.gke); its original settings are recorded first."""
        pools = self._pools()
        if pools is None:
            if "nodes-no-gke" not in self._said:
                self._said.add("nodes-no-gke")
                self.notes.append("autoscale.nodes is set but platform.gke is not: node-pool autoscaling was "
                                  "not changed")
            return
        pools.set_autoscaling(True, int(min_nodes), int(max_nodes))
        self._nodes_on = True

    def restore_node_autoscaling(self) -> None:
        """Put the node pool's autoscaling back as found (a no-op when nothing was changed)."""
        if self.node_pools is not None:
            self.node_pools.restore()
        self._nodes_on = False

    def autoscaling_status(self) -> AutoscaleStatus:
        h = self.kube.autoscaling
        data = self.kube.call("get", "horizontalpodautoscalers.autoscaling", self.name,
                              h.read_namespaced_horizontal_pod_autoscaler, self.name, self.namespace)
        st = data.get("status") or {}
        dep = self.kube.get_deployment(self.name)
        pods = self.kube.pods(self.selector)
        try:
            counts = self.kube.node_counts()
            pool = self.config.platform.gke.node_pool if self.config.platform.gke else None
            nodes: int | None = counts.get(pool, 0) if pool else sum(counts.values())
        except KubeApiError:
            nodes = None
        current = int(st.get("currentReplicas") or 0)
        self._replicas = current or self._replicas
        return AutoscaleStatus(
            current_replicas=current,
            desired_replicas=int(st.get("desiredReplicas") or 0),
            ready_replicas=int((dep.get("status") or {}).get("readyReplicas") or 0),
            pending=sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Pending"),
            nodes=nodes,
            last_scale_time=_timestamp(st.get("lastScaleTime")),
            conditions=[f"{c.get('type')}={c.get('status')} ({c.get('reason', '')}): {c.get('message', '')}"
                        for c in st.get("conditions") or []],
        )

    def disable_autoscaling(self) -> None:
        h = self.kube.autoscaling
        errors = []
        try:
            self.kube.call("delete", "horizontalpodautoscalers.autoscaling", self.name,
                           h.delete_namespaced_horizontal_pod_autoscaler, self.name, self.namespace)
        except KubeApiError as exc:
            if exc.status != 404:
                errors.append(str(exc))
        self._hpa = False
        try:
            self.restore_node_autoscaling()
        except PlatformError as exc:
            errors.append(str(exc))
        try:
            replicas = (self.kube.get_deployment(self.name).get("spec") or {}).get("replicas")
            self._replicas = int(replicas if replicas is not None else self._replicas)
        except KubeApiError:
            pass
        if errors:
            raise PlatformError("; ".join(errors))

    def teardown(self) -> None:
        """Delete every object of this run by label (and nothing else); restore the node pool. Idempotent."""
        errors = []
        if self._forward is not None:
            self._forward.close()
            self._forward = None
        try:
            deleted = self.kube.delete_labelled(mf.run_selector(self.run_id))
            deleted += self.kube.delete_secret(mf.locust_name(self.run_id, "key"), mf.run_selector(self.run_id))
            log.info("teardown of run %s deleted %s", self.run_id, deleted)
        except PlatformError as exc:
            errors.append(str(exc))
        try:
            self.restore_node_autoscaling()
        except PlatformError as exc:
            errors.append(str(exc))
        if errors:
            raise PlatformError(f"teardown of run {self.run_id} in namespace {self.namespace} was incomplete: "
                                + " | ".join(errors))


def cleanup_run(api_client: k8s.ApiClient, namespace: str, run_id: str, clock: Any = time) -> list[str]:
    """Delete the objects of one (dead) run by its labels; return `resource/name` of each deleted."""
    kube = Kube(api_client, namespace, clock=clock)
    return (kube.delete_labelled(mf.run_selector(run_id))
            + kube.delete_secret(mf.locust_name(run_id, "key"), mf.run_selector(run_id)))


def cleanup_dead_runs(api_client: k8s.ApiClient, namespace: str, live_run_ids: list[str] | set[str],
                      clock: Any = time) -> list[str]:
    """Delete nightcap objects whose run-id label is not a live run's; return `resource/name` of each deleted.

    Objects without a run-id label, or not managed by nightcap, are never touched.
    """
    kube = Kube(api_client, namespace, clock=clock)
    live = {mf.run_label(r) for r in live_run_ids}
    dead: set[str] = set()
    c, a, h = kube.core, kube.apps, kube.autoscaling
    managed = {mf.MANAGED_BY: mf.MANAGER}
    for resource, list_fn in (("horizontalpodautoscalers.autoscaling", h.list_namespaced_horizontal_pod_autoscaler),
                              ("deployments.apps", a.list_namespaced_deployment),
                              ("services", c.list_namespaced_service),
                              ("configmaps", c.list_namespaced_config_map)):
        items = kube.call("list", resource, None, list_fn, namespace,
                          label_selector=mf.selector_string(managed)).get("items", [])
        for item in items:
            labels = (item.get("metadata") or {}).get("labels") or {}
            run = labels.get(mf.RUN_ID)
            if labels.get(mf.MANAGED_BY) == mf.MANAGER and run and run not in live:
                dead.add(run)
    deleted: list[str] = []
    for run in sorted(dead):
        selector = {mf.MANAGED_BY: mf.MANAGER, mf.RUN_ID: run}
        deleted += kube.delete_labelled(selector)
        deleted += kube.delete_secret(mf.locust_name(run, "key"), selector)  # the label is the run id
    return deleted
