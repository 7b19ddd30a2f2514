"""Cleanup from inside the cluster: a runner that dies leaves no local record (a Prefect job's disk dies with its
pod), so the next run's start in the namespace, or `nightcap cleanup --namespace`, finds its objects by label and
its node pool's original settings in its record in the cluster (kmock, the fake GKE API, the real clients)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gke_api import FakeGke, serve
from kube_fixtures import DEPLOY, NS, Cluster, FakeClock, cluster, make_config, ready_status  # noqa: F401
from nightcap.kube import lease as kube_lease, manifests as mf, manifests_locust as locust_mf
from nightcap.platforms.base import PodSpec
from nightcap.kube.gke import GkeNodePools, restore_recorded
from nightcap.kube.platform import KubernetesPlatform

GKE = {"project": "p1", "location": "europe-west4", "cluster": "c1", "node_pool": "pool-a"}
ORIGINAL = {"enabled": True, "minNodeCount": 1, "maxNodeCount": 3, "locationPolicy": "BALANCED"}
SPEC = PodSpec(cpu=0.5, memory=256 * 2**20, concurrency=2)


@pytest.fixture()
def gke() -> Iterator[FakeGke]:
    state = FakeGke()
    state.client, stop = serve(state)  # type: ignore[attr-defined]
    yield state
    stop()


@pytest.fixture(autouse=True)
def fresh_process() -> Iterator[None]:
    """Each run in these tests is its own process: none shares another's record."""
    kube_lease._HELD.clear()
    yield
    for lease in list(kube_lease._HELD.values()):
        lease.stop_renewing()
    kube_lease._HELD.clear()


def platform(cluster: Cluster, gke: FakeGke, run: str, clock: FakeClock, **kwargs: Any) -> KubernetesPlatform:
    config = make_config(gke=GKE)
    pools = GkeNodePools(config.platform.gke, client=gke.client, clock=clock)  # type: ignore[attr-defined]
    p = KubernetesPlatform(config, run, api_client=cluster.api, node_pools=pools, clock=clock,
                           restore_pool=lambda rec: restore_recorded(rec, client=gke.client, clock=FakeClock()),
                           **kwargs)
    p.kube.request_timeout_s = 2.0
    return p


def deploy(cluster: Cluster, p: KubernetesPlatform, clock: FakeClock) -> None:
    clock.at(clock.now + 1, lambda: cluster.patch(DEPLOY, p.name, ready_status(1)))
    p.deploy(SPEC, 1)


def locust_objects(cluster: Cluster, p: KubernetesPlatform) -> None:
    """The generator's objects, created as KubernetesLocust creates them (under the run's record)."""
    c, r = p.config, p.run_id
    for obj in (locust_mf.locust_configmap(c, r, {"locustfile.py": "x"}), locust_mf.locust_network_policy(c, r),
                locust_mf.locust_master_deployment(c, r, {}), locust_mf.locust_master_service(c, r),
                locust_mf.locust_worker_deployment(c, r, 2, {})):
        p.kube.create(obj, r)


def kill(p: KubernetesPlatform) -> None:
    """What SIGKILL leaves: no teardown, no renewal, nothing in this process."""
    assert p.lease is not None
    p.lease.stop_renewing()
    kube_lease._HELD.clear()


def run_objects(cluster: Cluster, run: str) -> list[str]:
    def listed() -> list[str]:
        return sorted(f"{key[0].plural}/{key[2]}" for key, obj in cluster.kmock.objects.items() if not obj.deleted
                      and ((obj.raw.get("metadata") or {}).get("labels") or {}).get(mf.RUN_ID) == run)
    return cluster.run(listed)


