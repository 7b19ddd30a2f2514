"""Why a rollout did not finish, in words that say what to change (pure reading: pods and events only).

Only events newer than the change count: an hour of events holds the previous candidate's FailedScheduling,
which says nothing about this one. A FailedScheduling is "no room" (a fact about the pod size and the nodes,
which tuning records as such) only when the scheduler names missing resources; nodes excluded only by taints,
node selectors or affinity are a placement problem with a config fix, not a full cluster.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from nightcap.platforms.base import PlatformError
from nightcap.kube.metrics import timestamp


class PodsAndEvents(Protocol):
    """What a diagnosis reads from the cluster (`client.Kube`, which calls `diagnose`, provides it)."""

    namespace: str

    def pods(self, selector: dict[str, str]) -> list[dict[str, Any]]: ...

    def events(self) -> list[dict[str, Any]]: ...


# what to change, per cause; `image` and `size` name the config keys of the component that did not roll out
MODEL_KEYS = {"image": "target.image", "size": "lower platform.cpu / platform.memory"}
LOCUST_KEYS = {"image": "load.locust_image", "size": "lower load.workers (each Locust pod requests 1 CPU and 1Gi)"}

_HINTS = {
    "ImagePullBackOff": "check that {image} exists and that the nodes may pull it (platform.kubernetes."
                        "image_pull_secrets)",
    "ErrImagePull": "check that {image} exists and that the nodes may pull it (platform.kubernetes.image_pull_secrets)",
    "InvalidImageName": "{image} is not a valid image reference",
    "FailedScheduling": "no node has room for the pod: {size}, or add nodes (autoscale.nodes turns on node-pool "
                        "autoscaling)",
    "Unschedulable": "no node has room for the pod: {size}, or add nodes",
    "Placement": "no node may take the pod whatever its size: tolerate the nodes' taints (platform.kubernetes."
                 "tolerations) or change the node selector (platform.kubernetes.*_node_selector); Locust needs "
                 "nodes outside the model's pool",
    "Unhealthy": "the readiness probe fails: check target.ready_path, platform.port and the server's logs",
    "StartupProbe": "the server did not answer target.ready_path within target.startup_timeout_s: raise it if the "
                    "model loads slowly, else check target.ready_path, platform.port and `kubectl logs`",
    "CrashLoopBackOff": "the container keeps exiting: check target.command and `kubectl logs`",
    "CreateContainerConfigError": "the container spec refers to something missing (ConfigMap, Secret), or the image "
                                  "runs as root while the pod must not: set platform.kubernetes.run_as_user",
    "OOMKilled": "the container ran out of memory: raise platform.memory",
    "FailedCreate": "the ReplicaSet cannot create pods (ResourceQuota, LimitRange, PodSecurity or an admission "
                    "webhook): `nightcap preflight` dry-runs each pod and says which",
    "FailedMount": "a volume cannot be mounted",
    "BackOff": "the container keeps restarting or the image keeps failing to pull",
}
_WAITING_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                    "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
NO_ROOM = ("FailedScheduling", "Unschedulable")
_EVENT_REASONS = {"FailedScheduling", "Unhealthy", "FailedCreate", "FailedMount", "BackOff", "Failed"}
_SHORT_OF = re.compile(r"Insufficient [\w./-]+|Too many pods|node\(s\) didn't have free ports", re.IGNORECASE)
_EXCLUDED = re.compile(r"untolerated taint|didn't match Pod's node affinity|didn't match pod (anti-)?affinity|"
                       r"node\(s\) were unschedulable|didn't match pod topology spread", re.IGNORECASE)


def scheduling_kind(message: str) -> str:
    """"room" when the scheduler lacks resources on some node, "placement" when every node it names was excluded
    by taints, selectors or affinity (more nodes of the same kind would not help), "" when it does not say."""
    if _SHORT_OF.search(message):
        return "room"
    return "placement" if _EXCLUDED.search(message) else ""


def _event_time(ev: dict[str, Any]) -> float | None:
    series = ev.get("series") or {}
    return timestamp(series.get("lastObservedTime") or ev.get("lastTimestamp") or ev.get("eventTime")
                     or (ev.get("metadata") or {}).get("creationTimestamp"))


def _pod_causes(pods: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(reason, text) from pod statuses: unschedulable, waiting containers, OOM kills."""
    out = []
    for pod in pods:
        pname = pod["metadata"]["name"]
        st = pod.get("status") or {}
        for cond in st.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                out.append((cond.get("reason") or "Unschedulable", f"pod {pname}: {cond.get('message', '')}"))
        for cs in st.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _WAITING_REASONS:
                out.append((waiting["reason"], f"pod {pname}: {waiting.get('message', '')}".rstrip(": ")))
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if last.get("reason") == "OOMKilled":
                out.append(("OOMKilled", f"pod {pname}"))
    return out


