"""The whole flow on Kubernetes with the in-cluster generator (the default), from preflight to teardown.

kmock is the API server; `kube_cluster.FakeCluster` plays the controllers; a kubelet stand-in here runs the
Locust pods' containers as local processes from exactly what the flow created: their args, their env (the
API key resolved from the run's Secret), their ConfigMap files. The flow reaches the Locust master through its
own port-forward code path (outside the cluster), and the workers load the reference server standing in for
the model Service. GKE is a fake REST API behind the real ClusterManagerClient. Afterwards nothing of the run
may be left in the cluster (Secret included) and the node pool must be back as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
import yaml

from gke_api import FakeGke, serve
from kmock_api import requests_outside_rbac
from kube_cluster import NS, FakeCluster, start_reference_server, stop_process
from nightcap.kube import manifests as mf
from nightcap.steps import read_steps_csv
from nightcap.processes.ports import free_port

SLOTS, SERVICE_MS = 4, 25.0
CAPACITY_RPS = SLOTS * 1000 / SERVICE_MS
KEY = "e2e-s3cr3t-key"
RUN_KINDS = ("deployments", "services", "configmaps", "networkpolicies", "horizontalpodautoscalers", "secrets")


class LocustKubelet:
    """Runs each Locust pod's container as a local process, and stops it when the pod goes away."""

    def __init__(self, cluster: FakeCluster, root: Path) -> None:
        self.cluster, self.root = cluster, root
        self.procs: dict[str, subprocess.Popen] = {}
        self.envs: dict[str, dict[str, str]] = {}  # pod -> the env its container got from the manifest
        self.masters: dict[str, tuple[int, int]] = {}  # run label -> (web port, bind port)
        self.spared: set[int] = set()
        self.lock = threading.Lock()

    def tick(self) -> None:
        pods = self.cluster.run(lambda: {n: p for n, p in self.cluster.live("pods").items()
                                         if p["metadata"]["labels"].get(mf.COMPONENT, "").startswith("locust")})
        with self.lock:
            for name in [n for n in self.procs if n not in pods]:
                stop_process(self.procs.pop(name))
            for name, pod in sorted(pods.items(), key=lambda kv: kv[1]["metadata"]["labels"][mf.COMPONENT]):
                if name not in self.procs:
                    self._start(name, pod)

    def _start(self, name: str, pod: dict[str, Any]) -> None:
        run = pod["metadata"]["labels"][mf.RUN_ID]
        web, bind = self.masters.setdefault(run, (free_port(), free_port()))
        container = pod["spec"]["containers"][0]
        files = self.root / name
        files.mkdir(parents=True, exist_ok=True)
        for volume in pod["spec"]["volumes"]:
            data = self.cluster.run(lambda v=volume: self.cluster.obj_of("configmaps", v["configMap"]["name"]))["data"]
            for fname, text in data.items():
                (files / fname).write_text(text)
        mount = container["volumeMounts"][0]["mountPath"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTCAP_") and k != "NC_E2E_KEY"}
        for item in container["env"]:
            if "valueFrom" in item:
                ref = item["valueFrom"]["secretKeyRef"]
                secret = self.cluster.run(lambda r=ref: self.cluster.obj_of("secrets", r["name"]))
                env[item["name"]] = secret["stringData"][ref["key"]]
            else:
                env[item["name"]] = item["value"].replace(mount, str(files))
        self.envs[name] = dict(env)
        args = [a.replace(mount, str(files)) for a in container["args"]]
        swap = {"--web-port": str(web), "--master-bind-port": str(bind), "--master-host": "127.0.0.1",
                "--master-port": str(bind)}
        args = [swap.get(args[i - 1], a) if i else a for i, a in enumerate(args)]
        if "--master" in args:
            args += ["--master-bind-host", "127.0.0.1"]
        locust = str(Path(sys.executable).with_name("locust"))
        log = (self.root / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([locust, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        log.close()
        self.spared.add(self.procs[name].pid)

    def stop_all(self) -> None:
        with self.lock:
            for proc in self.procs.values():
                stop_process(proc)
            self.procs.clear()


class SwarmRewriter:
    """What the master pod's web port is at the end of the port-forward: forwards to the local master, recording
    each swarm's host (the Service's DNS name) and sending the users to the reference server instead."""

    def __init__(self, kubelet: LocustKubelet, reference_url: str) -> None:
        self.hosts: list[str] = []
        rewriter = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/swarm":
                    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                    rewriter.hosts.append(form["host"])
                    body = urlencode({**form, "host": reference_url}).encode()
                (web, _), = kubelet.masters.values()
                answer = httpx.request(self.command, f"http://127.0.0.1:{web}{self.path}", content=body or None,
                                       headers={"Content-Type": self.headers.get("Content-Type", "text/plain")},
                                       timeout=10)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PoolAutoscaler:
    """The node pool as GKE runs it: with autoscaling on it grows to 3 nodes; set to a size, it shrinks to it."""

    def __init__(self, cluster: FakeCluster, gke: FakeGke) -> None:
        self.cluster, self.gke = cluster, gke

    def tick(self) -> None:
        want = 3 if self.gke.autoscaling.get("enabled") else self.gke.node_count
        self.gke.node_count = want
        have = sorted(n for n in self.cluster.run(lambda: self.cluster.live_nodes()) if n.startswith("pool-a-"))
        for i in range(len(have), want):
            self.cluster.add_node(f"pool-a-{i}", "pool-a")
        for name in have[want:]:
            self.cluster.run(lambda n=name: self.cluster.kmock.objects.__delitem__(("v1/nodes", None, n)))


@pytest.fixture()
def cluster() -> Iterator[FakeCluster]:
    c = FakeCluster()
    c.kmock.namespaces = {NS}
    c.run(lambda: c.kmock.objects.__delitem__(("v1/nodes", None, "node-0")))
    for i in range(2):
        c.add_node(f"pool-a-{i}", "pool-a")
    c.add_node("load-0", "load")  # the Locust pods' node: they are kept off the model's pool
    yield c
    c.close()


def _config(tmp: Path) -> Path:
    data = {
        "target": {"name": "k8s-cluster-gen", "kind": "reference", "image": "registry.example/nightcap:0.1",
                   "slots": SLOTS, "service_ms": SERVICE_MS, "queue": 64, "api_key_env": "NC_E2E_KEY"},
        "platform": {"kind": "kubernetes", "namespace": NS, "replicas": 1, "cpu": 1, "ready_timeout_s": 30,
                     "gke": {"project": "p1", "location": "europe-west4", "cluster": "c1", "node_pool": "pool-a"}},
        "load": {"workers": 1, "warmup_s": 1, "window_s": 2, "reconnect_s": 5, "max_duration_s": 240, "verify_s": 0},
        "search": {"start_users": 4, "max_users": 16, "max_windows": 1, "refine_steps": 0, "slo_capacity": False},
        "slo": {"p95_ms": 2000},
        "stages": ["single_client", "autoscale"],
        "autoscale": {"min_replicas": 1, "max_replicas": 3, "sample_s": 1, "nodes": {"min": 1, "max": 3},
                      "phases": [{"name": "baseline", "load": 0.5, "duration_s": 1},
                                 {"name": "overload", "load": 1.5, "duration_s": 2},
                                 {"name": "recovery", "load": 0.5, "duration_s": 1}]},
        "store": {"url": f"sqlite:///{tmp}/history.db"},
    }
    path = tmp / "k8s-cluster-gen.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
@pytest.mark.quiet  # the answer within 15% of the server's capacity
@pytest.mark.timeout(240)
def test_flow_with_in_cluster_locust_through_the_port_forward(prefect_api: str, cluster: FakeCluster, leftovers: Any,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.capacity_check import capacity_check
    from nightcap.load.kubernetes import KubernetesLocust
    from nightcap.kube import platform as kube_mod
    from nightcap.kube.gke import GkeNodePools

    reference, port = start_reference_server(SLOTS, SERVICE_MS)
    leftovers.spared.add(reference.pid)
    gke = FakeGke()
    gke.autoscaling, gke.node_count, gke.polls_until_done = {}, 2, 1  # autoscaling off, 2 nodes in one zone
    gke_client, stop_gke = serve(gke)
    kubelet = LocustKubelet(cluster, Path(tempfile.mkdtemp(prefix="nightcap-kubelet-")))
    rewriter = SwarmRewriter(kubelet, f"http://127.0.0.1:{port}")
    forwarded: list[tuple[str, int]] = []

    def to_master(self: Any, pod: str, pod_port: int) -> socket.socket:
        forwarded.append((pod, pod_port))
        return socket.create_connection(("127.0.0.1", rewriter.server.server_port), timeout=10)

    monkeypatch.setenv("NC_E2E_KEY", KEY)
    monkeypatch.setattr("nightcap.kube.client.api_client_for", lambda platform: cluster.api)
    monkeypatch.setattr("nightcap.kube.gke.container_v1.ClusterManagerClient", lambda *a, **k: gke_client)
    monkeypatch.setattr(GkeNodePools, "poll_s", 0.05)
    # the runner's Google identity and its permissions (Resource Manager), answered by the fake
    from google.auth.credentials import AnonymousCredentials

    monkeypatch.setattr("google.auth.default", lambda scopes=None: (AnonymousCredentials(), "p1"))
    monkeypatch.setattr("nightcap.kube.preflight_gke.CRM_URL", gke.base_url + "/v1")
    monkeypatch.setattr(kube_mod.KubernetesPlatform, "poll_s", 0.2)
    monkeypatch.setattr(KubernetesLocust, "poll_s", 0.2)
    monkeypatch.setattr(KubernetesLocust, "_open_pod_socket", to_master)
    monkeypatch.setattr(kube_mod.KubernetesPlatform, "_open_pod_socket",
                        lambda self, pod, p: socket.create_connection(("127.0.0.1", port), timeout=10))
    cluster.on_tick += [kubelet.tick, PoolAutoscaler(cluster, gke).tick]
    out = tmp_path / "report"
    started = time.monotonic()
    try:
        summary = capacity_check(config=str(_config(tmp_path)), out=str(out))
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # a controller tick after teardown: pods of deleted Deployments go, their processes stop
        leftovers.spared.update(kubelet.spared)
        running = [n for n, p in kubelet.procs.items() if p.poll() is None]
    finally:
        kubelet.stop_all()
        rewriter.close()
        stop_gke()
        stop_process(reference)
        shutil.rmtree(kubelet.root, ignore_errors=True)

    # in the cluster the generator sends to the Service itself: each arrival opens its own connection
    assert summary["autoscale"]["load_spreading"].startswith("every arrival opened its own connection")
    run_id = summary["run_id"]
    posts = [r for r in cluster.run(lambda: list(cluster.kmock)) if str(r.method.value).upper() == "POST"]
    dry = [r.data["kind"] for r in posts if r.params.get("dryRun") == "All"]
    created = [(r.data["kind"], r.data["metadata"]["name"]) for r in posts
               if r.params.get("dryRun") != "All" and "selfsubjectaccessreviews" not in str(r.url.path)]
    # preflight ran first and judged every object by dry run, and a Pod of each Deployment (admission judges
    # Pods); then the run created them for real, its record in the cluster first
    assert sorted(k for k in dry if k != "Pod") == sorted(k for k, _ in created) and dry.count("Pod") == 3
    assert [k for k, _ in created] == ["ConfigMap", "Deployment", "Service", "ConfigMap", "NetworkPolicy",
                                       "Deployment", "Secret", "Service", "Deployment", "HorizontalPodAutoscaler"]
    assert all(n.endswith(mf.short_run(run_id)) or mf.short_run(run_id) in n for _, n in created)

    # the generator ran in the cluster: the master was reached through the port-forward, users went to the
    # model Service's DNS name, the workers got the key from the Secret and the master did not
    assert forwarded and {p for _, p in forwarded} == {mf.LOCUST_WEB_PORT}
    service = f"http://{mf.model_name(_load(tmp_path), run_id)}.{NS}.svc:8080"
    assert rewriter.hosts and set(rewriter.hosts) == {service}
    workers = [e for n, e in kubelet.envs.items() if "-worker-" in n]
    masters = [e for n, e in kubelet.envs.items() if "-master-" in n]
    assert workers and all(e["NIGHTCAP_API_KEY"] == KEY for e in workers)
    assert masters and not any("NIGHTCAP_API_KEY" in e for e in masters)

    # teardown: nothing of the run is left, Secret included; the Locust containers stopped with their pods
    for kind in RUN_KINDS:
        assert cluster.run(lambda k=kind: cluster.live(k)) == {}, kind
    assert running == []
    assert requests_outside_rbac(cluster) == []
    # the node pool is back as it was: autoscaling off, and its 2 nodes (the autoscaler had grown it to 3)
    sets = [(p.rsplit(":", 1)[1], b) for m, p, b in gke.requests if m == "POST" and "testIamPermissions" not in p]
    assert sets == [("setAutoscaling", {"autoscaling": {"enabled": True, "totalMinNodeCount": 1,
                                                        "totalMaxNodeCount": 3}}),
                    ("setAutoscaling", {"autoscaling": {}}), ("setSize", {"nodeCount": 2})]
    assert gke.autoscaling == {} and gke.node_count == 2

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["status"] == "completed", on_disk["stages"]
    assert on_disk["saturation"]["rps"] == pytest.approx(CAPACITY_RPS, rel=0.15), on_disk["single_client"]["levels"]
    steps = read_steps_csv(out / "steps.csv")
    # CPU figures say where they come from: the workers' own counters (through the master), and per-pod CPU
    # from metrics-server intervals that lay inside each window
    assert {s.generator_cpu_source for s in steps} == {"worker CPU counters over the window"}
    assert any(s.generator_cpu_pct > 0 for s in steps)
    assert all(s.replica_cpu_source.startswith("metrics-server, 1s intervals; ") for s in steps)
    assert any(s.replica_cpu_pct for s in steps)
    print(f"in-cluster generator flow: saturation {on_disk['saturation']['rps']:.1f} rps (capacity "
          f"{CAPACITY_RPS:.0f}); {len(forwarded)} forwarded master connections; swarms {len(rewriter.hosts)}; "
          f"flow {elapsed:.0f}s")
    assert elapsed < 120, f"the flow took {elapsed:.0f}s"


def _load(tmp: Path) -> Any:
    from nightcap.config import load_config

    return load_config(tmp / "k8s-cluster-gen.yaml")
