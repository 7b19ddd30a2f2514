"""The Kubernetes API client's retries and error handling, the port-forward, and Locust in the cluster, with the
real `kubernetes` client against kmock (the shared cluster: tests/kube_fixtures.py)."""

from __future__ import annotations

import ast
import asyncio
import http.server
import re
import socket
import sys
import threading
import urllib.request
from typing import Any

import kmock
import pytest

from kmock_api import FakeMaster, requests_outside_rbac
from source_ast import parse_source
from nightcap.load.kubernetes import KubernetesLocust
from nightcap.kube import manifests as mf
from nightcap.platforms.base import PlatformError, PodSpec
from kube_fixtures import (  # noqa: F401 (cluster is a fixture)
    Cluster,
    DEPLOY,
    FakeClock,
    NAME,
    NS,
    RUN,
    SPEC,
    cluster,
    make_config,
    make_platform,
    pod,
    ready_status,
)


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

STUB = {"locustfile.py": "# the locustfile\n"}  # what the pods run, when it does not matter


def connected_as_ready(cluster: Cluster, worker: str) -> FakeMaster:
    """A master that counts as many workers as the worker Deployment has ready replicas."""
    def ids() -> list[str]:
        if not cluster.exists(DEPLOY, worker):
            return []
        ready = (cluster.obj(DEPLOY, worker).get("status") or {}).get("readyReplicas") or 0
        return [f"worker-{i}" for i in range(ready)]
    return FakeMaster(ids)


def wired_to_mock(cluster: Cluster, loc: KubernetesLocust, clock: FakeClock) -> FakeMaster:
    """`loc` talks to a fake master counting the worker Deployment's ready pods; both Deployments turn ready one
    second after they are created. Stop the returned master with `close()`."""
    loc.kube.request_timeout_s = 0.5
    master, worker = mf.locust_name(RUN, "master"), mf.locust_name(RUN, "worker")
    fake = connected_as_ready(cluster, worker)
    loc._client = fake.client()
    clock.at(1, lambda: (cluster.patch(DEPLOY, master, ready_status(1)), cluster.patch(DEPLOY, worker,
                                                                                       ready_status(2))))
    return fake


