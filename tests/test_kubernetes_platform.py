"""KubernetesPlatform and KubernetesLocust with the real `kubernetes` client against kmock's HTTP API emulator.

kmock serves real HTTP (aiohttp) on 127.0.0.1 from a background event loop; the platform's blocking client
talks to it like to an API server. The emulator stores what is created, patched and deleted; the tests play
the controllers (rollout status, pods, events, metrics) from the fake clock's sleeps, so waiting is instant.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import kmock
import pytest

from kmock_api import FakeMaster, KmockApi, requests_outside_rbac
from nightcap.config import Config, validate
from nightcap.load.kubernetes import KubernetesLocust
from nightcap.platforms import manifests as mf
from nightcap.platforms.base import HpaSpec, NoRoomForPods, Platform, PlatformError, PodSpec
from nightcap.platforms.kube_client import cleanup_dead_runs
from nightcap.platforms.kubernetes import KubernetesPlatform

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
        "target": {"name": "wine", "kind": "mlflow", "image": "registry.example/wine:1.0"},
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


# --- deploy / rollout --------------------------------------------------------------------------------------


def test_deploy_creates_exactly_the_manifests_and_waits_for_the_rollout(cluster: Cluster) -> None:
    clock = FakeClock()
    p = make_platform(cluster, clock)
    assert isinstance(p, Platform)
    clock.at(2, lambda: cluster.patch(DEPLOY, NAME, {"status": {"replicas": 2, "updatedReplicas": 2,
                                                                 "readyReplicas": 1, "availableReplicas": 1}}))
    clock.at(6, lambda: cluster.patch(DEPLOY, NAME, ready_status(2)))
    p.deploy(SPEC, 2)

    posts = cluster.requests("POST")
    assert [str(r.url.path) for r in posts] == [f"/apis/apps/v1/namespaces/{NS}/deployments",
                                                f"/api/v1/namespaces/{NS}/services"]
    assert posts[0].data == mf.model_deployment(p.config, RUN, SPEC, 2)
    assert posts[1].data == mf.model_service(p.config, RUN)
    assert clock.now == 6  # polled every 2 s until all replicas of the new ReplicaSet were ready
    gets = [r for r in cluster.requests("GET") if str(r.url.path).endswith(f"/deployments/{NAME}")]
    assert len(gets) == 4
    assert p.replicas == 2
    assert p.service_url.startswith("http://127.0.0.1:")  # outside the cluster: a port-forward
    p.teardown()


def test_in_cluster_service_url_is_the_service_dns(cluster: Cluster) -> None:
    p = make_platform(cluster, FakeClock(), make_config(in_cluster=True))
    assert p.service_url == f"http://{NAME}.{NS}.svc:8080"


@pytest.mark.parametrize("cause, setup, expected", [
    ("image", lambda c: c.put("v1/pods", f"{NAME}-abc-1", pod("p", "Pending", False, waiting="ImagePullBackOff")),
     ["ImagePullBackOff", "target.image"]),
    ("scheduling", lambda c: (
        c.put("v1/pods", f"{NAME}-abc-1", pod("p", "Pending", False, unschedulable="0/3 nodes are available: "
                                                                                 "3 Insufficient cpu.")),
        c.put("v1/events", "ev1", event("ev1", "Pod", f"{NAME}-abc-1", "FailedScheduling",
                                        "0/3 nodes are available: 3 Insufficient cpu."))),
     ["FailedScheduling", "Insufficient cpu", "platform.cpu"]),
    ("probe", lambda c: (
        c.put("v1/pods", f"{NAME}-abc-1", pod("p", "Running", False)),
        c.put("v1/events", "ev2", event("ev2", "Pod", f"{NAME}-abc-1", "Unhealthy",
                                        "Readiness probe failed: HTTP probe failed with statuscode: 503"))),
     ["Unhealthy", "Readiness probe failed", "target.ready_path"]),
])
def test_rollout_timeout_names_the_cause(cluster: Cluster, cause: str, setup: Callable[[Cluster], Any],
                                         expected: list[str]) -> None:
    clock = FakeClock()
    p = make_platform(cluster, clock)
    clock.at(1, lambda: setup(cluster))
    with pytest.raises(PlatformError) as err:
        p.deploy(SPEC, 1)
    message = str(err.value)
    assert f"deployment {NS}/{NAME} was not ready within 30s" in message
    for text in expected:
        assert text in message
    assert clock.now >= 30
    # no room is a fact about the pod size and the nodes (tune records it as such), not a broken model
    assert isinstance(err.value, NoRoomForPods) is (cause == "scheduling")
    if cause == "scheduling":
        assert err.value.reason == "0/3 nodes are available: 3 Insufficient cpu."


def test_scale_and_set_resources_patch_and_wait_for_the_new_replicaset(cluster: Cluster) -> None:
    clock = FakeClock()
    p = make_platform(cluster, clock)
    clock.at(1, lambda: cluster.patch(DEPLOY, NAME, ready_status(2)))
    p.deploy(SPEC, 2)

    # scale: generation 2 not yet observed, then the controller catches up
    clock.at(clock.now + 1, lambda: cluster.patch(DEPLOY, NAME, {"metadata": {"generation": 2},
                                                                  "status": {"observedGeneration": 1}}))
    clock.at(clock.now + 5, lambda: cluster.patch(DEPLOY, NAME, ready_status(4, generation=2)))
    p.scale(4)
    patch = cluster.requests("PATCH")[-1]
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert patch.data == {"spec": {"replicas": 4}}
    assert p.replicas == 4

    # set_resources: the whole container is replaced (so a removed limit is gone), then the rollout is awaited
    bigger = PodSpec(cpu=2.0, memory=None, concurrency=8)
    clock.at(clock.now + 1, lambda: cluster.patch(DEPLOY, NAME, {"metadata": {"generation": 3},
                                                                  "status": {"updatedReplicas": 1}}))
    clock.at(clock.now + 3, lambda: cluster.patch(DEPLOY, NAME, ready_status(4, generation=3)))
    p.set_resources(bigger)
    patch = cluster.requests("PATCH")[-1]
    assert patch.headers["Content-Type"] == "application/json-patch+json"
    assert patch.data[0] == {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "model"}
    container = cluster.obj(DEPLOY, NAME)["spec"]["template"]["spec"]["containers"][0]
    assert container == mf.model_container(p.config, bigger)
    assert container["resources"] == {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}
    assert {"name": "MLFLOW_MODELS_WORKERS", "value": "8"} in container["env"]


# --- observe -----------------------------------------------------------------------------------------------


def _observable(cluster: Cluster, with_metrics: bool = True) -> None:
    cluster.put("v1/pods", f"{NAME}-abc-1", pod("a", restarts=2, oom=True))
    cluster.put("v1/pods", f"{NAME}-abc-2", pod("b"))
    cluster.put("v1/pods", f"{NAME}-abc-3", pod("c", "Pending", False, unschedulable="0/2 nodes: Insufficient cpu"))
    cluster.put("v1/pods", "someone-else", {**pod("x"), "metadata": {"labels": {"app": "other"}}})
    if with_metrics:
        for name, cpu, mem in ((f"{NAME}-abc-1", "450000000n", "200Mi"), (f"{NAME}-abc-2", "120m", "131072Ki")):
            cluster.put(METRICS, name, {"metadata": {"labels": POD_LABELS},
                                        "containers": [{"name": "model", "usage": {"cpu": cpu, "memory": mem}}]})
    for i, pool in enumerate(["models", "models", "default-pool"]):
        cluster.put("v1/nodes", f"node-{i}", {"metadata": {"labels": {mf.NODE_POOL_LABEL: pool}}}, namespace=None)
    cluster.put("v1/events", "e1", event("e1", "Pod", f"{NAME}-abc-3", "FailedScheduling",
                                         "0/2 nodes are available: 2 Insufficient cpu."))
    cluster.put("v1/events", "e2", event("e2", "Pod", "someone-else", "Unhealthy", "not ours"))


def test_observe_reports_usage_pending_oom_nodes_and_new_events_once(cluster: Cluster) -> None:
    clock = FakeClock()
    p = make_platform(cluster, clock)
    _observable(cluster)
    obs = p.observe()
    by_name = {r.name: r for r in obs.replicas}
    assert sorted(by_name) == [f"{NAME}-abc-{i}" for i in (1, 2, 3)]
    first = by_name[f"{NAME}-abc-1"]
    assert first.cpu_cores == pytest.approx(0.45) and first.memory_bytes == 200 * 2**20
    assert first.cpu_limit == 0.5 and first.memory_limit == 256 * 2**20
    assert (first.restarts, first.oom_kills, first.ready, first.phase) == (2, 1, True, "Running")
    assert by_name[f"{NAME}-abc-2"].cpu_cores == pytest.approx(0.12)
    assert by_name[f"{NAME}-abc-3"].phase == "Pending" and by_name[f"{NAME}-abc-3"].cpu_cores is None
    assert obs.pending == 1 and obs.ready == 2 and obs.metrics_available
    assert obs.nodes == {"models": 2, "default-pool": 1}
    assert obs.events == [f"Warning Pod/{NAME}-abc-3 FailedScheduling: 0/2 nodes are available: 2 Insufficient cpu."]

    # the next look reports only what is new: a repeat of the event (count 2) and a new OOM kill
    assert p.observe().events == []
    cluster.patch("v1/events", "e1", {"count": 2})
    cluster.patch("v1/pods", f"{NAME}-abc-1", {"status": {"containerStatuses": [
        {"name": "model", "ready": True, "restartCount": 3, "image": "x", "imageID": "", "state": {"running": {}},
         "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}})
    obs = p.observe()
    assert obs.events == [f"Warning Pod/{NAME}-abc-3 FailedScheduling: 0/2 nodes are available: "
                          "2 Insufficient cpu. (x2)"]
    assert obs.oom_kills == 2 and obs.restarts == 3


def test_observe_without_metrics_server_says_so(cluster: Cluster) -> None:
    p = make_platform(cluster, FakeClock())
    _observable(cluster, with_metrics=False)
    obs = p.observe()
    assert obs.metrics_available is False
    assert all(r.cpu_cores is None and r.memory_bytes is None for r in obs.replicas)
    assert any("metrics-server absent" in e for e in obs.events)
    assert any("metrics-server" in n for n in p.notes)
    assert not any("metrics-server" in e for e in p.observe().events)  # said once, not in every step


# --- autoscaling -------------------------------------------------------------------------------------------


class FakeNodePools:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def set_autoscaling(self, enabled: bool, min_node_count: int, max_node_count: int) -> None:
        self.calls.append(("set", enabled, min_node_count, max_node_count))

    def restore(self) -> None:
        self.calls.append(("restore",))


def test_hpa_is_created_read_and_removed(cluster: Cluster) -> None:
    clock = FakeClock()
    pools = FakeNodePools()
    p = make_platform(cluster, clock, node_pools=pools)
    clock.at(1, lambda: cluster.patch(DEPLOY, NAME, ready_status(1)))
    p.deploy(SPEC, 1)
    spec = HpaSpec(target_cpu_pct=80, min_replicas=1, max_replicas=12, stabilization_s=60, sync_period_s=5)
    p.enable_autoscaling(spec)
    hpa_post = [r for r in cluster.requests("POST") if "horizontalpodautoscalers" in str(r.url.path)]
    assert len(hpa_post) == 1 and hpa_post[0].data == mf.hpa(p.config, RUN, spec)
    assert pools.calls == [("set", True, 1, 5)]
    assert any("sync period 5s" in n for n in p.notes)

    hpa = "autoscaling/v2/horizontalpodautoscalers"
    cluster.patch(hpa, NAME, {"status": {"currentReplicas": 3, "desiredReplicas": 5,
                                         "lastScaleTime": "2024-06-01T02:00:10Z",
                                         "conditions": [{"type": "ScalingLimited", "status": "False",
                                                         "reason": "DesiredWithinRange", "message": "ok"}]}})
    cluster.patch(DEPLOY, NAME, {"spec": {"replicas": 5}, "status": {"readyReplicas": 3}})
    cluster.put("v1/pods", f"{NAME}-abc-9", pod("p", "Pending", False, unschedulable="full"))
    cluster.put("v1/nodes", "n1", {"metadata": {"labels": {mf.NODE_POOL_LABEL: "models"}}}, namespace=None)
    status = p.autoscaling_status()
    assert (status.current_replicas, status.desired_replicas, status.ready_replicas, status.pending) == (3, 5, 3, 1)
    assert status.nodes == 1
    assert status.last_scale_time == 1717207210.0
    assert status.conditions == ["ScalingLimited=False (DesiredWithinRange): ok"]

    p.disable_autoscaling()
    assert not cluster.exists(hpa, NAME)
    assert pools.calls[-1] == ("restore",)
    assert p.replicas == 5


def test_hpa_without_cpu_request_is_refused(cluster: Cluster) -> None:
    clock = FakeClock()
    p = make_platform(cluster, clock)
    clock.at(1, lambda: cluster.patch(DEPLOY, NAME, ready_status(1)))
    p.deploy(PodSpec(cpu=None, memory=None, concurrency=1), 1)
    with pytest.raises(PlatformError, match="platform.cpu"):
        p.enable_autoscaling(HpaSpec())


# --- teardown and cleanup by label -------------------------------------------------------------------------


def _foreign_objects(cluster: Cluster) -> None:
    other = {mf.MANAGED_BY: "nightcap", mf.RUN_ID: "other-run"}
    cluster.put(DEPLOY, "not-nightcap", {"metadata": {"labels": {"app": "prod"}}, "spec": {}})
    cluster.put(DEPLOY, "other-run-model", {"metadata": {"labels": other}, "spec": {}})
    cluster.put("v1/services", "prod-svc", {"metadata": {"labels": {mf.RUN_ID: RUN}}, "spec": {}})  # no managed-by
    cluster.put("v1/configmaps", "other-run-files", {"metadata": {"labels": other}, "data": {}})


def test_teardown_deletes_by_label_only_and_restores_the_pool(cluster: Cluster) -> None:
    clock = FakeClock()
    pools = FakeNodePools()
    p = make_platform(cluster, clock, node_pools=pools)
    clock.at(1, lambda: cluster.patch(DEPLOY, NAME, ready_status(1)))
    p.deploy(SPEC, 1)
    p.enable_autoscaling(HpaSpec())
    _foreign_objects(cluster)

    p.teardown()
    deleted = sorted(str(r.url.path) for r in cluster.requests("DELETE"))
    assert deleted == sorted([
        f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{NAME}",
        f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}",
        f"/api/v1/namespaces/{NS}/services/{NAME}",
    ])
    lists = [r for r in cluster.requests("GET") if "labelSelector" in r.params and "pods" not in str(r.url.path)]
    assert {r.params["labelSelector"] for r in lists} == {mf.selector_string(mf.run_selector(RUN))}
    for res, name in [(DEPLOY, "not-nightcap"), (DEPLOY, "other-run-model"), ("v1/services", "prod-svc"),
                      ("v1/configmaps", "other-run-files")]:
        assert cluster.exists(res, name)
    assert pools.calls[-1] == ("restore",)
    p.teardown()  # idempotent: nothing left, nothing fails


def test_teardown_restores_the_pool_even_when_deletion_fails(cluster: Cluster) -> None:
    pools = FakeNodePools()
    p = make_platform(cluster, FakeClock(), node_pools=pools)
    cluster.react(f"get /apis/apps/v1/namespaces/{NS}/deployments",
                  kmock.KubernetesError(status=403, reason="Forbidden", message="deployments.apps is forbidden"))
    with pytest.raises(PlatformError) as err:
        p.teardown()
    assert "RBAC verb 'list' on resource 'deployments' in API group apps" in str(err.value)
    assert pools.calls == [("restore",)]


def test_cleanup_dead_runs_deletes_only_nightcap_objects_of_dead_runs(cluster: Cluster) -> None:
    def labelled(run: str) -> dict[str, Any]:
        return {"metadata": {"labels": {mf.MANAGED_BY: "nightcap", mf.RUN_ID: run}}, "spec": {}}

    cluster.put(DEPLOY, "live-model", labelled("live-run"))
    cluster.put(DEPLOY, "dead-model", labelled("dead-run"))
    cluster.put("v1/services", "dead-model", labelled("dead-run"))
    cluster.put("v1/configmaps", "dead-files", {**labelled("dead-run"), "data": {}})
    cluster.put(DEPLOY, "prod", {"metadata": {"labels": {"app": "prod"}}, "spec": {}})
    cluster.put(DEPLOY, "nightcap-no-run", {"metadata": {"labels": {mf.MANAGED_BY: "nightcap"}}, "spec": {}})
    cluster.put("v1/secrets", mf.locust_name("dead-run", "key"), {**labelled("dead-run"), "type": "Opaque"})
    cluster.put("v1/secrets", mf.locust_name("live-run", "key"), {**labelled("live-run"), "type": "Opaque"})
    deleted = cleanup_dead_runs(cluster.api, NS, ["live-run"])
    assert sorted(deleted) == ["configmaps/dead-files", "deployments.apps/dead-model",
                               f"secrets/{mf.locust_name('dead-run', 'key')}", "services/dead-model"]
    assert cluster.exists("v1/secrets", mf.locust_name("live-run", "key"))
    assert cluster.exists(DEPLOY, "live-model") and cluster.exists(DEPLOY, "prod")
    assert cluster.exists(DEPLOY, "nightcap-no-run")
    assert not cluster.exists(DEPLOY, "dead-model")


# --- transient and permanent API errors --------------------------------------------------------------------


def test_conflict_server_error_and_timeout_are_retried(cluster: Cluster) -> None:
    clock = FakeClock()
    p = make_platform(cluster, clock)
    clock.at(1, lambda: cluster.patch(DEPLOY, NAME, ready_status(1)))
    p.deploy(SPEC, 1)
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}"
    cluster.react(f"patch {path}",
                  kmock.KubernetesError(status=409, reason="Conflict", message="the object has been modified"),
                  asyncio.sleep(1.5))  # longer than the 0.5 s request timeout
    cluster.react(f"get {path}", kmock.KubernetesError(status=500, reason="InternalError", message="etcd hiccup"))
    sleeps_before = len(clock.sleeps)
    clock.at(clock.now + 0.1, lambda: cluster.patch(DEPLOY, NAME, ready_status(2)))
    p.scale(2)
    assert len([r for r in cluster.requests("PATCH")]) == 3  # 409, timeout, success
    backoff = clock.sleeps[sleeps_before:sleeps_before + 3]
    assert backoff == [0.5, 1.0, 0.5]  # patch retries (0.5, 1.0), then the 500 on the first GET (0.5)
    assert cluster.obj(DEPLOY, NAME)["spec"]["replicas"] == 2


def test_persistent_server_errors_give_up_with_a_clear_message(cluster: Cluster) -> None:
    clock = FakeClock()
    p = make_platform(cluster, clock)
    cluster.react(f"get /api/v1/namespaces/{NS}/pods",
                  *[kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="apiserver restarting")] * 6)
    with pytest.raises(PlatformError) as err:
        p.observe()
    assert f"list pods in namespace {NS} still failed after 6 attempts" in str(err.value)
    assert "503" in str(err.value) and "apiserver restarting" in str(err.value)
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]  # bounded exponential backoff on the fake clock


def test_a_create_that_failed_after_storing_is_adopted_on_retry(cluster: Cluster) -> None:
    """The emulator (like a real server behind a flaky proxy) stores the object but answers 500: the retry
    meets 409 AlreadyExists, sees this run's labels and adopts the object instead of failing."""
    clock = FakeClock()
    p = make_platform(cluster, clock)
    cluster.react(f"post /apis/apps/v1/namespaces/{NS}/deployments",
                  kmock.KubernetesError(status=500, reason="InternalError", message="proxy reset"))
    clock.at(1, lambda: cluster.patch(DEPLOY, NAME, ready_status(1)))
    p.deploy(SPEC, 1)
    assert len([r for r in cluster.requests("POST") if "deployments" in str(r.url.path)]) == 2
    assert cluster.requests("PATCH")[0].data["spec"] == mf.model_deployment(p.config, RUN, SPEC, 1)["spec"]


