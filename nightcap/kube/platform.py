"""The model as a Deployment + Service in one namespace: the `Platform` on Kubernetes (+ GKE node pools).

API access (retries, errors, objects by label, rollout waits) is `client.Kube`; the way in from outside
the cluster is `port_forward`; what is created is `manifests`. Before its first object the run writes its
record in the cluster (`lease`) and sweeps the namespace for dead runs (`sweep`); the node pool's
original settings go into that record before the pool is changed. Teardown deletes the run's objects, then
restores the pool, then deletes the record: a runner killed at any point leaves what the next run needs.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any

from kubernetes import client as k8s

from nightcap.config import Config
from nightcap.kube import pods as kube_pods, manifests as mf
from nightcap.platforms.base import AutoscaleStatus, HpaSpec, Observation, PlatformError, PodSpec, ReplicaSample
from nightcap.kube import client as kube_client
from nightcap.kube.client import MERGE_PATCH, JSON_PATCH, Kube, KubeApiError, pod_ready
from nightcap.kube.lease import RunLease, hold_lease, prefect_flow_run_state
from nightcap.kube.node_pools import NodePoolControl
from nightcap.kube.metrics import PodUsage, timestamp
from nightcap.kube.port_forward import PortForward, open_pod_socket
from nightcap.quantities import QuantityError, parse_cpu, parse_memory

if TYPE_CHECKING:
    from nightcap.kube.gke import GkeNodePools
    from nightcap.processes.registry import RunRegistry

log = logging.getLogger(__name__)


class KubernetesPlatform(NodePoolControl):
    """`Platform` on a Kubernetes namespace: one Deployment + Service per run, an HPA when asked."""

    kind = "kubernetes"
    limits_enforced = True
    limits_note = "CPU and memory limits enforced by the kubelet (requests = limits: Guaranteed QoS)"
    poll_s = 2.0  # rollout polling period

    def __init__(self, config: Config, run_id: str, api_client: k8s.ApiClient | None = None,
                 node_pools: "GkeNodePools | None" = None, clock: Any = time, registry: "RunRegistry | None" = None,
                 flow_run_state: Any = None, restore_pool: Any = None):
        """`node_pools`: injected, or built on first use from platform.gke when autoscale.nodes is set.
        `registry`: where the namespace/run id and the pool's original autoscaling are recorded locally too (a
        runner outside the cluster keeps its disk); the run's record in the cluster is `self.lease`.
        `flow_run_state`, `restore_pool`: what the start-of-run sweep asks Prefect and how it restores a dead
        run's pool (`sweep`; defaults: Prefect's API when loaded, the GKE API)."""
        self.config = config
        self.registry = registry
        self.run_id = run_id
        self.namespace = config.platform.namespace
        self.clock = clock
        self.kube = Kube(api_client or kube_client.api_client_for(config.platform), self.namespace, clock=clock)
        self.node_pools = node_pools
        self.name = mf.model_name(config, run_id)
        self.selector = {**mf.run_selector(run_id), mf.COMPONENT: mf.MODEL}
        self.notes: list[str] = []  # things the report should say (metrics absent, cluster-level HPA settings)
        self._spec: PodSpec | None = None
        self._replicas = 0
        self._seen_events: set[tuple[str, int]] = set()
        self._ooms: dict[str, tuple[int, int]] = {}  # pod -> (restarts seen, OOM kills counted)
        self._forward: PortForward | None = None
        self._next_pod = 0
        self._hpa = False
        self._nodes_on = False
        self._said: set[str] = set()
        # the run whose record covers this platform's objects (a canary's platform shares its run's record)
        self.lease_run = registry.record.run_id if registry is not None else run_id
        self.lease: RunLease | None = None
        self.flow_run_state = flow_run_state
        self.restore_pool = restore_pool
        self.swept: list[str] = []  # what the start-of-run sweep did

    # --- addresses ---------------------------------------------------------------------------------------

    @property
    def cluster_service_url(self) -> str:
        """The Service's DNS name: what in-cluster Locust workers send load to."""
        return f"http://{self.name}.{self.namespace}.svc:{self.config.platform.port}"

    @property
    def service_url(self) -> str:
        if self.config.platform.in_cluster:
            return self.cluster_service_url
        if self._forward is None:
            self._forward = PortForward(self._open_ready_pod, what=f"port-forward to {self.name}")
        return self._forward.url

    def _open_ready_pod(self) -> socket.socket:
        ready = self._ready_pods()
        if not ready:
            raise PlatformError(f"no ready pod of deployment {self.namespace}/{self.name} to forward to")
        self._next_pod += 1
        return self._open_pod_socket(ready[self._next_pod % len(ready)], self.config.platform.port)

    def _ready_pods(self) -> list[str]:
        """The ready pods to forward to, listed at most once a second (a list per connection flooded the API
        server when a generator re-opened its connections under load)."""
        now = time.monotonic()
        cached = getattr(self, "_ready_cache", None)
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        ready = [p["metadata"]["name"] for p in self.kube.pods(self.selector) if pod_ready(p)]
        self._ready_cache = (now, ready)
        return ready

    def _open_pod_socket(self, pod: str, port: int) -> socket.socket:
        return open_pod_socket(self.kube.api, self.namespace, pod, port)

    @property
    def replicas(self) -> int:
        return self._replicas

    # --- lifecycle ---------------------------------------------------------------------------------------

    def deploy(self, spec: PodSpec, replicas: int) -> None:
        if self.registry is not None:
            record = {"namespace": self.namespace, "run_id": self.run_id, "context": self.config.platform.context,
                      "in_cluster": self.config.platform.in_cluster}
            self.registry.update(lambda r: setattr(r, "kubernetes", record))
        self.hold_lease()
        self._spec, self._replicas = spec, replicas
        since = self.clock.time()
        self.kube.create(mf.model_deployment(self.config, self.run_id, spec, replicas), self.run_id)
        self.kube.create(mf.model_service(self.config, self.run_id), self.run_id)
        self._wait(replicas, "deploy", since)

    def hold_lease(self) -> None:
        """Write the run's record (its lease) before any object; when the run starts here, sweep the namespace
        for dead runs first (a sweep that fails is said, never fatal: this run's own objects are not at stake)."""
        if self.lease is not None:
            return
        self.lease, first = hold_lease(self.kube, self.config, self.lease_run, self.run_id, self.clock)
        if not first:
            return
        from nightcap.kube.sweep import sweep_namespace

        try:
            self.swept = sweep_namespace(self.kube, clock=self.clock,
                                         flow_run_state=self.flow_run_state or prefect_flow_run_state,
                                         restore_pool=self.restore_pool or _restore_recorded, spare=set(self.lease.runs),
                                         grace_s=max(600.0, self.config.platform.kubernetes.lease_s))
        except PlatformError as exc:
            self.swept = [f"the namespace sweep for dead runs failed: {exc}"]
        self.notes.extend(f"start-of-run sweep: {line}" for line in self.swept)

    def scale(self, replicas: int) -> None:
        since = self.clock.time()
        self.kube.patch_deployment(self.name, {"spec": {"replicas": replicas}}, MERGE_PATCH)
        self._replicas = replicas
        self._wait(replicas, f"scale to {replicas}", since)

    def set_resources(self, spec: PodSpec) -> None:
        """Replace the whole container (a JSON patch), so a removed limit is really removed."""
        container = mf.model_container(self.config, spec)
        body = [
            {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": mf.MODEL},
            {"op": "replace", "path": "/spec/template/spec/containers/0", "value": container},
        ]
        since = self.clock.time()
        self.kube.patch_deployment(self.name, body, JSON_PATCH)
        self._spec = spec
        self._wait(self._replicas, f"set resources (cpu={spec.cpu}, memory={spec.memory}, "
                                   f"concurrency={spec.concurrency})", since)

    def _wait(self, replicas: int, action: str, since: float) -> None:
        """Scheduling and pulls (platform.ready_timeout_s) plus the model's load (target.startup_timeout_s)."""
        self.kube.wait_rollout(self.name, replicas, kube_pods.rollout_timeout_s(self.config), action, self.selector,
                               self.poll_s, since=since)

    # --- observation -------------------------------------------------------------------------------------

    def _note(self, key: str, text: str, out: list[str]) -> None:
        if key not in self._said:
            self._said.add(key)
            self.notes.append(text)
            out.append(f"nightcap: {text}")

    def observe(self) -> Observation:
        obs = Observation(at=self.clock.time())
        pods = self.kube.pods(self.selector)
        usage: dict[str, PodUsage] = {}
        try:
            usage = self.kube.pod_metrics(self.selector)
        except KubeApiError as exc:
            obs.metrics_available = False
            if exc.status == 404:
                self._note("metrics", "metrics.k8s.io is not served (metrics-server absent): per-pod CPU and "
                                      "memory were not measured; install metrics-server", obs.events)
            else:
                self._note("metrics", f"pod metrics unavailable: {exc}", obs.events)
        for pod in pods:
            obs.replicas.append(self._sample(pod, usage.get(pod["metadata"]["name"]), obs.metrics_available))
        intervals = sorted({round(u.interval[1] - u.interval[0]) for u in usage.values() if u.interval})
        if obs.metrics_available:
            obs.cpu_source = "metrics-server" + (f", {'/'.join(str(i) for i in intervals)}s intervals"
                                                 if intervals else "")
        obs.pending = sum(1 for r in obs.replicas if r.phase == "Pending")
        try:
            obs.nodes = self._pool_nodes()
        except KubeApiError as exc:
            self._note("nodes", f"node counts unavailable: {exc}", obs.events)
        obs.events.extend(self._new_events())
        return obs

    def _pool_nodes(self) -> dict[str, int]:
        """Nodes of the model's pool only, when it is known: another pool's scale-up is not this run's."""
        counts = self.kube.node_counts()
        pool = kube_pods.model_pool(self.config)
        return {pool: counts.get(pool, 0)} if pool else counts

    def _sample(self, pod: dict[str, Any], usage: PodUsage | None, metrics: bool) -> ReplicaSample:
        name = pod["metadata"]["name"]
        st = pod.get("status") or {}
        statuses = st.get("containerStatuses") or []
        restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
        oom_now = any(((cs.get("lastState") or {}).get("terminated") or {}).get("reason") == "OOMKilled"
                      or ((cs.get("state") or {}).get("terminated") or {}).get("reason") == "OOMKilled"
                      for cs in statuses)
        if name not in self._ooms:
            ooms = 1 if oom_now else 0  # first sight: the last termination is all we can know
        else:
            seen, ooms = self._ooms[name]
            if oom_now and restarts > seen:
                ooms += restarts - seen
        self._ooms[name] = (restarts, ooms)
        ready = pod_ready(pod)
        phase = st.get("phase") or "Pending"
        if phase == "Running" and not ready:
            phase = "Starting"
        elif phase in ("Failed", "Succeeded", "Unknown"):
            phase = "Failed"
        return ReplicaSample(
            name=name, ready=ready, phase=phase,
            cpu_cores=usage.cpu_cores if usage and metrics else None,
            cpu_limit=_limit(pod, "cpu"),
            memory_bytes=usage.memory_bytes if usage and metrics else None,
            memory_limit=int(m) if (m := _limit(pod, "memory")) else None,
            restarts=restarts, oom_kills=ooms, cpu_window=usage.interval if usage and metrics else None,
        )

    def _new_events(self) -> list[str]:
        """Events of this run's objects not reported before (keyed by uid and count: no clock-skew games)."""
        try:
            events = self.kube.events()
        except KubeApiError as exc:
            out: list[str] = []
            self._note("events", f"events unavailable: {exc}", out)
            return out
        fresh = []
        for ev in events:
            involved = ev.get("involvedObject") or ev.get("regarding") or {}
            iname = str(involved.get("name", ""))
            if iname != self.name and not iname.startswith(self.name + "-"):
                continue
            key = (ev.get("metadata", {}).get("uid") or ev.get("metadata", {}).get("name", ""),
                   int(ev.get("count") or 1))
            if key in self._seen_events:
                continue
            self._seen_events.add(key)
            when = timestamp(ev.get("lastTimestamp") or ev.get("eventTime")
                              or ev.get("metadata", {}).get("creationTimestamp")) or 0.0
            text = f"{ev.get('type', 'Normal')} {involved.get('kind', '')}/{iname} {ev.get('reason', '')}: " \
                   f"{(ev.get('message') or '').strip()}"
            if key[1] > 1:
                text += f" (x{key[1]})"
            fresh.append((when, text))
        return [text for _, text in sorted(fresh, key=lambda x: x[0])]

    # --- autoscaling -------------------------------------------------------------------------------------

    def enable_autoscaling(self, hpa: HpaSpec) -> None:
        if self._spec is not None and self._spec.cpu is None:
            raise PlatformError("an HPA on CPU utilization needs a CPU request: set platform.cpu (or the tuned cpu)")
        cluster_level = []
        if hpa.sync_period_s != 15.0:
            cluster_level.append(f"sync period {hpa.sync_period_s:g}s")
        if hpa.tolerance != 0.1:
            cluster_level.append(f"tolerance {hpa.tolerance:g}")
        if hpa.readiness_delay_s != 30.0:
            cluster_level.append(f"readiness delay {hpa.readiness_delay_s:g}s")
        if cluster_level:
            self.notes.append("HPA " + ", ".join(cluster_level) + " are kube-controller-manager settings and were "
                              "not applied; the cluster's own values were in effect")
        self.kube.create(mf.hpa(self.config, self.run_id, hpa), self.run_id)
        self._hpa = True
        nodes = self.config.autoscale.nodes
        if nodes and not self._nodes_on:
            self.enable_node_autoscaling(int(nodes.get("min", 1)), int(nodes.get("max", 3)))

    def autoscaling_status(self) -> AutoscaleStatus:
        h = self.kube.autoscaling
        data = self.kube.call("get", "horizontalpodautoscalers.autoscaling", self.name,
                              h.read_namespaced_horizontal_pod_autoscaler, self.name, self.namespace)
        st = data.get("status") or {}
        dep = self.kube.get_deployment(self.name)
        pods = self.kube.pods(self.selector)
        try:
            nodes: int | None = sum(self._pool_nodes().values())
        except KubeApiError:
            nodes = None
        current = int(st.get("currentReplicas") or 0)
        self._replicas = current or self._replicas
        return AutoscaleStatus(
            current_replicas=current,
            desired_replicas=int(st.get("desiredReplicas") or 0),
            ready_replicas=int((dep.get("status") or {}).get("readyReplicas") or 0),
            pending=sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Pending"),
            nodes=nodes,
            last_scale_time=timestamp(st.get("lastScaleTime")),
            conditions=[f"{c.get('type')}={c.get('status')} ({c.get('reason', '')}): {c.get('message', '')}"
                        for c in st.get("conditions") or []],
        )

    def disable_autoscaling(self) -> None:
        """Delete the HPA; the node pool stays as the stage left it until `restore_node_autoscaling`, which runs
        after the Deployment is scaled back (a resize must not remove nodes that still run the stage's pods)."""
        h = self.kube.autoscaling
        try:
            self.kube.call("delete", "horizontalpodautoscalers.autoscaling", self.name,
                           h.delete_namespaced_horizontal_pod_autoscaler, self.name, self.namespace)
        except KubeApiError as exc:
            if exc.status != 404:
                raise PlatformError(str(exc)) from None
        finally:
            self._hpa = False
        try:
            replicas = (self.kube.get_deployment(self.name).get("spec") or {}).get("replicas")
            self._replicas = int(replicas if replicas is not None else self._replicas)
        except KubeApiError:
            pass

    def teardown(self) -> None:
        """Delete every object of this run by label (and nothing else), then restore the node pool, then delete
        the run's record in the cluster (kept, marked released, while a pool is left to restore). Idempotent."""
        errors = []
        if self._forward is not None:
            self._forward.close()
            self._forward = None
        try:
            deleted = self.kube.delete_labelled(mf.run_selector(self.run_id), records=False)
            deleted += self.kube.delete_secret(mf.locust_name(self.run_id, "key"), mf.run_selector(self.run_id))
            log.info("teardown of run %s deleted %s", self.run_id, deleted)
        except PlatformError as exc:
            errors.append(str(exc))
        try:
            self.restore_node_autoscaling()
        except PlatformError as exc:
            errors.append(str(exc))
        lease, self.lease = self.lease, None
        if lease is not None:
            try:
                lease.release()
            except PlatformError as exc:
                errors.append(str(exc))
        if errors:
            raise PlatformError(f"teardown of run {self.run_id} in namespace {self.namespace} was incomplete: "
                                + " | ".join(errors))


def _restore_recorded(record: dict[str, Any]) -> None:
    from nightcap.kube.gke import restore_recorded

    restore_recorded(record)


def _limit(pod: dict[str, Any], key: str) -> float | None:
    total = 0.0
    for c in (pod.get("spec") or {}).get("containers") or []:
        value = ((c.get("resources") or {}).get("limits") or {}).get(key)
        if value is None:
            return None
        try:
            total += parse_cpu(value) if key == "cpu" else parse_memory(value)
        except QuantityError:
            return None
    return total or None
