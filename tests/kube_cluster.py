"""A fake Kubernetes cluster for the flow tests: kmock as the API server, and a controller thread playing
kube-controller-manager and the kubelet (Deployments become ready, one Running pod per replica with
metrics.k8s.io usage, the HPA moves the Deployment). Plus the reference server standing in for model pods."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from kmock_api import KmockApi
from nightcap.kube import manifests as mf
from nightcap.processes.ports import free_port

NS = "capacity"
SLOTS, SERVICE_MS = 4, 25.0
CAPACITY_RPS = SLOTS * 1000 / SERVICE_MS  # 160 rps: the reference server's exact capacity
RESOURCES = ["v1/pods", "v1/events", "v1/nodes", "v1/services", "v1/configmaps", "v1/secrets",
             "apps/v1/deployments", "autoscaling/v2/horizontalpodautoscalers", "metrics.k8s.io/v1beta1/pods",
             "networking.k8s.io/v1/networkpolicies"]


class FakeCluster(KmockApi):
    """kmock on a background loop, and a controller thread that plays kube-controller-manager and kubelet."""

    hpa_reacts_after_s = 2.0

    def __init__(self) -> None:
        super().__init__(RESOURCES)
        self.hpa_seen: dict[str, float] = {}
        self.hpa_statuses: list[dict[str, Any]] = []
        self.max_pods = 0
        self.serial = 0
        self.on_tick: list[Callable[[], None]] = []
        self.on_close: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self.run(lambda: self.kmock.objects.__setitem__(
            ("v1/nodes", None, "node-0"), {"metadata": {"name": "node-0", "labels": {mf.NODE_POOL_LABEL: "models"}},
                                           "status": {"allocatable": {"cpu": "7910m", "memory": "28Gi"}}}))
        self.controller = threading.Thread(target=self._control, daemon=True)
        self.controller.start()

    def live(self, plural: str) -> dict[str, dict[str, Any]]:
        """name -> object of one resource in the namespace (not deleted); metrics.k8s.io pods are not pods."""
        group = {"deployments": "apps", "horizontalpodautoscalers": "autoscaling",
                 "networkpolicies": "networking.k8s.io"}.get(plural, "")
        return {key[2]: obj.raw for key, obj in self.kmock.objects.items()
                if key[0].plural == plural and (key[0].group or "") == group and key[1] == NS and not obj.deleted}

    def _control(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.run(self._reconcile)
                for fn in self.on_tick:
                    fn()
            except Exception:  # the loop is closing
                return

    def _reconcile(self) -> None:
        objects = self.kmock.objects
        now = time.monotonic()
        deployments = self.live("deployments")
        # the HPA controller: after a while it wants 2 replicas (within min/max) and scales the Deployment
        for name, hpa in self.live("horizontalpodautoscalers").items():
            target = hpa["spec"]["scaleTargetRef"]["name"]
            dep = deployments.get(target)
            if dep is None:
                continue
            first = self.hpa_seen.setdefault(name, now)
            current = int(dep["spec"].get("replicas") or 0)
            desired = current
            if now - first >= self.hpa_reacts_after_s:
                desired = max(hpa["spec"].get("minReplicas", 1), min(hpa["spec"]["maxReplicas"], 2))
            status = {"currentReplicas": current, "desiredReplicas": desired,
                      "conditions": [{"type": "AbleToScale", "status": "True", "reason": "SucceededRescale",
                                      "message": "the HPA controller was able to update the target scale"}]}
            if status != hpa.get("status"):
                objects["autoscaling/v2/horizontalpodautoscalers", NS, name].patch({"status": status})
                self.hpa_statuses.append(status)
            if desired != current:
                objects["apps/v1/deployments", NS, target].patch({"spec": {"replicas": desired}})
                deployments[target]["spec"]["replicas"] = desired
        # the Deployment controller and kubelet: every replica Running and Ready at once, with usage
        wanted: dict[str, dict[str, Any]] = {}
        for name, dep in deployments.items():
            n = int(dep["spec"].get("replicas") or 0)
            generation = (dep.get("metadata") or {}).get("generation") or 1
            status = {"observedGeneration": generation, "replicas": n, "updatedReplicas": n, "readyReplicas": n,
                      "availableReplicas": n}
            if dep.get("status") != status:
                objects["apps/v1/deployments", NS, name].patch({"status": status})
            template = dep["spec"]["template"]
            for i in range(n):
                wanted[f"{name}-abc-{i}-"] = template  # slot -> template; a replaced pod gets a new name
        pods = self.live("pods")
        slot = {p: p[:p.rindex("-") + 1] for p in pods}
        for pod_name in [p for p in pods if slot[p] not in wanted]:
            del objects["v1/pods", NS, pod_name]
            if ("metrics.k8s.io/v1beta1/pods", NS, pod_name) in objects:
                del objects["metrics.k8s.io/v1beta1/pods", NS, pod_name]
        for prefix, template in wanted.items():
            if prefix in slot.values():
                continue
            self.serial += 1
            pod_name = f"{prefix}{self.serial}"
            labels = {**template["metadata"]["labels"], "pod-template-hash": "abc"}
            objects["v1/pods", NS, pod_name] = {
                "metadata": {"name": pod_name, "namespace": NS, "labels": labels},
                "spec": template["spec"],
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                           "containerStatuses": [{"name": "model", "ready": True, "restartCount": 0,
                                                  "image": "x", "imageID": "", "state": {"running": {}}}]},
            }
            objects["metrics.k8s.io/v1beta1/pods", NS, pod_name] = {
                "metadata": {"name": pod_name, "namespace": NS, "labels": labels},
                "containers": [{"name": "model", "usage": {"cpu": "300m", "memory": "100Mi"}}],
            }
        # metrics-server: each pod's CPU as a rate over the last second, ending now
        stamp = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        for key, obj in list(objects.items()):
            if key[0].group == "metrics.k8s.io" and not obj.deleted:
                obj.patch({"timestamp": stamp, "window": "1s"})
        self.max_pods = max(self.max_pods, len(wanted))

    def obj_of(self, plural: str, name: str) -> dict[str, Any]:
        """One live object of the namespace (call on the server's loop, through `run`)."""
        return self.live(plural)[name]

    def live_nodes(self) -> list[str]:
        """Node names (call on the server's loop, through `run`)."""
        return [key[2] for key, obj in self.kmock.objects.items() if key[0].plural == "nodes" and not obj.deleted]

    def add_node(self, name: str, pool: str, cpu: str = "3920m", memory: str = "13Gi") -> None:
        node = {"metadata": {"name": name, "labels": {mf.NODE_POOL_LABEL: pool}},
                "status": {"allocatable": {"cpu": cpu, "memory": memory}}}
        self.run(lambda: self.kmock.objects.__setitem__(("v1/nodes", None, name), node))

    def requests(self, method: str) -> list[Any]:
        return [r for r in self.run(lambda: list(self.kmock)) if str(r.method.value).upper() == method]

    def close(self) -> None:
        self._stop.set()
        self.controller.join(timeout=5)
        for fn in self.on_close:
            fn()
        super().close()


def start_reference_server(slots: int = 4, service_ms: float = 25.0) -> tuple[subprocess.Popen, int]:
    """The stand-in for the model pods on 127.0.0.1, ready to answer; the caller stops it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nightcap.targets.reference_server", "--host", "127.0.0.1",
                             "--port", str(port), "--slots", str(slots), "--service-ms", str(service_ms),
                             "--queue", "64"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1):
                return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                stop_process(proc)
                raise RuntimeError("the reference server did not start") from None
            time.sleep(0.1)


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
