"""Why a rollout did not finish, in words that say what to change (pure reading: pods and events only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nightcap.platforms.base import PlatformError

if TYPE_CHECKING:
    from nightcap.platforms.kube_client import Kube

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
NO_ROOM = ("FailedScheduling", "Unschedulable")
_EVENT_REASONS = {"FailedScheduling", "Unhealthy", "FailedCreate", "FailedMount", "BackOff", "Failed"}


def diagnose(kube: "Kube", dep: dict[str, Any], replicas: int, timeout_s: float, action: str,
             selector: dict[str, str]) -> tuple[str, dict[str, list[str]]]:
    """Why a rollout did not finish, from pod statuses and the events of the run's objects: the message
    and the reasons found (FailedScheduling, ImagePullBackOff...)."""
    name = dep.get("metadata", {}).get("name", "?")
    status = dep.get("status") or {}
    head = (f"{action}: deployment {kube.namespace}/{name} was not ready within {timeout_s:.0f}s "
            f"({status.get('readyReplicas', 0) or 0}/{replicas} ready, "
            f"{status.get('updatedReplicas', 0) or 0} updated)")
    causes: dict[str, list[str]] = {}

    def add(reason: str, text: str) -> None:
        causes.setdefault(reason, [])
        if text and text not in causes[reason]:
            causes[reason].append(text)

    try:
        pods = kube.pods(selector)
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
        events = kube.events()
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
                f"{kube.namespace} {name}`, or raise platform.ready_timeout_s if the image starts slowly"), {}
    parts = []
    for reason, texts in causes.items():
        hint = _HINTS.get(reason, "")
        shown = "; ".join(texts[:2]) + (f" (+{len(texts) - 2} more)" if len(texts) > 2 else "")
        parts.append(f"{reason}: {shown}" + (f" -> {hint}" if hint else ""))
    return head + ". Causes: " + " | ".join(parts), causes