def test_forbidden_and_invalid_are_reported_not_retried(cluster: Cluster) -> None:
    clock = FakeClock()
    p = make_platform(cluster, clock)
    cluster.react(f"post /api/v1/namespaces/{NS}/services",
                  kmock.KubernetesError(status=403, reason="Forbidden",
                                        message='services is forbidden: User "x" cannot create resource'))
    with pytest.raises(PlatformError) as err:
        p.deploy(SPEC, 1)
    assert f"create services/{NAME} in namespace {NS} failed (403)" in str(err.value)
    assert "RBAC verb 'create' on resource 'services' in API group \"\" (core)" in str(err.value)
    assert "rbac.yaml" in str(err.value)
    assert len([r for r in cluster.requests("POST") if "services" in str(r.url.path)]) == 1
    assert clock.sleeps == []

    cluster.react(f"patch /apis/apps/v1/namespaces/{NS}/deployments/{NAME}",
                  kmock.KubernetesError(status=422, reason="Invalid", message="Deployment is invalid", details={
                      "causes": [{"field": "spec.replicas", "message": "must be greater than or equal to 0"}]}))
    with pytest.raises(PlatformError) as err:
        p.scale(-1)
    assert "rejected as invalid: spec.replicas: must be greater than or equal to 0" in str(err.value)
    assert len(cluster.requests("PATCH")) == 1


