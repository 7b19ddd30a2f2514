"""The parent flow with `platform.kind: kubernetes`, end to end against kmock (the control plane).

kmock serves the Kubernetes API over real HTTP; a controller thread in this test plays the cluster: it
makes Deployments ready, keeps one Running pod per replica (with metrics.k8s.io usage), and moves the HPA's
status and the Deployment's replicas like the HPA controller would. The load side is real: a local Locust
(`load.generator: local`) sends through the platform's own port-forward, whose pod sockets are pointed at a
reference server on 127.0.0.1 standing in for the model pods. So the flow's measured saturation must be the
reference server's capacity, and the objects it created, patched and deleted are the exact requests kmock saw.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from kubernetes import client as k8s

from nightcap.platforms import manifests as mf

NS = "capacity"
SLOTS, SERVICE_MS = 4, 25.0
CAPACITY_RPS = SLOTS * 1000 / SERVICE_MS  # 160 rps: the reference server's exact capacity
RESOURCES = ["v1/pods", "v1/events", "v1/nodes", "v1/services", "v1/configmaps", "v1/secrets",
             "apps/v1/deployments", "autoscaling/v2/horizontalpodautoscalers", "metrics.k8s.io/v1beta1/pods"]


class SelectorEmulator(kmock.KubernetesEmulator):
    """The emulator, plus equality label selectors on lists (as the API server applies them)."""

    async def _serve_list(self, request: Any) -> Any:
        result = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            wanted = dict(part.split("=", 1) for part in selector.split(","))
            result["items"] = [o for o in result["items"]
                               if all(((o.get("metadata") or {}).get("labels") or {}).get(k) == v
                                      for k, v in wanted.items())]
        return result


class FakeCluster:
    """kmock on a background loop, and a controller thread that plays kube-controller-manager and kubelet."""

    hpa_reacts_after_s = 2.0

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> tuple[Any, Any]:
            handler = SelectorEmulator()
            await handler.__aenter__()
            server = kmock.Server(handler)
            await server.__aenter__()
            return handler, server

        self.kmock, self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result()
        for res in RESOURCES:
            self.kmock.resources[res] = {}
        self.api = k8s.ApiClient(k8s.Configuration(host=str(self.server.url).rstrip("/")))
        self.hpa_seen: dict[str, float] = {}
        self.hpa_statuses: list[dict[str, Any]] = []
        self.max_pods = 0
        self.on_tick: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self.run(lambda: self.kmock.objects.__setitem__(
            ("v1/nodes", None, "node-0"), {"metadata": {"name": "node-0", "labels": {mf.NODE_POOL_LABEL: "models"}}}))
        self.controller = threading.Thread(target=self._control, daemon=True)
        self.controller.start()

    def run(self, fn: Callable[[], Any]) -> Any:
        async def call() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=10)

    def live(self, plural: str) -> dict[str, dict[str, Any]]:
        """name -> object of one resource in the namespace (not deleted)."""
        return {key[2]: obj.raw for key, obj in self.kmock.objects.items()
                if key[0].plural == plural and key[1] == NS and not obj.deleted}

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
                wanted[f"{name}-abc-{i}"] = template
        pods = self.live("pods")
        for pod_name in set(pods) - set(wanted):
            del objects["v1/pods", NS, pod_name]
            if ("metrics.k8s.io/v1beta1/pods", NS, pod_name) in objects:
                del objects["metrics.k8s.io/v1beta1/pods", NS, pod_name]
        for pod_name, template in wanted.items():
            if pod_name in pods:
                continue
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
        self.max_pods = max(self.max_pods, len(wanted))

    def requests(self, method: str) -> list[Any]:
        return [r for r in self.run(lambda: list(self.kmock)) if str(r.method.value).upper() == method]

    def close(self) -> None:
        self._stop.set()
        self.controller.join(timeout=5)

        async def stop() -> None:
            await self.server.__aexit__(None, None, None)
            await self.kmock.__aexit__(None, None, None)
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.api.close()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def reference_server() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "nightcap.reference_server", "--host", "127.0.0.1",
                             "--port", str(port), "--slots", str(SLOTS), "--service-ms", str(SERVICE_MS),
                             "--queue", "64"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the reference server did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


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
        "load": {"generator": "local", "workers": 1, "warmup_s": 1, "window_s": 2, "reconnect_s": 5,
                 "max_duration_s": 240},
        "search": {"start_users": 1, "max_users": 32, "max_windows": 1, "refine_steps": 0, "slo_capacity": False},
        "slo": {"p95_ms": 2000},
        "stages": ["single_client", "autoscale"],
        "autoscale": {"min_replicas": 1, "max_replicas": 3, "sample_s": 1,
                      "phases": [{"name": "baseline", "load": 0.5, "duration_s": 3},
                                 {"name": "overload", "load": 1.5, "duration_s": 5},
                                 {"name": "recovery", "load": 0.5, "duration_s": 2}]},
        "store": {"url": f"sqlite:///{tmp}/history.db"},
    }
    path = tmp / "k8s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_parent_flow_on_kubernetes_end_to_end(prefect_harness: None, cluster: FakeCluster, reference_server: int,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.capacity_check import capacity_check
    from nightcap.platforms import kubernetes as kube_mod

    monkeypatch.chdir(tmp_path)  # run registry, locks and report folder stay in the test's directory
    monkeypatch.setattr(kube_mod, "api_client_for", lambda platform: cluster.api)
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
    posts = cluster.requests("POST")
    created = [(r.data["kind"], r.data["metadata"]["name"]) for r in posts]
    assert [k for k, _ in created] == ["Deployment", "Service", "HorizontalPodAutoscaler"], created
    name = created[0][1]
    assert all(n == name for _, n in created)
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
    patches = [r.data for r in cluster.requests("PATCH") if str(r.url.path).endswith(f"/deployments/{name}")]
    assert {"spec": {"replicas": 1}} in patches  # autoscale's scale back to platform.replicas

    # teardown: found by the run's labels, deleted by name; nothing of the run is left
    deletes = sorted(str(r.url.path) for r in cluster.requests("DELETE"))
    assert deletes == sorted([f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{name}",
                              f"/apis/apps/v1/namespaces/{NS}/deployments/{name}",
                              f"/api/v1/namespaces/{NS}/services/{name}"])
    label_lists = {r.params["labelSelector"] for r in cluster.requests("GET")
                   if "labelSelector" in r.params and "/pods" not in str(r.url.path)}
    assert label_lists == {mf.selector_string(mf.run_selector(run_id))}
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