def test_a_dead_runners_objects_and_node_pool_are_put_back_by_the_next_runs_start(cluster: Cluster,
                                                                                 gke: FakeGke) -> None:
    clock = FakeClock()
    dead = platform(cluster, gke, "run-dead", clock)
    deploy(cluster, dead, clock)
    locust_objects(cluster, dead)
    dead.enable_node_autoscaling(1, 5)
    assert gke.autoscaling["totalMaxNodeCount"] == 5
    record = cluster.obj("v1/configmaps", "nc-run-run-dead")["data"]
    assert json.loads(record["nodePools"])[0]["original"]["maxNodeCount"] == 3  # written before the change
    kill(dead)

    later = FakeClock()
    later.now = 1000.0  # past the dead record's lease (180 s)
    nxt = platform(cluster, gke, "run-next", later)
    deploy(cluster, nxt, later)
    assert run_objects(cluster, "run-dead") == []
    assert gke.autoscaling == ORIGINAL
    assert any("run run-dead" in line and "expired" in line for line in nxt.swept)
    assert any("restored node pool" in line for line in nxt.notes)
    assert run_objects(cluster, "run-next") == ["configmaps/nc-run-run-next", f"deployments/{nxt.name}",
                                                f"services/{nxt.name}"]
    nxt.teardown()
    assert run_objects(cluster, "run-next") == []


def test_a_live_run_is_never_swept(cluster: Cluster, gke: FakeGke) -> None:
    clock = FakeClock()
    live = platform(cluster, gke, "run-live", clock)
    deploy(cluster, live, clock)
    kube_lease._HELD.clear()  # another process, whose lease is fresh
    other = FakeClock()
    other.now = 60.0
    nxt = platform(cluster, gke, "run-other", other)
    deploy(cluster, nxt, other)
    assert nxt.swept == [] and f"deployments/{live.name}" in run_objects(cluster, "run-live")


def test_a_flow_run_in_a_final_state_is_dead_at_once(cluster: Cluster, gke: FakeGke) -> None:
    clock = FakeClock()
    crashed = platform(cluster, gke, "run-crashed", clock)
    deploy(cluster, crashed, clock)
    assert crashed.lease is not None
    cluster.patch("v1/configmaps", crashed.lease.name, {"data": {"flowRunId": "fr-1"}})
    kill(crashed)
    nxt = platform(cluster, gke, "run-next", FakeClock(), flow_run_state=lambda fr: "CRASHED" if fr == "fr-1" else None)
    deploy(cluster, nxt, nxt.clock)
    assert run_objects(cluster, "run-crashed") == []
    assert any("Prefect flow run fr-1 is CRASHED" in line for line in nxt.swept)


def test_a_pool_that_cannot_be_restored_keeps_its_record_for_nightcap_cleanup(cluster: Cluster, gke: FakeGke) -> None:
    from typer.testing import CliRunner

    from nightcap.cli import app
    from nightcap.run import cleanup

    clock = FakeClock()
    dead = platform(cluster, gke, "run-dead", clock)
    deploy(cluster, dead, clock)
    dead.enable_node_autoscaling(0, 4)
    kill(dead)
    later = FakeClock()
    later.now = 1000.0
    gke.set_errors = [(403, "PERMISSION_DENIED", "Required 'container.clusters.update' permission")]
    nxt = platform(cluster, gke, "run-next", later)
    deploy(cluster, nxt, later)
    assert run_objects(cluster, "run-dead") == ["configmaps/nc-run-run-dead"]  # the record alone is left
    assert cluster.obj("v1/configmaps", "nc-run-run-dead")["data"]["released"] == "true"
    assert any("could not restore node pool" in line for line in nxt.swept)

    original = cleanup.sweep_cluster

    def sweep(namespace: str, context: Any, in_cluster: bool) -> list[str]:
        return original(namespace, api_client=cluster.api, clock=later,
                        restore_pool=lambda rec: restore_recorded(rec, client=gke.client, clock=FakeClock()))

    pytest.MonkeyPatch().setattr(cleanup, "sweep_cluster", sweep)
    result = CliRunner().invoke(app, ["cleanup", "--namespace", NS])
    assert result.exit_code == 0, result.output
    assert "restored node pool" in result.output
    assert run_objects(cluster, "run-dead") == [] and gke.autoscaling == ORIGINAL


def test_objects_without_a_record_are_left_alone_while_young(cluster: Cluster) -> None:
    from nightcap.kube.client import Kube
    from nightcap.kube.sweep import sweep_namespace

    now = FakeClock().time()
    young = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    for run, created in (("young", young), ("old", old)):
        cluster.put("v1/services", f"svc-{run}", {"metadata": {"labels": {mf.MANAGED_BY: mf.MANAGER, mf.RUN_ID: run},
                                                               "creationTimestamp": created}, "spec": {}})
    cluster.put("v1/services", "prod", {"metadata": {"labels": {"app": "prod"}}, "spec": {}})
    lines = sweep_namespace(Kube(cluster.api, NS), clock=FakeClock())
    assert [line.split(" in ")[0] for line in lines] == ["run old"]
    assert cluster.exists("v1/services", "svc-young") and cluster.exists("v1/services", "prod")
    assert not cluster.exists("v1/services", "svc-old")