def test_existing_object_of_another_owner_is_not_adopted(cluster: Cluster) -> None:
    cluster.put(DEPLOY, NAME, {"metadata": {"labels": {"app": "prod"}}, "spec": {"replicas": 7}})
    p = make_platform(cluster, FakeClock())
    with pytest.raises(PlatformError, match="does not belong to this run"):
        p.deploy(SPEC, 1)
    assert cluster.obj(DEPLOY, NAME)["spec"] == {"replicas": 7}
    assert cluster.requests("PATCH") == []


def test_own_object_from_a_retried_create_is_adopted(cluster: Cluster) -> None:
    clock = FakeClock()
    p = make_platform(cluster, clock)
    cluster.put(DEPLOY, NAME, {**mf.model_deployment(p.config, RUN, PodSpec(1.0, None, 1), 1)})
    clock.at(1, lambda: cluster.patch(DEPLOY, NAME, ready_status(3)))
    p.deploy(SPEC, 3)
    assert cluster.obj(DEPLOY, NAME)["spec"]["replicas"] == 3


# --- port-forward ------------------------------------------------------------------------------------------


def test_port_forward_pipes_to_a_ready_pod(cluster: Cluster) -> None:
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"pong"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    cluster.put("v1/pods", f"{NAME}-abc-1", pod("a", "Running", ready=False))
    cluster.put("v1/pods", f"{NAME}-abc-2", pod("b"))
    p = make_platform(cluster, FakeClock())
    opened: list[tuple[str, int]] = []

    def open_pod_socket(pod_name: str, port: int) -> socket.socket:
        opened.append((pod_name, port))
        return socket.create_connection(("127.0.0.1", server.server_port))

    p._open_pod_socket = open_pod_socket  # type: ignore[method-assign]
    try:
        with urllib.request.urlopen(p.service_url + "/ping", timeout=5) as resp:
            assert resp.read() == b"pong"
        assert opened == [(f"{NAME}-abc-2", 8080)]  # only the ready pod is a target
    finally:
        p.teardown()
        server.shutdown()
        server.server_close()


