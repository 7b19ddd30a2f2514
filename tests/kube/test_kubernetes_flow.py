"""The parent flow with `platform.kind: kubernetes`, end to end against kmock (the control plane).

kmock serves the Kubernetes API over real HTTP; a controller thread in this test plays the cluster: it
makes Deployments ready, keeps one Running pod per replica (with metrics.k8s.io usage), and moves the HPA's
status and the Deployment's replicas like the HPA controller would. The load side is real: a local Locust
(`load.generator: local`) sends through the platform's own port-forward, whose pod sockets are pointed at a
reference server on 127.0.0.1 standing in for the model pods. So the flow's measured saturation must be the
reference server's capacity, and the objects it created, patched and deleted are the exact requests kmock saw.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kmock_api import FakeMaster
from kube_cluster import NS, FakeCluster, start_reference_server, stop_process
from nightcap.kube import manifests as mf

SLOTS, SERVICE_MS = 4, 25.0
CAPACITY_RPS = SLOTS * 1000 / SERVICE_MS  # 160 rps: the reference server's exact capacity


@pytest.fixture()
def reference_server(leftovers: Any) -> Iterator[int]:
    """The stand-in for the model pods; spared by `leftovers` (conftest), which checks the run's own processes."""
    proc, port = start_reference_server(SLOTS, SERVICE_MS)
    leftovers.spared.add(proc.pid)
    try:
        yield port
    finally:
        stop_process(proc)


@pytest.fixture()
def cluster() -> Iterator[FakeCluster]:
    c = FakeCluster()
    yield c
    c.close()


def _config(tmp: Path) -> Path:
    data = {
        "target": {"name": "k8s-e2e", "kind": "reference", "image": "registry.example/nightcap:0.1",
                   "slots": SLOTS, "service_ms": SERVICE_MS, "queue": 64},
        "platform": {"kind": "kubernetes", "namespace": NS, "replicas": 1, "cpu": 1, "ready_timeout_s": 30},
        "load": {"generator": "local", "workers": 1, "warmup_s": 1, "window_s": 2, "reconnect_s": 5, "verify_s": 0,
                 "max_duration_s": 240},
        "search": {"start_users": 2, "max_users": 32, "max_windows": 1, "refine_steps": 0, "slo_capacity": False},
        "slo": {"p95_ms": 2000},
        "stages": ["single_client", "autoscale"],
        "autoscale": {"min_replicas": 1, "max_replicas": 3, "sample_s": 1,
                      "phases": [{"name": "baseline", "load": 0.5, "duration_s": 1},
                                 {"name": "overload", "load": 1.5, "duration_s": 4},
                                 # two samples: arrivals in the first instant of the recovery still meet the
                                 # overload's full queue (CI 12-05: 1 rejected of 95 in a one-sample recovery)
                                 {"name": "recovery", "load": 0.5, "duration_s": 2}]},
        "store": {"url": f"sqlite:///{tmp}/history.db"},
    }
    path = tmp / "k8s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
