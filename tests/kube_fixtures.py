"""The kmock cluster the Kubernetes platform tests share: the API emulator with its controllers, a fake clock,
and builders for configs, platforms, pods and events (see test_kubernetes_platform.py's docstring)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import kmock
import pytest

from kmock_api import KmockApi
from nightcap.config import Config, validate
from nightcap.kube import manifests as mf
from nightcap.platforms.base import PodSpec
from nightcap.kube.platform import KubernetesPlatform

NS = "capacity"
RUN = "run-0001"
DEPLOY = "apps/v1/deployments"
RESOURCES = ["v1/pods", "v1/events", "v1/nodes", "v1/services", "v1/configmaps", "v1/secrets", DEPLOY,
             "autoscaling/v2/horizontalpodautoscalers", "networking.k8s.io/v1/networkpolicies"]
METRICS = "metrics.k8s.io/v1beta1/pods"


class Cluster(KmockApi):
    """kmock on a background loop, with thread-safe helpers to play the controllers."""

    def __init__(self) -> None:
        super().__init__(RESOURCES)

    def put(self, resource: str, name: str, obj: dict[str, Any], namespace: str | None = NS) -> None:
        obj = {"metadata": {"name": name, **({"namespace": namespace} if namespace else {})}, **obj}
        obj["metadata"] = {"name": name, **({"namespace": namespace} if namespace else {}), **obj["metadata"]}
        self.run(lambda: self.kmock.objects.__setitem__((resource, namespace, name), obj))

    def patch(self, resource: str, name: str, changes: dict[str, Any], namespace: str | None = NS) -> None:
        self.run(lambda: self.kmock.objects[resource, namespace, name].patch(changes))

    def obj(self, resource: str, name: str, namespace: str | None = NS) -> dict[str, Any]:
        return self.run(lambda: self.kmock.objects[resource, namespace, name].raw)

    def exists(self, resource: str, name: str, namespace: str | None = NS) -> bool:
        def check() -> bool:
            key = (kmock.resource(resource), namespace, name)  # `in` does not parse resource strings
            return key in self.kmock.objects and not self.kmock.objects[key].deleted
        return self.run(check)

    def requests(self, method: str | None = None) -> list[Any]:
        reqs = self.run(lambda: list(self.kmock))
        return [r for r in reqs if method is None or str(r.method.value).upper() == method]

    def react(self, criteria: str, *answers: Any) -> None:
        """Answer matching requests with `answers` in turn (exceptions become API errors), then normally."""
        it = iter(answers)
        self.run(lambda: self.kmock[criteria] << (lambda: next(it, NotImplemented)))


class FakeClock:
    """Time that moves only when the code sleeps; `at(t, fn)` plays a controller at time t."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._hooks: list[tuple[float, Callable[[], None]]] = []

    def at(self, t: float, fn: Callable[[], None]) -> None:
        self._hooks.append((t, fn))

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        due = [h for h in self._hooks if h[0] <= self.now]
        self._hooks = [h for h in self._hooks if h[0] > self.now]
        for _, fn in sorted(due, key=lambda h: h[0]):
            fn()


@pytest.fixture()
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.close()


def make_config(**platform: Any) -> Config:
    return validate({
        "target": {"name": "wine", "kind": "mlflow", "image": "registry.example/wine:1.0", "startup_timeout_s": 30},
        "platform": {"kind": "kubernetes", "namespace": NS, "port": 8080, "ready_timeout_s": 30, **platform},
        "load": {"workers": 2},
        "slo": {"p95_ms": 500},
        "autoscale": {"nodes": {"min": 1, "max": 5}},
    })


def make_platform(cluster: Cluster, clock: FakeClock, config: Config | None = None, **kwargs: Any
                  ) -> KubernetesPlatform:
    p = KubernetesPlatform(config or make_config(), RUN, api_client=cluster.api, clock=clock, **kwargs)
    p.kube.request_timeout_s = 0.5
    return p


SPEC = PodSpec(cpu=0.5, memory=256 * 2**20, concurrency=2)
NAME = mf.model_name(make_config(), RUN)
POD_LABELS = {**mf.labels(make_config(), RUN, mf.MODEL), "pod-template-hash": "abc"}


def ready_status(n: int, generation: int = 1) -> dict[str, Any]:
    return {"status": {"observedGeneration": generation, "replicas": n, "updatedReplicas": n, "readyReplicas": n,
                       "availableReplicas": n}, "metadata": {"generation": generation}}


def pod(name: str, phase: str = "Running", ready: bool = True, restarts: int = 0, oom: bool = False,
        waiting: str | None = None, unschedulable: str | None = None) -> dict[str, Any]:
    cs: dict[str, Any] = {"name": "model", "ready": ready, "restartCount": restarts, "image": "x", "imageID": "",
                          "state": {"running": {}} if phase == "Running" else {"waiting": {"reason": waiting or ""}}}
    if waiting:
        cs["state"] = {"waiting": {"reason": waiting, "message": f"{waiting} for registry.example/wine:1.0"}}
    if oom:
        cs["lastState"] = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                           "message": unschedulable})
    return {"metadata": {"labels": POD_LABELS},
            "spec": {"containers": [{"name": "model", "image": "registry.example/wine:1.0",
                                     "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}}]},
            "status": {"phase": phase, "conditions": conditions,
                       "containerStatuses": [] if unschedulable else [cs]}}


def event(name: str, kind: str, obj: str, reason: str, message: str, count: int = 1,
          etype: str = "Warning") -> dict[str, Any]:
    return {"metadata": {"uid": f"uid-{name}"}, "involvedObject": {"kind": kind, "name": obj, "namespace": NS},
            "reason": reason, "message": message, "count": count, "type": etype,
            "lastTimestamp": "2024-06-01T02:00:00Z"}
