"""Distributed Locust inside the cluster: master Deployment + Service, worker Deployment, files in a ConfigMap.

Load must come from inside the cluster (next to the model, through its Service), as people do it by hand;
the flow only talks to the master's HTTP API: through the Service when it runs in the cluster, through a
port-forward to the master pod when it runs outside. Same locustfile and environment contract as the local
Locust (`nightcap/load/locust_side/`, every file of it in the ConfigMap); the API key travels in a Secret read
only by the workers, so it is never in a manifest, a ConfigMap or a log. The Secret is owned by the master
Deployment (garbage collection removes it with the master) and is also deleted by name when the generator stops.
The run's record in the cluster (`kube/lease.py`) covers the Locust objects too, so a sweep finds them if the
runner dies. Every failure here is the generator's (`GeneratorError`): a Locust pod without room is not a model
pod size without room.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import httpx
from kubernetes import client as k8s

from nightcap.config import Config
from nightcap.load.base import GeneratorError, wait_for_workers
from nightcap.locust_env import API_KEY_VAR, LOCUST_ENTRY, locust_env, locust_source_texts
from nightcap.load.driver import LoadError, MasterClient
from nightcap.kube import manifests as mf
from nightcap.platforms.base import PlatformError
from nightcap.kube import client as kube_client
from nightcap.kube.client import MERGE_PATCH, Kube, KubeApiError, pod_ready
from nightcap.kube.diagnosis import LOCUST_KEYS
from nightcap.kube.lease import RunLease, hold_lease
from nightcap.kube import manifests_locust as locust_mf
from nightcap.kube.manifests_locust import runner_namespace
from nightcap.kube.port_forward import PortForward, open_pod_socket

if TYPE_CHECKING:
    from nightcap.kube.platform import KubernetesPlatform

log = logging.getLogger(__name__)

CONFIGMAP_BUDGET = 900_000  # bytes of payloads; a ConfigMap holds at most 1 MiB


class KubernetesLocust:
    """Locust master + `load.workers` workers as pods of this run (labelled like every nightcap object)."""

    poll_s = 2.0
    cpu_source = "worker CPU counters over the window"

    def __init__(self, config: Config, run_id: str, api_client: k8s.ApiClient | None = None,
                 payloads: list[bytes] | None = None, api_key: str | None = None, clock: Any = time,
                 locust_sources: dict[str, str] | None = None, workers: int | None = None):
        self.config = config
        self.run_id = run_id
        self.namespace = config.platform.namespace
        self.clock = clock
        self.kube = Kube(api_client or kube_client.api_client_for(config.platform), self.namespace, clock=clock)
        self.workers = workers if workers is not None else config.load.workers
        self.api_key = api_key
        self.notes: list[str] = []
        locust_sources = locust_sources if locust_sources is not None else locust_source_texts()
        if LOCUST_ENTRY not in locust_sources or "payloads.jsonl" in locust_sources:
            raise ValueError(f"Locust sources {sorted(locust_sources)}: no {LOCUST_ENTRY}, or a payloads.jsonl")
        self._files = {**locust_sources, "payloads.jsonl": self._payload_text(payloads or [b"{}"])}
        t = config.target
        self._env = locust_env(t.path, t.method, t.headers, t.request_timeout_s, config.load.reconnect_s,
                               f"{mf.LOCUST_MOUNT}/payloads.jsonl", with_api_key=bool(api_key))
        self._secret_env: dict[str, tuple[str, str]] | None = None
        if api_key:
            self._secret_env = {API_KEY_VAR: (mf.locust_name(run_id, "key"), "api-key")}
        self._forward: PortForward | None = None
        self.master_name = mf.locust_name(run_id, "master")
        self.worker_name = mf.locust_name(run_id, "worker")
        self._client: MasterClient | None = None
        self._worker_pods: dict[str, int] = {}  # worker pod -> restarts, as last seen ready
        self._connected: set[str] = set()  # worker ids the master counted at the last wait
        self.lease: RunLease | None = None

    def _payload_text(self, payloads: list[bytes]) -> str:
        kept, size = [], 0
        for body in payloads:
            size += len(body) + 1
            if size > CONFIGMAP_BUDGET:
                self.notes.append(f"only {len(kept)} of {len(payloads)} payloads fit in the ConfigMap (1 MiB)")
                break
            kept.append(body.decode("utf-8", errors="replace"))
        return "\n".join(kept) + "\n"

    def _selector(self, component: str) -> dict[str, str]:
        return {**mf.run_selector(self.run_id), mf.COMPONENT: component}

    def start(self, timeout_s: float | None = None) -> None:
        """Create the files, master, its Service and the workers; wait until their pods are ready and the
        master counts every worker (ready pods are not connected workers: see `wait_for_workers`)."""
        timeout = timeout_s or self.config.platform.ready_timeout_s
        c, r = self.config, self.run_id
        if self.lease is None:
            self.lease, _ = hold_lease(self.kube, c, r, r, self.clock)
        since = self.clock.time()
        self.kube.create(locust_mf.locust_configmap(c, r, self._files), r)
        self.kube.create(locust_mf.locust_network_policy(c, r), r)  # before the master: it never runs unguarded
        master = self.kube.create(locust_mf.locust_master_deployment(c, r, self._env), r)  # sends nothing: no key
        if self.api_key:
            owner = master if (master.get("metadata") or {}).get("uid") else None
            self.kube.create(locust_mf.api_key_secret(c, r, self.api_key, owner), r)
        self.kube.create(locust_mf.locust_master_service(c, r), r)
        self.kube.create(locust_mf.locust_worker_deployment(c, r, self.workers, self._env, self._secret_env), r)
        self._rollout(self.master_name, 1, timeout, "start the Locust master", mf.LOCUST_MASTER, since)
        self._rollout(self.worker_name, self.workers, timeout, f"start {self.workers} Locust worker(s)",
                      mf.LOCUST_WORKER, since)
        self._wait_connected(timeout)
        self._worker_pods = self._worker_snapshot()

    def _rollout(self, name: str, replicas: int, timeout_s: float, action: str, component: str,
                 since: float | None = None) -> None:
        try:
            self.kube.wait_rollout(name, replicas, timeout_s, action, self._selector(component), self.poll_s,
                                   since=since, keys=LOCUST_KEYS)
        except PlatformError as exc:  # NoRoomForPods included: the Locust pods', not the model's
            raise GeneratorError(f"the load generator's pods: {exc}") from exc

    def _wait_connected(self, timeout_s: float, joined: int = 0) -> None:
        """Until the master counts every worker; with `joined`, that many not connected at the last wait (the
        controller replaces a dead worker on its own, so the replacement may have joined already)."""
        where = f"kubectl logs -n {self.namespace} -l {mf.COMPONENT}={mf.LOCUST_WORKER}"
        if self.config.platform.in_cluster:
            runner_ns = runner_namespace(self.config)
            where += (f"; if the master's web API never answered, this pod may not be the runner its NetworkPolicy "
                      f"admits: it needs the label {mf.RUNNER_LABEL}=true and namespace {runner_ns} "
                      "(platform.kubernetes.runner_namespace)")
        try:
            self._connected = wait_for_workers(
                self.client, self.workers, timeout_s, joined_since=self._connected if joined else None,
                joined=joined, clock=self.clock, poll_s=self.poll_s, request_timeout_s=5.0, where=where)
        except LoadError as exc:
            raise GeneratorError(str(exc)) from exc

    # --- what StepRunner and the stages drive (nightcap.load.base.Generator) -----------------------------------

    @property
    def client(self) -> MasterClient:
        """The master's web API, opened on first use (through the port-forward outside the cluster)."""
        if self._client is None:
            self._client = MasterClient(self.master_url)
        return self._client

    def target_url(self, platform: "KubernetesPlatform") -> str:
        """The workers run next to the model: they send to the Service's DNS name, never to a port-forward."""
        return platform.cluster_service_url

    def alive_workers(self) -> int:
        """Ready worker pods (a crashed or evicted worker is not ready until it restarts)."""
        return sum(1 for p in self.kube.pods(self._selector(mf.LOCUST_WORKER)) if pod_ready(p))

    def _worker_snapshot(self) -> dict[str, int]:
        return {p["metadata"]["name"]: sum(int(cs.get("restartCount") or 0)
                                           for cs in (p.get("status") or {}).get("containerStatuses") or [])
                for p in self.kube.pods(self._selector(mf.LOCUST_WORKER))}

    def restart_dead_workers(self, timeout_s: float | None = None) -> int:
        """Workers that died since the last look: the Deployment controller replaces them (new pod or container
        restart); wait until all are ready again and return how many, so the caller swarms again (a
        replacement holds no users)."""
        now = self._worker_snapshot()
        replaced = sum(1 for name, restarts in now.items()
                       if name not in self._worker_pods or restarts > self._worker_pods[name])
        replaced = max(replaced, self.workers - self.alive_workers())
        if not replaced:
            return 0
        timeout = timeout_s or self.config.platform.ready_timeout_s
        self._rollout(self.worker_name, self.workers, timeout, f"replace {replaced} dead Locust worker(s)",
                      mf.LOCUST_WORKER)
        self._wait_connected(timeout, joined=replaced)
        self._worker_pods = self._worker_snapshot()
        return replaced

    def mark_cpu(self) -> None:
        """Nothing to mark: the window's reset starts each worker's CPU count (`generator_cpu_pct`)."""

    @property
    def master_url(self) -> str:
        """The master's web API: Service DNS in the cluster, a local port-forward outside it."""
        if self.config.platform.in_cluster:
            return f"http://{self.master_name}.{self.namespace}.svc:{mf.LOCUST_WEB_PORT}"
        if self._forward is None:
            self._forward = PortForward(self._open_master, what=f"port-forward to {self.master_name}")
        return self._forward.url

    def _open_master(self) -> socket.socket:
        ready = [p["metadata"]["name"] for p in self.kube.pods(self._selector(mf.LOCUST_MASTER)) if pod_ready(p)]
        if not ready:
            raise PlatformError(f"the Locust master {self.namespace}/{self.master_name} has no ready pod")
        return self._open_pod_socket(ready[0], mf.LOCUST_WEB_PORT)

    def _open_pod_socket(self, pod: str, port: int) -> socket.socket:
        return open_pod_socket(self.kube.api, self.namespace, pod, port)

    def scale_workers(self, n: int) -> None:
        since = self.clock.time()
        self.kube.patch_deployment(self.worker_name, {"spec": {"replicas": n}}, MERGE_PATCH)
        self.workers = n
        self._rollout(self.worker_name, n, self.config.platform.ready_timeout_s, f"scale Locust workers to {n}",
                      mf.LOCUST_WORKER, since)
        self._wait_connected(self.config.platform.ready_timeout_s)
        self._worker_pods = self._worker_snapshot()

    def generator_cpu_pct(self) -> list[float]:
        """Each worker's CPU over the window, in % of one core (a Locust worker is one process: ~100 means bound).

        From cumulative counters each worker reports with its request counts (`nightcap_window.py`), over exactly
        the interval its requests were counted in. metrics-server could not say it: it resolves CPU over
        15-30 s, longer than a window, so its figure would describe earlier load."""
        try:
            workers = self.client.window(timeout_s=5.0).get("workers", {})
        except httpx.HTTPError as exc:
            if not any("generator CPU" in n for n in self.notes):
                self.notes.append(f"generator CPU not measured: {exc}")
            return []
        return [round(100.0 * w["cpu_s"] / w["covered_s"], 1) for _, w in sorted(workers.items())
                if w.get("cpu_s") is not None and w.get("covered_s", 0) > 0]

    def stop(self) -> None:
        """Stop the swarm, delete this run's Locust objects (by label), close the port-forward. Idempotent.

        Waits (bounded) until the Deployments are gone: the next stage creates objects of the same names."""
        if self._client is not None:
            try:
                self._client.stop()
            except Exception as exc:  # the master may already be gone; deletion below is what matters
                log.info("stopping the swarm: %s", exc)
            self._client.close()
            self._client = None
        if self._forward is not None:
            self._forward.close()
            self._forward = None
        errors = []
        for component in (mf.LOCUST_WORKER, mf.LOCUST_MASTER, mf.LOCUST_FILES):
            try:
                self.kube.delete_labelled(self._selector(component))
            except PlatformError as exc:
                errors.append(str(exc))
        if self.api_key:
            try:  # garbage collection would follow the owner reference, when the server could set one
                self.kube.delete_secret(mf.locust_name(self.run_id, "key"), self._selector(mf.LOCUST_WORKER))
            except PlatformError as exc:
                errors.append(str(exc))
        if not errors:
            errors += self._wait_gone((self.worker_name, self.master_name))
        lease, self.lease = self.lease, None
        if lease is not None and not errors:  # with objects left, the record stays for a sweep to find them
            try:
                lease.release()
            except PlatformError as exc:
                errors.append(str(exc))
        if errors:
            raise PlatformError("stopping the Locust cluster left objects behind: " + " | ".join(errors))

    def _wait_gone(self, names: tuple[str, ...], timeout_s: float = 60.0) -> list[str]:
        deadline = self.clock.monotonic() + timeout_s
        left = list(names)
        while left:
            for name in list(left):
                try:
                    self.kube.get_deployment(name)
                except KubeApiError as exc:
                    if exc.status == 404:
                        left.remove(name)
                    else:
                        return [str(exc)]
            if not left:
                break
            if self.clock.monotonic() >= deadline:
                return [f"deployment(s) {', '.join(left)} in namespace {self.namespace} still exist "
                        f"{timeout_s:.0f}s after deletion (finalizers?)"]
            self.clock.sleep(self.poll_s)
        return []

    def __enter__(self) -> "KubernetesLocust":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