@pytest.mark.quiet  # the answer within 15% of the server's capacity
@pytest.mark.timeout(180)
def test_parent_flow_on_kubernetes_end_to_end(prefect_api: str, cluster: FakeCluster, reference_server: int,
                                              leftovers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.capacity_check import capacity_check
    from nightcap.kube import platform as kube_mod

    # `leftovers` (conftest) runs this in tmp_path (run registry, locks, report) and fails it if a Locust
    # process or a run record outlives the flow
    monkeypatch.setattr("nightcap.kube.client.api_client_for", lambda platform: cluster.api)
    monkeypatch.setattr(kube_mod.KubernetesPlatform, "poll_s", 0.2)
    forwarded: list[tuple[str, int]] = []

    def open_pod_socket(self: Any, pod: str, port: int) -> socket.socket:
        # the port-forward's tunnel to a ready pod (chosen by the platform from kmock's pods) ends here
        forwarded.append((pod, port))
        return socket.create_connection(("127.0.0.1", reference_server), timeout=10)

    monkeypatch.setattr(kube_mod.KubernetesPlatform, "_open_pod_socket", open_pod_socket)
    registry_seen: list[dict[str, Any]] = []

    def watch_registry() -> None:
        for f in (tmp_path / ".nightcap" / "runs").glob("*.json"):
            try:
                record = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if record.get("kubernetes") and not registry_seen:
                registry_seen.append(record)

    cluster.on_tick.append(watch_registry)
    out = tmp_path / "report"
    started = time.monotonic()
    summary = capacity_check(config=str(_config(tmp_path)), out=str(out))
    elapsed = time.monotonic() - started

    run_id = summary["run_id"]
    run_labels = {mf.MANAGED_BY: mf.MANAGER, mf.RUN_ID: mf.run_label(run_id)}

    # exactly the objects the flow creates on kubernetes with a local generator: model Deployment + Service, HPA
    # the preflight task judged every object by a dry run and asked about each permission; nothing it sent stayed
    posts = [r for r in cluster.requests("POST") if r.params.get("dryRun") != "All"
             and "selfsubjectaccessreviews" not in str(r.url.path)]
    # ... a Pod of the Deployment included: admission (PodSecurity, quotas) judges Pods
    assert {r.data["kind"] for r in cluster.requests("POST") if r.params.get("dryRun") == "All"} == {
        "ConfigMap", "Deployment", "Pod", "Service", "HorizontalPodAutoscaler"}
    created = [(r.data["kind"], r.data["metadata"]["name"]) for r in posts]
    # the run's record in the cluster (its lease) first, then the model
    assert [k for k, _ in created] == ["ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"], created
    record = created.pop(0)[1]
    name = created[0][1]
    assert all(n == name for _, n in created)
    posts = posts[1:]
    for r in posts:
        labels = r.data["metadata"]["labels"]
        assert {k: labels.get(k) for k in run_labels} == run_labels
        assert f"/namespaces/{NS}/" in str(r.url.path)
    deployment = posts[0].data
    assert deployment["spec"]["template"]["metadata"]["labels"][mf.RUN_ID] == mf.run_label(run_id)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/nightcap:0.1"

    # the HPA's status moved and the flow saw it; the Deployment was scaled back afterwards
    assert any(s["desiredReplicas"] == 2 for s in cluster.hpa_statuses)
    assert cluster.max_pods == 2
    samples = summary["autoscale"]["samples"]
    assert max(s["desired"] for s in samples) == 2 and max(s["current"] for s in samples) == 2
    # through the port-forward every new connection is an API-server tunnel: the phases keep theirs open
    assert summary["autoscale"]["load_spreading"].startswith("the open-loop generator re-opens each connection")
    assert all(s["offered_rps"] for s in samples)
    patches = [r.data for r in cluster.requests("PATCH") if str(r.url.path).endswith(f"/deployments/{name}")]
    assert {"spec": {"replicas": 1}} in patches  # autoscale's scale back to platform.replicas

    # teardown: found by the run's labels, deleted by name; nothing of the run is left
    deletes = sorted(str(r.url.path) for r in cluster.requests("DELETE"))
    assert deletes == sorted([f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{name}",
                              f"/apis/apps/v1/namespaces/{NS}/deployments/{name}",
                              f"/api/v1/namespaces/{NS}/services/{name}",
                              f"/api/v1/namespaces/{NS}/configmaps/{record}"])
    label_lists = {r.params["labelSelector"] for r in cluster.requests("GET")
                   if "labelSelector" in r.params and "/pods" not in str(r.url.path)}
    # teardown by the run's labels; the start-of-run sweep reads nightcap's objects and the runs' records
    assert label_lists == {mf.selector_string(mf.run_selector(run_id)), mf.selector_string(
        {mf.MANAGED_BY: mf.MANAGER}), mf.selector_string({mf.MANAGED_BY: mf.MANAGER, mf.COMPONENT: mf.RUN_RECORD})}
    assert cluster.run(lambda: cluster.live("deployments")) == {}
    assert cluster.run(lambda: cluster.live("services")) == {}
    assert cluster.run(lambda: cluster.live("horizontalpodautoscalers")) == {}

    # the run registry held the namespace and run id while the objects existed, and forgot them after teardown
    assert registry_seen and registry_seen[0]["kubernetes"]["namespace"] == NS
    assert registry_seen[0]["kubernetes"]["run_id"] == run_id
    assert not list((tmp_path / ".nightcap" / "runs").glob("*.json"))

    # the load went through the platform's port-forward to ready pods of this run's Deployment
    assert forwarded and all(pod.startswith(f"{name}-abc-") and port == 8080 for pod, port in forwarded)

    # the answer: the reference server's capacity, within 15%
    on_disk = json.loads((out / "summary.json").read_text())
    assert (out / "steps.csv").exists()
    assert len((out / "steps.csv").read_text().strip().splitlines()) >= 4  # header + at least 3 steps
    assert on_disk["status"] == "completed"
    assert on_disk["stages"]["single_client"]["status"] == "completed"
    assert on_disk["stages"]["autoscale"]["status"] == "completed"
    assert on_disk["platform"]["limits_enforced"] is True
    saturation = on_disk["saturation"]["rps"]
    assert saturation == pytest.approx(CAPACITY_RPS, rel=0.15), (saturation, on_disk["single_client"]["levels"])
    print(f"kubernetes flow: saturation {saturation:.1f} rps (capacity {CAPACITY_RPS:.0f}) at "
          f"{on_disk['saturation']['users']} users; {len(forwarded)} forwarded connections; HPA statuses "
          f"{[(s['currentReplicas'], s['desiredReplicas']) for s in cluster.hpa_statuses]}; flow {elapsed:.0f}s")
    assert elapsed < 90, f"the flow took {elapsed:.0f}s"


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_night_the_cluster_is_not_ready_for_fails_in_seconds_creating_nothing(
        prefect_api: str, cluster: FakeCluster, leftovers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flow's first task is preflight: a missing verb and a missing metrics-server stop the night before
    anything is created, with one reason per problem saying what to change."""
    from flows.capacity_check import capacity_check
    from tasks.platform import NotReady

    monkeypatch.setattr("nightcap.kube.client.api_client_for", lambda platform: cluster.api)
    cluster.kmock.denied = {("apps", "deployments", "delete")}
    cluster.run(lambda: cluster.kmock.resources.__delitem__("metrics.k8s.io/v1beta1/pods"))
    started = time.monotonic()
    with pytest.raises(NotReady) as err:
        capacity_check(config=str(_config(tmp_path)), out=str(tmp_path / "report"))
    elapsed = time.monotonic() - started
    reasons = str(err.value).split(": ", 1)[1].split(" | ")
    assert len(reasons) == 2, reasons
    assert reasons[0].startswith("FAIL  rbac: missing delete on deployments") and \
        '{apiGroups: ["apps"], resources: ["deployments"], verbs: ["delete"]}' in reasons[0]
    assert reasons[1].startswith("FAIL  metrics-server:") and "install metrics-server" in reasons[1]
    created = [r for r in cluster.requests("POST") if r.params.get("dryRun") != "All"
               and "selfsubjectaccessreviews" not in str(r.url.path)]
    assert created == [] and cluster.requests("PATCH") == [] and cluster.requests("DELETE") == []
    assert not (tmp_path / "report").exists()
    assert elapsed < 15, f"the night took {elapsed:.0f}s to fail"


# --- the pieces the flow wires, without Prefect or load --------------------------------------------------


def _k8s_config(**load: Any) -> Any:
    from nightcap.config import validate

    return validate({
        "target": {"name": "k8s-unit", "kind": "reference", "image": "registry.example/nightcap:0.1"},
        "platform": {"kind": "kubernetes", "namespace": NS, "ready_timeout_s": 10},
        "load": {"workers": 2, **load},
        "slo": {"p95_ms": 500},
    })


class RecordingClient:
    def __init__(self) -> None:
        self.swarms: list[tuple[int, str]] = []

    def swarm(self, users: int, spawn_rate: float, host: str, user_rps: float = 0.0) -> None:
        self.swarms.append((users, host))

    def stop(self) -> None:
        pass

    def idle(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_generator_site_defaults_and_keeps_existing_config_hashes() -> None:
    from nightcap.config import ConfigError, validate

    assert _k8s_config().generator_site == "cluster"
    assert _k8s_config(generator="local").generator_site == "local"
    local = validate({"target": {"name": "x", "kind": "reference"}, "slo": {"p95_ms": 500}})
    assert local.generator_site == "local"
    assert "generator" not in local.identity()["load"]  # the default does not change the comparison key
    assert _k8s_config().config_hash() == _k8s_config(generator="cluster").config_hash()
    assert _k8s_config().config_hash() != _k8s_config(generator="local").config_hash()
    with pytest.raises(ConfigError, match="load.generator 'cluster' needs platform.kind 'kubernetes'"):
        validate({"target": {"name": "x", "kind": "reference"}, "slo": {"p95_ms": 500},
                  "load": {"generator": "cluster"}})


def _fast_platform(cluster: FakeCluster, run: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """A KubernetesPlatform on the fake cluster, and in-cluster Locust polling it every 0.1 s whose master
    (reached through the port-forward code path) counts the ready worker pods as its connected workers."""
    from nightcap.load.kubernetes import KubernetesLocust
    from nightcap.kube.platform import KubernetesPlatform

    worker = mf.locust_name(run, "worker")
    def connected() -> list[str]:  # a restarted container is a new Locust process: a new worker id
        return sorted(f"{n}/{p['status']['containerStatuses'][0]['restartCount']}"
                      for n, p in cluster.run(lambda: cluster.live("pods")).items() if n.startswith(worker + "-"))

    master = FakeMaster(connected)
    monkeypatch.setattr(KubernetesLocust, "poll_s", 0.1)
    monkeypatch.setattr(KubernetesLocust, "_open_pod_socket", master.open_socket)
    cluster.on_close.append(master.close)
    config = _k8s_config()
    return config, KubernetesPlatform(config, run, api_client=cluster.api)


def test_cluster_generator_runs_in_the_cluster_and_sends_to_the_service_dns(
        cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from nightcap.load.kubernetes import KubernetesLocust
    from nightcap.load.base import target_url
    from nightcap.load.factory import start_generator
    from nightcap.load.runner import StepRunner

    run = "run-gen"
    config, platform = _fast_platform(cluster, run, monkeypatch)
    gen = start_generator(config, run, 3, [b'{"a": 1}'], None, platform, None, tmp_path / "logs")
    try:
        assert isinstance(gen, KubernetesLocust)
        created = [(r.data["kind"], r.data["metadata"]["name"]) for r in cluster.requests("POST")]
        assert created == [("ConfigMap", f"nc-run-{mf.short_run(run)}"), ("ConfigMap", mf.locust_name(run, "files")),
                           ("NetworkPolicy", mf.locust_name(run, "master")), ("Deployment", mf.locust_name(run, "master")),
                           ("Service", mf.locust_name(run, "master")), ("Deployment", mf.locust_name(run, "worker"))]
        worker = next(r.data for r in cluster.requests("POST") if r.data["metadata"]["name"] == gen.worker_name)
        assert worker["spec"]["replicas"] == 3 and gen.workers == 3
        files = next(r.data for r in cluster.requests("POST") if r.data["metadata"]["name"] == mf.locust_name(run, "files"))["data"]
        assert "FastHttpUser" in files["locustfile.py"] and files["payloads.jsonl"] == '{"a": 1}\n'
        assert gen.alive_workers() == 3
        gen.mark_cpu()
        assert gen.generator_cpu_pct() == [30.0, 30.0, 30.0]  # each worker's CPU seconds / its covered seconds
        assert gen.restart_dead_workers() == 0
        # a worker pod dies and the Deployment controller replaces it (the test's controller re-creates it)
        workers = sorted(n for n in cluster.run(lambda: cluster.live("pods")) if n.startswith(gen.worker_name))
        cluster.run(lambda: cluster.kmock.objects.__delitem__(("v1/pods", NS, workers[0])))
        deadline = time.monotonic() + 10  # the controller (a 0.1 s tick) replaces it under a new name
        while time.monotonic() < deadline:
            now = {n for n in cluster.run(lambda: cluster.live("pods")) if n.startswith(gen.worker_name)}
            if len(now) == 3 and workers[0] not in now:
                break
            time.sleep(0.02)
        cluster.run(lambda: cluster.kmock.objects["v1/pods", NS, workers[1]].patch(
            {"status": {"containerStatuses": [{"name": "locust", "ready": True, "restartCount": 1, "image": "x",
                                               "imageID": "", "state": {"running": {}}}]}}))
        assert gen.restart_dead_workers() == 2  # one pod replaced, one container restarted: swarm again
        assert gen.restart_dead_workers() == 0 and gen.alive_workers() == 3

        # the users hit the model's Service by DNS name, not this process's port-forward
        assert target_url(gen, platform) == f"http://{platform.name}.{NS}.svc:8080"
        client = RecordingClient()
        gen._client = client  # type: ignore[assignment]
        runner = StepRunner(config, platform, gen, "single_client", lambda row: None)
        runner.set_users(5)
        assert client.swarms == [(5, platform.cluster_service_url)]
        # a generator that does not say (local processes) sends to the platform's service_url, as before
        local = SimpleNamespace(client=RecordingClient(), workers=1)
        StepRunner(config, platform, local, "single_client", lambda row: None).set_users(2)  # type: ignore[arg-type]
        assert local.client.swarms == [(2, platform.service_url)]
    finally:
        gen.stop()
        platform.teardown()
    assert cluster.run(lambda: cluster.live("deployments")) == {}
    assert cluster.run(lambda: cluster.live("configmaps")) == {}
    assert cluster.run(lambda: cluster.live("services")) == {}
    assert cluster.run(lambda: cluster.live("networkpolicies")) == {}


def test_cluster_generator_is_created_once_per_run_and_scaled_between_searches(
        cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tuning runs a search per candidate: each must not cost a Locust rollout and its deletion."""
    from types import SimpleNamespace

    from nightcap.run.context import RunContext

    run = "run-reuse"
    config, platform = _fast_platform(cluster, run, monkeypatch)
    ctx = RunContext(config=config, run_id=run, out=tmp_path, plan=SimpleNamespace(payloads=[b"{}"]),  # type: ignore[arg-type]
                     platform=platform)
    try:
        first = ctx.generator_for(1)
        ctx.idle_generator()  # between searches: the swarm stops, the pods stay
        assert ctx.generator_for(1) is first
        posts = [(r.data["kind"], r.data["metadata"]["name"]) for r in cluster.requests("POST")]
        assert posts == [("ConfigMap", f"nc-run-{mf.short_run(run)}"), ("ConfigMap", mf.locust_name(run, "files")),
                         ("NetworkPolicy", first.master_name),
                         ("Deployment", first.master_name),
                         ("Service", first.master_name), ("Deployment", first.worker_name)]
        assert ctx.generator_for(3) is first and first.workers == 3 and first.alive_workers() == 3
        patches = [r for r in cluster.requests("PATCH") if r.url.path.endswith(f"/deployments/{first.worker_name}")]
        assert [p.data["spec"]["replicas"] for p in patches] == [3]
        assert [(r.data["kind"], r.data["metadata"]["name"]) for r in cluster.requests("POST")] == posts  # nothing new
        assert not cluster.requests("DELETE")
        ctx.release_generator()
        assert ctx.generator is None and cluster.requests("DELETE")
        assert not any(n.startswith(first.worker_name) for n in cluster.run(lambda: cluster.live("deployments")))
    finally:
        ctx.release_generator()
        platform.teardown()


class FakeGkeClient:
    """Just enough of ClusterManagerClient for a restore: operations finish at once."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def set_node_pool_autoscaling(self, request: Any, retry: Any = None, timeout: Any = None) -> Any:
        from google.cloud import container_v1

        self.requests.append(request)
        return container_v1.Operation(name="op-1", status=container_v1.Operation.Status.DONE)


def test_node_pool_original_is_recorded_before_the_change_and_restored_by_cleanup(
        cluster: FakeCluster, tmp_path: Path) -> None:
    from google.cloud import container_v1

    from nightcap.platforms.base import HpaSpec, PodSpec
    from nightcap.kube.gke import GkeNodePools, restore_recorded
    from nightcap.kube.sweep import cleanup_run
    from nightcap.kube.platform import KubernetesPlatform
    from nightcap.processes.registry import RunRegistry, cleanup_dead
    from nightcap.config import validate

    config = validate({
        "target": {"name": "k8s-unit", "kind": "reference", "image": "registry.example/nightcap:0.1"},
        "platform": {"kind": "kubernetes", "namespace": NS, "ready_timeout_s": 10,
                     "gke": {"project": "p", "location": "europe-west1", "cluster": "c", "node_pool": "models"}},
        "slo": {"p95_ms": 500}, "autoscale": {"nodes": {"min": 1, "max": 5}},
    })
    original = container_v1.NodePoolAutoscaling(enabled=True, min_node_count=2, max_node_count=3)

    class Pools(GkeNodePools):
        def read_pool(self) -> container_v1.NodePool:
            return container_v1.NodePool(autoscaling=original, locations=["europe-west1-b"])

        def _apply(self, settings: container_v1.NodePoolAutoscaling, what: str) -> None:
            applied.append((what, settings.enabled, settings.total_min_node_count, settings.total_max_node_count,
                            [dict(p) for p in registry.record.node_pools]))

    applied: list[tuple[Any, ...]] = []
    registry = RunRegistry("run-pool", directory=tmp_path / "runs")
    pools = Pools(config.platform.gke, client=FakeGkeClient())  # type: ignore[arg-type]
    platform = KubernetesPlatform(config, "run-pool", api_client=cluster.api, node_pools=pools, registry=registry)
    platform.poll_s = 0.1
    platform.deploy(PodSpec(cpu=1.0, memory=None, concurrency=1), 1)
    assert registry.record.kubernetes == {"namespace": NS, "run_id": "run-pool", "context": None,
                                          "in_cluster": False}
    platform.enable_node_autoscaling(1, 5)
    platform.enable_autoscaling(HpaSpec())  # the pool is already on: not changed twice
    assert [a[:4] for a in applied] == [("set node-pool autoscaling", True, 1, 5)]
    pool_name = "projects/p/locations/europe-west1/clusters/c/nodePools/models"
    # the original was in the registry before the pool was changed
    assert [(p["name"], p["gke"]) for p in applied[0][4]] == [(pool_name, config.platform.gke.model_dump())]
    recorded = applied[0][4][0]["original"]
    assert (recorded["enabled"], recorded["minNodeCount"], recorded["maxNodeCount"]) == (True, 2, 3)
    saved = json.loads(json.dumps(registry.record.node_pools[0]))

    # the process dies here: its record is what a later `nightcap cleanup` works from
    registry._stop.set()
    registry.update(lambda r: setattr(r, "owner_pid", 999_999_999))
    # a flow's own start-up cleanup has no credentials: it keeps the cluster parts of the record
    lines = cleanup_dead(tmp_path / "runs")
    assert any("nightcap cleanup" in line for line in lines)
    kept = json.loads((tmp_path / "runs" / "run-pool.json").read_text())
    assert kept["kubernetes"]["run_id"] == "run-pool" and kept["node_pools"] == [saved]

    cluster.run(lambda: cluster.kmock.objects.__setitem__(
        ("apps/v1/deployments", NS, "other-run"),
        {"metadata": {"name": "other-run", "labels": {mf.MANAGED_BY: mf.MANAGER, mf.RUN_ID: "live-run"}},
         "spec": {"replicas": 0, "template": {"metadata": {"labels": {}}, "spec": {}}}}))
    gke = FakeGkeClient()
    lines = cleanup_dead(tmp_path / "runs",
                         kubernetes_cleanup=lambda rec: cleanup_run(cluster.api, rec["namespace"], rec["run_id"]),
                         node_pool_restore=lambda pool: restore_recorded(pool, client=gke))  # type: ignore[arg-type]
    assert len(lines) == 2 and not (tmp_path / "runs" / "run-pool.json").exists()
    assert [r.name for r in gke.requests] == [pool_name]
    assert (gke.requests[0].autoscaling.enabled, gke.requests[0].autoscaling.min_node_count,
            gke.requests[0].autoscaling.max_node_count) == (True, 2, 3)
    live = cluster.run(lambda: cluster.live("deployments"))
    assert list(live) == ["other-run"]  # another run's objects are not the dead run's: untouched