RUNNER = textwrap.dedent('''
    import sys, time
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import container_v1
    from google.cloud.container_v1.services.cluster_manager.transports.rest import ClusterManagerRestTransport
    from kubernetes import client as k8s
    from nightcap.config import validate
    from nightcap.kube import manifests_locust as locust_mf
    from nightcap.platforms.base import PodSpec
    from nightcap.kube.gke import GkeNodePools
    from nightcap.kube.platform import KubernetesPlatform

    api_url, gke_port = sys.argv[1], sys.argv[2]
    config = validate({"target": {"name": "wine", "kind": "reference", "image": "registry.example/n:1"},
                       "platform": {"kind": "kubernetes", "namespace": "capacity", "ready_timeout_s": 20,
                                    "gke": %r},
                       "slo": {"p95_ms": 500}, "autoscale": {"nodes": {"min": 1, "max": 5}}})
    transport = ClusterManagerRestTransport(host=f"127.0.0.1:{gke_port}", credentials=AnonymousCredentials(),
                                            url_scheme="http")
    pools = GkeNodePools(config.platform.gke, client=container_v1.ClusterManagerClient(transport=transport))
    pools.poll_s = 0.05
    p = KubernetesPlatform(config, "run-killed", api_client=k8s.ApiClient(k8s.Configuration(host=api_url)),
                           node_pools=pools)
    p.poll_s = 0.1
    p.deploy(PodSpec(cpu=0.5, memory=None, concurrency=1), 1)
    for obj in (locust_mf.locust_configmap(config, "run-killed", {"locustfile.py": "x"}),
                locust_mf.locust_network_policy(config, "run-killed"), locust_mf.locust_master_deployment(config, "run-killed", {}),
                locust_mf.locust_worker_deployment(config, "run-killed", 2, {})):
        p.kube.create(obj, "run-killed")
    p.enable_node_autoscaling(1, 5)  # the autoscale stage, mid-way
    print("MID-STAGE", flush=True)
    time.sleep(120)
''' % GKE)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_runner_killed_mid_stage_is_cleaned_up_by_the_next_runs_start(gke: FakeGke, tmp_path: Path) -> None:
    """SIGKILL, in its own process, with no local record anywhere: the next run's start in the namespace deletes
    every object of the dead run and puts the node pool back to its recorded settings."""
    from kube_cluster import FakeCluster

    cluster = FakeCluster()  # with a controller thread: Deployments become ready, pods run
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    port = gke.base_url.rsplit(":", 1)[1]
    proc = subprocess.Popen([sys.executable, str(script), cluster.api.configuration.host, port], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "MID-STAGE", proc.stderr.read() if proc.poll() is not None else line  # type: ignore[union-attr]
        assert gke.autoscaling.get("totalMaxNodeCount") == 5
        assert len(cluster.run(lambda: cluster.live("deployments"))) == 3
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert not list(tmp_path.rglob("*.json"))  # no local record to clean up from

        class Later:  # the next night: the dead runner's lease expired long ago
            monotonic, sleep = staticmethod(time.monotonic), staticmethod(time.sleep)

            @staticmethod
            def time() -> float:
                return time.time() + 3600

        config = make_config(gke=GKE)
        nxt = KubernetesPlatform(config, "run-next", api_client=cluster.api, clock=Later,
                                 restore_pool=lambda rec: restore_recorded(rec, client=gke.client, clock=FakeClock()))
        nxt.poll_s = 0.1
        nxt.deploy(SPEC, 1)
        left = {k: v for k, v in cluster.run(lambda: {p: list(cluster.live(p)) for p in (
            "deployments", "services", "configmaps", "networkpolicies")}).items() if any("killed" in n for n in v)}
        assert left == {}, left
        assert gke.autoscaling == ORIGINAL
        nxt.teardown()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        kube_lease._HELD.clear()
        cluster.close()