# --- Locust in the cluster ---------------------------------------------------------------------------------


def connected_as_ready(cluster: Cluster, worker: str) -> FakeMaster:
    """A master that counts as many workers as the worker Deployment has ready replicas."""
    def ids() -> list[str]:
        if not cluster.exists(DEPLOY, worker):
            return []
        ready = (cluster.obj(DEPLOY, worker).get("status") or {}).get("readyReplicas") or 0
        return [f"worker-{i}" for i in range(ready)]
    return FakeMaster(ids)


def test_kubernetes_locust_lifecycle(cluster: Cluster) -> None:
    clock = FakeClock()
    config = make_config(in_cluster=True)
    loc = KubernetesLocust(config, RUN, api_client=cluster.api, payloads=[b'{"a": 1}', b'{"a": 2}'],
                           api_key="s3cr3t-key", clock=clock, locustfile="# the locustfile\n")
    loc.kube.request_timeout_s = 0.5
    master, worker = mf.locust_name(RUN, "master"), mf.locust_name(RUN, "worker")
    fake = connected_as_ready(cluster, worker)
    loc._client = fake.client()
    clock.at(1, lambda: (cluster.patch(DEPLOY, master, ready_status(1)), cluster.patch(DEPLOY, worker,
                                                                                       ready_status(2))))
    loc.start()
    kinds = [(str(r.url.path).rsplit("/", 1)[-1], r.data["metadata"]["name"]) for r in cluster.requests("POST")]
    assert kinds == [("configmaps", mf.locust_name(RUN, "files")), ("networkpolicies", master), ("deployments", master),
                     ("secrets", mf.locust_name(RUN, "key")), ("services", master), ("deployments", worker)]
    files = cluster.obj("v1/configmaps", mf.locust_name(RUN, "files"))["data"]
    assert files == {"locustfile.py": "# the locustfile\n", "payloads.jsonl": '{"a": 1}\n{"a": 2}\n'}
    w = cluster.obj(DEPLOY, worker)
    container = w["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == config.load.locust_image and w["spec"]["replicas"] == 2
    assert {"name": "NIGHTCAP_API_KEY", "valueFrom": {"secretKeyRef": {"name": mf.locust_name(RUN, "key"),
                                                                       "key": "api-key"}}} in container["env"]
    assert "s3cr3t-key" not in str(w) and "s3cr3t-key" not in str(files)  # the key lives only in the Secret
    assert loc.master_url == f"http://{master}.{NS}.svc:8089"

    clock.at(clock.now + 1, lambda: cluster.patch(DEPLOY, worker, ready_status(4)))
    loc.scale_workers(4)
    assert cluster.requests("PATCH")[-1].data == {"spec": {"replicas": 4}}

    # each worker's CPU over the window, from the counters it reports (no metrics-server needed)
    assert loc.generator_cpu_pct() == [30.0, 30.0, 30.0, 30.0]

    cluster.put(DEPLOY, NAME, {"metadata": {"labels": {**mf.run_selector(RUN), mf.COMPONENT: mf.MODEL}}, "spec": {}})
    loc.stop()
    fake.close()
    assert not cluster.exists(DEPLOY, master) and not cluster.exists(DEPLOY, worker)
    assert not cluster.exists("v1/services", master) and not cluster.exists("v1/configmaps",
                                                                             mf.locust_name(RUN, "files"))
    assert not cluster.exists("networking.k8s.io/v1/networkpolicies", master)
    assert cluster.exists(DEPLOY, NAME)  # the model of the same run is the platform's to remove


def test_the_api_key_secret_is_adopted_then_deleted_by_name_with_verbs_the_role_grants(cluster: Cluster) -> None:
    """The mock (like a server that could not set the owner) leaves the Secret without a live owner: garbage
    collection would never remove it, so stopping the generator must delete it, by name, never listing Secrets."""
    clock = FakeClock()
    loc = KubernetesLocust(make_config(in_cluster=True), RUN, api_client=cluster.api, api_key="s3cr3t-key",
                           clock=clock, locustfile="# the locustfile\n")
    loc.kube.request_timeout_s = 0.5
    master, worker, key = (mf.locust_name(RUN, part) for part in ("master", "worker", "key"))
    fake = connected_as_ready(cluster, worker)
    loc._client = fake.client()
    # stored, then answered 500 (a proxy reset): the retry meets 409 and adopts this run's Secret
    cluster.react(f"post /api/v1/namespaces/{NS}/secrets",
                  kmock.KubernetesError(status=500, reason="InternalError", message="proxy reset"))
    clock.at(1, lambda: (cluster.patch(DEPLOY, master, ready_status(1)), cluster.patch(DEPLOY, worker,
                                                                                       ready_status(2))))
    loc.start()
    posts = [r for r in cluster.requests("POST") if str(r.url.path).endswith("/secrets")]
    assert len(posts) == 2 and cluster.exists("v1/secrets", key)
    assert "ownerReferences" not in cluster.obj("v1/secrets", key)["metadata"]  # no uid, so no owner
    master_env = cluster.obj(DEPLOY, master)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not any("valueFrom" in e for e in master_env)  # the master sends nothing: it never gets the key
    loc.stop()
    fake.close()
    assert not cluster.exists("v1/secrets", key)
    assert requests_outside_rbac(cluster) == []


def test_platform_teardown_deletes_the_runs_secret_but_not_a_namesakes(cluster: Cluster) -> None:
    key = mf.locust_name(RUN, "key")
    cluster.put("v1/secrets", key, {"metadata": {"labels": mf.labels(make_config(), RUN, mf.LOCUST_WORKER)},
                                    "type": "Opaque"})
    make_platform(cluster, FakeClock()).teardown()
    assert not cluster.exists("v1/secrets", key)
    cluster.put("v1/secrets", key, {"metadata": {"labels": {"app": "prod"}}, "type": "Opaque"})
    make_platform(cluster, FakeClock()).teardown()
    assert cluster.exists("v1/secrets", key)


def test_locust_start_waits_until_the_master_counts_its_workers(cluster: Cluster) -> None:
    """Ready worker pods are not connected workers: a Locust 2.47 master with none refuses to swarm while
    /swarm answers success, so the first window would measure nothing. start() waits for the master's count."""
    clock = FakeClock()
    loc = KubernetesLocust(make_config(in_cluster=True), RUN, api_client=cluster.api, clock=clock, locustfile="#")
    loc.kube.request_timeout_s = 0.5
    master, worker = mf.locust_name(RUN, "master"), mf.locust_name(RUN, "worker")
    counts = iter([[], [], ["w-a"], ["w-a"]])  # pods ready at t=1; the workers connect one after the other
    fake = FakeMaster(lambda: next(counts, ["w-a", "w-b"]))
    loc._client = fake.client()
    clock.at(1, lambda: (cluster.patch(DEPLOY, master, ready_status(1)), cluster.patch(DEPLOY, worker,
                                                                                       ready_status(2))))
    try:
        loc.start()
        assert fake.polls == 5 and loc._connected == {"w-a", "w-b"}
        assert clock.now == 2 + 4 * loc.poll_s  # the rollouts, then four polls that found too few workers
        # a master that never counts them fails the start with the reason, bounded by ready_timeout_s
        fake.connected = lambda: ["w-a"]
        with pytest.raises(Exception, match=r"counts 1 connected worker\(s\), not 3"):
            clock.at(clock.now + 1, lambda: cluster.patch(DEPLOY, worker, ready_status(3)))
            loc.scale_workers(3)
    finally:
        loc.stop()
        fake.close()