def test_kubernetes_locust_lifecycle(cluster: Cluster) -> None:
    clock = FakeClock()
    config = make_config(in_cluster=True)
    loc = KubernetesLocust(config, RUN, api_client=cluster.api, payloads=[b'{"a": 1}', b'{"a": 2}'],
                           api_key="s3cr3t-key", clock=clock, locust_sources=STUB)
    master, worker = mf.locust_name(RUN, "master"), mf.locust_name(RUN, "worker")
    fake = wired_to_mock(cluster, loc, clock)
    loc.start()
    kinds = [(str(r.url.path).rsplit("/", 1)[-1], r.data["metadata"]["name"]) for r in cluster.requests("POST")]
    # the run's record first: a sweep that finds these objects of a dead runner finds its lease
    assert kinds == [("configmaps", f"nc-run-{RUN}"), ("configmaps", mf.locust_name(RUN, "files")), ("networkpolicies", master), ("deployments", master),
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


IMAGE_PACKAGES = {"locust", "gevent", "geventhttpclient", "flask"}  # what a stock Locust image has beyond the stdlib


def imported_modules(source: str) -> set[str]:
    """The top-level name of every module a file imports, wherever the import stands."""
    names: set[str] = set()
    for node in ast.walk(parse_source(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, "Locust loads the locustfile outside any package"
            names.add(node.module.split(".")[0])
    return names


def test_the_pods_get_every_file_the_locustfile_imports(cluster: Cluster) -> None:
    """A pod runs a stock Locust image on its ConfigMap's files, without nightcap: every file of
    nightcap/load/locust_side/ the entry imports (by bare name: Locust puts the entry's directory on sys.path), and
    every one those import, must be a key of the ConfigMap the generator creates, a valid key, with the file's text.
    Anything else they import is the stdlib's or the image's, never nightcap's."""
    from nightcap.locust_env import LOCUST_DIR, LOCUST_ENTRY

    clock = FakeClock()
    loc = KubernetesLocust(make_config(in_cluster=True), RUN, api_client=cluster.api, clock=clock)  # the real files
    worker = mf.locust_name(RUN, "worker")
    fake = wired_to_mock(cluster, loc, clock)
    try:
        loc.start()
        files = cluster.obj("v1/configmaps", mf.locust_name(RUN, "files"))["data"]
        args = cluster.obj(DEPLOY, worker)["spec"]["template"]["spec"]["containers"][0]["args"]
    finally:
        loc.stop()
        fake.close()
    assert args[:2] == ["-f", f"{mf.LOCUST_MOUNT}/{LOCUST_ENTRY}"]
    needed, todo = set(), [LOCUST_ENTRY]
    while todo:  # the entry, and every file of the directory it imports, directly or through another
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        assert name in files, f"the pods would run without {name}: ConfigMap keys {sorted(files)}"
        assert files[name] == (LOCUST_DIR / name).read_text()
        imports = imported_modules(files[name])
        todo += [f"{module}.py" for module in imports if (LOCUST_DIR / f"{module}.py").exists()]
        elsewhere = imports - {module.removesuffix(".py") for module in files} - set(sys.stdlib_module_names)
        assert elsewhere <= IMAGE_PACKAGES, f"{name} imports {sorted(elsewhere - IMAGE_PACKAGES)}, not in the pod"
    assert len(needed) > 1  # the entry imports files beside it
    assert all(re.fullmatch(r"[-._a-zA-Z0-9]{1,253}", key) for key in files), sorted(files)


def test_the_api_key_secret_is_adopted_then_deleted_by_name_with_verbs_the_role_grants(cluster: Cluster) -> None:
    """The mock (like a server that could not set the owner) leaves the Secret without a live owner: garbage
    collection would never remove it, so stopping the generator must delete it, by name, never listing Secrets."""
    clock = FakeClock()
    loc = KubernetesLocust(make_config(in_cluster=True), RUN, api_client=cluster.api, api_key="s3cr3t-key",
                           clock=clock, locust_sources=STUB)
    master, key = mf.locust_name(RUN, "master"), mf.locust_name(RUN, "key")
    fake = wired_to_mock(cluster, loc, clock)
    # stored, then answered 500 (a proxy reset): the retry meets 409 and adopts this run's Secret
    cluster.react(f"post /api/v1/namespaces/{NS}/secrets",
                  kmock.KubernetesError(status=500, reason="InternalError", message="proxy reset"))
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
    loc = KubernetesLocust(make_config(in_cluster=True), RUN, api_client=cluster.api, clock=clock, locust_sources=STUB)
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


def test_locust_pods_without_room_are_the_generators_failure_not_the_candidates(cluster: Cluster) -> None:
    """A Locust worker that does not fit raises GeneratorError (naming the Locust pods and load.workers), never
    NoRoomForPods, which tuning would record as "no room for this model pod size"."""
    from nightcap.load.base import GeneratorError
    from nightcap.load.kubernetes import KubernetesLocust
    from nightcap.platforms.base import NoRoomForPods

    clock = FakeClock()
    loc = KubernetesLocust(make_config(), RUN, api_client=cluster.api, clock=clock, locust_sources=STUB)
    loc.kube.request_timeout_s = 0.5
    worker = mf.locust_name(RUN, "worker")
    labels = mf.labels(make_config(), RUN, mf.LOCUST_WORKER)
    clock.at(1, lambda: (cluster.patch(DEPLOY, mf.locust_name(RUN, "master"), ready_status(1)), cluster.put(
        "v1/pods", f"{worker}-abc-1", {**pod("w", "Pending", False, unschedulable="0/3 nodes are available: 3 "
                                             "Insufficient cpu."), "metadata": {"labels": labels}})))
    with pytest.raises(GeneratorError) as err:
        loc.start()
    assert not isinstance(err.value, NoRoomForPods)
    assert "Locust worker" in str(err.value) and "load.workers" in str(err.value)
    assert "platform.cpu" not in str(err.value)
    loc.stop()


def test_tune_starts_the_generator_before_applying_a_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A generator that fails to start stops the stage as the generator's failure: no candidate is applied
    (or recorded as failed) on its account."""
    import logging
    from types import SimpleNamespace

    import flows.tune as tune
    from nightcap.analysis.tuning import Candidate
    from nightcap.load.base import GeneratorError

    applied: list[Any] = []

    def no_generator(workers: int) -> Any:
        raise GeneratorError("the load generator did not start (cluster): Locust pods: no room")

    platform = SimpleNamespace(set_resources=applied.append, replicas=2, scale=applied.append)
    ctx = SimpleNamespace(platform=platform, config=SimpleNamespace(tune=SimpleNamespace(replicas=2)), steps=[],
                          spec=None, generator_for=no_generator)
    monkeypatch.setattr(tune, "get_run_logger", lambda: logging.getLogger("test"))
    with pytest.raises(GeneratorError):
        tune.measure_candidate(ctx, Candidate(cpu=1.0, memory=2**30, concurrency=2))  # type: ignore[arg-type]
    assert applied == []