def diagnose(kube: PodsAndEvents, dep: dict[str, Any], replicas: int, timeout_s: float, action: str,
             selector: dict[str, str], since: float | None = None,
             keys: dict[str, str] | None = None) -> tuple[str, dict[str, list[str]]]:
    """Why a rollout did not finish, from pod statuses and the events of the run's objects newer than `since`
    (epoch seconds; events without a time count): the message and the reasons found."""
    name = dep.get("metadata", {}).get("name", "?")
    status = dep.get("status") or {}
    head = (f"{action}: deployment {kube.namespace}/{name} was not ready within {timeout_s:.0f}s "
            f"({status.get('readyReplicas', 0) or 0}/{replicas} ready, "
            f"{status.get('updatedReplicas', 0) or 0} updated)")
    causes: dict[str, list[str]] = {}

    def add(reason: str, text: str) -> None:
        if reason in NO_ROOM and scheduling_kind(text) == "placement":
            reason = "Placement"
        causes.setdefault(reason, [])
        if text and text not in causes[reason]:
            causes[reason].append(text)

    try:
        pods = kube.pods(selector)
    except PlatformError:
        pods = []
    for reason, text in _pod_causes(pods):
        add(reason, text)
    try:
        events = kube.events()
    except PlatformError:
        events = []
    for ev in events:
        involved = ev.get("involvedObject") or ev.get("regarding") or {}
        if not str(involved.get("name", "")).startswith(name) or ev.get("reason") not in _EVENT_REASONS:
            continue
        when = _event_time(ev)
        if since is not None and when is not None and when < since:
            continue  # from an earlier change (the previous candidate): not this rollout's cause
        reason = ev["reason"]
        message = ev.get("message") or ev.get("note") or ""
        if reason == "Unhealthy":
            if "tartup probe" in message:
                reason = "StartupProbe"
            elif "eadiness" not in message:
                continue
        add(reason, f"{involved.get('kind', '')} {involved.get('name', '')}: {message}")
    if not causes:
        return (f"{head}; no pod status or event explains it yet: run `kubectl describe deployment -n "
                f"{kube.namespace} {name}`, or raise platform.ready_timeout_s if the image pulls slowly"), {}
    words = {**MODEL_KEYS, **(keys or {})}
    parts = []
    for reason, texts in causes.items():
        hint = _HINTS.get(reason, "").format(**words)
        shown = "; ".join(texts[:2]) + (f" (+{len(texts) - 2} more)" if len(texts) > 2 else "")
        parts.append(f"{reason}: {shown}" + (f" -> {hint}" if hint else ""))
    return head + ". Causes: " + " | ".join(parts), causes


def admission_hint(message: str) -> str:
    """What to change when admission (not RBAC) refused an object, from the API server's documented messages:
    `violates PodSecurity "restricted:latest": ...`, `exceeded quota: ...` / `failed quota: ...: must specify
    limits.cpu`, `maximum cpu usage per Container is ...` (LimitRange), `admission webhook "..." denied`."""
    text = message.lower()
    if "podsecurity" in text:
        return ("the namespace enforces a Pod Security level this pod does not meet (the pods nightcap writes meet "
                "'restricted'; an image that must run as root cannot: set platform.kubernetes.run_as_user, or "
                "use a namespace whose pod-security.kubernetes.io/enforce label allows it)")
    if "quota" in text:
        return ("a ResourceQuota of the namespace refuses it (`kubectl describe resourcequota`): raise the quota, or "
                "lower what the run asks for (platform.cpu, platform.memory, tune.cpu, tune.memory, load.workers, "
                "scaling.max_replicas)")
    if "per container" in text or "per pod" in text or "limitrange" in text:
        return ("a LimitRange of the namespace bounds each container (`kubectl describe limitrange`): keep "
                "platform.cpu / platform.memory and every tune.cpu / tune.memory within it")
    return "an admission webhook or policy refused it: ask the namespace's owner what it requires"
