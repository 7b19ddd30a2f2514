"""KubernetesPlatform (deploy, observe, autoscaling, teardown) with the real `kubernetes` client against kmock.

kmock serves real HTTP (aiohttp) on 127.0.0.1 from a background event loop; the platform's blocking client
talks to it like to an API server. The emulator stores what is created, patched and deleted; the tests play
the controllers (rollout status, pods, events, metrics) from the fake clock's sleeps, so waiting is instant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kmock
import pytest

from nightcap.kube import manifests as mf
from nightcap.platforms.base import HpaSpec, NoRoomForPods, Platform, PlatformError, PodSpec
from kube_fixtures import (  # noqa: F401 (cluster is a fixture)
    Cluster,
    DEPLOY,
    FakeClock,
    METRICS,
    NAME,
    NS,
    POD_LABELS,
    RUN,
    SPEC,
    cluster,
    event,
    make_config,
    make_platform,
    pod,
    ready_status,
)


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
    # the run's record in the cluster first (its lease), then the model
    assert [str(r.url.path) for r in posts] == [f"/api/v1/namespaces/{NS}/configmaps",
                                                f"/apis/apps/v1/namespaces/{NS}/deployments",
                                                f"/api/v1/namespaces/{NS}/services"]
    assert posts[0].data["metadata"]["name"] == p.lease.name and posts[0].data["data"]["runs"] == f'["{RUN}"]'
    assert posts[1].data == mf.model_deployment(p.config, RUN, SPEC, 2)
    assert posts[2].data == mf.model_service(p.config, RUN)
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
    # platform.ready_timeout_s (30 s: scheduling, pulls) + target.startup_timeout_s (30 s: the model's load)
    assert f"deployment {NS}/{NAME} was not ready within 60s" in message
    for text in expected:
        assert text in message
    assert clock.now >= 60
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
    # the pool is put back only after the Deployment is scaled back (the autoscale stage's finally does that)
    assert pools.calls == [("set", True, 1, 5)]
    assert p.replicas == 5
    p.restore_node_autoscaling()
    assert pools.calls[-1] == ("restore",)


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
    before = len(cluster.requests())

    p.teardown()
    deleted = [str(r.url.path) for r in cluster.requests("DELETE")]
    assert sorted(deleted[:-1]) == sorted([
        f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{NAME}",
        f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}",
        f"/api/v1/namespaces/{NS}/services/{NAME}",
    ])
    # the run's record goes last, once the pool is restored: a runner killed before keeps what the next run needs
    assert deleted[-1] == f"/api/v1/namespaces/{NS}/configmaps/nc-run-{RUN}"
    lists = [r for r in cluster.requests()[before:] if str(r.method.value).upper() == "GET"
             and "labelSelector" in r.params and "pods" not in str(r.url.path)]
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
                  kmock.KubernetesError(status=403, reason="Forbidden", message=(
                      'deployments.apps is forbidden: User "system:serviceaccount:capacity:nightcap" cannot list '
                      'resource "deployments" in API group "apps" in the namespace "capacity"')))
    with pytest.raises(PlatformError) as err:
        p.teardown()
    assert "RBAC verb 'list' on resource 'deployments' in API group apps" in str(err.value)
    assert pools.calls == [("restore",)]


# --- rollouts judged on this change ------------------------------------------------------------------------

STALE = "2023-01-01T00:00:00Z"  # before the fake clock's epoch (2023-11-14): an earlier candidate's


def test_a_stall_left_by_the_previous_candidate_is_not_this_ones(cluster: Cluster) -> None:
    """The last candidate hit its progress deadline; the next one's rollout waits for the controller to observe
    it (it used to fail at t=0 with "not ready")."""
    clock = FakeClock()
    p = make_platform(cluster, clock)
    clock.at(1, lambda: cluster.patch(DEPLOY, NAME, ready_status(2)))
    p.deploy(SPEC, 2)
    stalled = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
               "lastUpdateTime": STALE, "message": "ReplicaSet has timed out progressing."}
    cluster.patch(DEPLOY, NAME, {"metadata": {"generation": 2},
                                 "status": {"observedGeneration": 2, "readyReplicas": 0, "conditions": [stalled]}})
    start = clock.now
    # the patch bumps the generation; the controller observes it 3 s later, the pods are ready 9 s later
    clock.at(start + 1, lambda: cluster.patch(DEPLOY, NAME, {"metadata": {"generation": 3}}))
    clock.at(start + 3, lambda: cluster.patch(DEPLOY, NAME, {"status": {"observedGeneration": 3}}))
    clock.at(start + 9, lambda: cluster.patch(DEPLOY, NAME, {**ready_status(2, generation=3)}))
    p.set_resources(PodSpec(cpu=1.0, memory=None, concurrency=2))
    assert clock.now >= start + 9


def test_a_fresh_stall_ends_the_wait_early(cluster: Cluster) -> None:
    clock = FakeClock()
    p = make_platform(cluster, clock)
    fresh = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "lastUpdateTime": "2024-06-01T02:00:00Z"}
    clock.at(4, lambda: cluster.patch(DEPLOY, NAME, {"metadata": {"generation": 1},
                                                     "status": {"observedGeneration": 1, "conditions": [fresh]}}))
    with pytest.raises(PlatformError):
        p.deploy(SPEC, 1)
    assert clock.now < 10  # not the whole 60 s


def test_events_of_an_earlier_candidate_do_not_explain_this_rollout(cluster: Cluster) -> None:
    """A FailedScheduling of the last candidate is not "no room" for this one."""
    clock = FakeClock()
    p = make_platform(cluster, clock)
    cluster.put("v1/events", "old", {**event("old", "Pod", f"{NAME}-abc-0", "FailedScheduling",
                                             "0/3 nodes are available: 3 Insufficient cpu."), "lastTimestamp": STALE})
    clock.at(1, lambda: cluster.put("v1/pods", f"{NAME}-abc-1", pod("p", "Running", False)))
    with pytest.raises(PlatformError) as err:
        p.deploy(SPEC, 1)
    assert not isinstance(err.value, NoRoomForPods)
    assert "Insufficient cpu" not in str(err.value) and "no pod status or event explains it" in str(err.value)


def test_nodes_excluded_by_taints_are_a_placement_problem_not_no_room(cluster: Cluster) -> None:
    clock = FakeClock()
    p = make_platform(cluster, clock)
    message = "0/3 nodes are available: 3 node(s) had untolerated taint {dedicated: gpu}. preemption: 0/3 nodes"
    clock.at(1, lambda: cluster.put("v1/pods", f"{NAME}-abc-1", pod("p", "Pending", False, unschedulable=message)))
    with pytest.raises(PlatformError) as err:
        p.deploy(SPEC, 1)
    assert not isinstance(err.value, NoRoomForPods)
    assert "Placement" in str(err.value) and "platform.kubernetes.tolerations" in str(err.value)


def test_observe_counts_only_the_models_pool(cluster: Cluster) -> None:
    """Another pool's scale-up is not the run's: the node timeline counts the pool the model runs on."""
    from nightcap.config import GkeConfig

    config = make_config(gke=GkeConfig(project="p", location="l", cluster="c", node_pool="models").model_dump())
    p = make_platform(cluster, FakeClock(), config)
    for i, pool in enumerate(["models", "models", "default-pool", "batch"]):
        cluster.put("v1/nodes", f"node-{i}", {"metadata": {"labels": {mf.NODE_POOL_LABEL: pool}}}, namespace=None)
    assert p.observe().nodes == {"models": 2}
