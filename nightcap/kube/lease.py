"""The run's record in the cluster: a lease its runner renews, and the node pools' original settings.

Local run records (`nightcap.processes.registry`) live on the runner's disk, and a Prefect Kubernetes job's disk dies
with its pod. So a run also keeps a ConfigMap `nc-run-<run>` in its namespace, labelled like every object of the
run, written before any other object and deleted after everything else:
- `holder`, `flowRunId`: the process and the Prefect flow run that hold it;
- `renewTime`, `leaseDurationSeconds`: renewed by a thread every third of `platform.kubernetes.lease_s`; a
  record not renewed for that long belongs to a runner that died (SIGKILL, eviction, a lost node);
- `runs`: the run ids whose objects it covers (the run and its canary);
- `nodePools`: each changed pool's original settings (`GkeNodePools.record()`), written before the pool is
  changed and removed once it is restored;
- `released`: "true" when the runner ended but could not restore a pool: the next sweep retries at once.
`sweep` reads these records; one record per run is shared by everything in this process that creates
objects for the run (the model platform, the canary's, the Locust cluster), counted by `hold_lease`.
"""

from __future__ import annotations

import atexit
import json
import logging
import weakref
import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

from nightcap.config import Config
from nightcap.kube import manifests as mf
from nightcap.platforms.base import PlatformError
from nightcap.kube.client import MERGE_PATCH, Kube, KubeApiError

log = logging.getLogger(__name__)

_HELD: dict[tuple[str, str, str], "RunLease"] = {}
_HELD_LOCK = threading.Lock()
_RENEWING: "weakref.WeakSet[RunLease]" = weakref.WeakSet()


def stop_all_renewals(wait_s: float = 2.0) -> None:
    """Stop every lease's renewal thread in this process (at exit: a daemon thread still renewing, or logging its
    retries, while the interpreter shuts down aborts it). A run that ends normally has stopped its own."""
    leases = list(_RENEWING)
    for lease in leases:
        lease.stop_renewing()
    deadline = time.monotonic() + wait_s
    for lease in leases:
        if lease._thread is not None and lease._thread is not threading.current_thread():
            lease._thread.join(max(0.0, deadline - time.monotonic()))


atexit.register(stop_all_renewals)


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def current_flow_run_id() -> str | None:
    """The Prefect flow run this process runs, if any: the run context when Prefect is loaded, else the variable
    Prefect's workers set in a job's environment."""
    context = sys.modules.get("prefect.context")
    if context is not None:
        try:
            run = context.FlowRunContext.get()
            if run is not None and run.flow_run is not None:
                return str(run.flow_run.id)
        except Exception:  # no context in this thread
            pass
    return os.environ.get("PREFECT__FLOW_RUN_ID") or None


class RunLease:
    """One run's record in the cluster; thread-safe, written with merge patches."""

    def __init__(self, kube: Kube, config: Config, run_id: str, clock: Any = time, holder: str | None = None,
                 flow_run_id: str | None = None):
        self.kube = kube
        self.config = config
        self.run_id = run_id
        self.clock = clock
        self.name = mf.run_record(config, run_id, {})["metadata"]["name"]
        self.duration_s = config.platform.kubernetes.lease_s
        self.holders = 0
        self.runs: list[str] = []
        self.pools: list[dict[str, Any]] = []
        self.released = False
        self._holder = holder or f"{socket.gethostname()}/{os.getpid()}"
        self._flow_run = flow_run_id if flow_run_id is not None else current_flow_run_id()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._created = False
        # renewals run beside the flow: their retries wait in real time, never on a test's clock
        self._renew_kube = Kube(kube.api, kube.namespace, attempts=2, request_timeout_s=kube.request_timeout_s)

    def data(self) -> dict[str, str]:
        return {"holder": self._holder, "flowRunId": self._flow_run or "", "renewTime": rfc3339(self.clock.time()),
                "leaseDurationSeconds": str(int(self.duration_s)), "runs": json.dumps(self.runs),
                "nodePools": json.dumps(self.pools), "released": "true" if self.released else "false"}

    def _write(self, kube: Kube | None = None) -> None:
        with self._lock:
            if not self._created:
                (kube or self.kube).create(mf.run_record(self.config, self.run_id, self.data()), self.run_id)
                self._created = True
                return
            (kube or self.kube).call("patch", "configmaps", self.name, self.kube.core.patch_namespaced_config_map,
                                     self.name, self.kube.namespace, {"data": self.data()},
                                     _content_type=MERGE_PATCH)

    def cover(self, run_id: str) -> None:
        """Cover `run_id`'s objects (written before any of them is created), and keep the lease renewed."""
        label = mf.run_label(run_id)
        if label not in self.runs or not self._created:
            if label not in self.runs:
                self.runs.append(label)
            self._write()
        if self._thread is None:
            self._thread = threading.Thread(target=self._renew, name=f"nightcap lease {self.name}", daemon=True)
            _RENEWING.add(self)
            self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.duration_s / 3):
            try:
                self._write(self._renew_kube)
            except PlatformError as exc:  # the next renewal may succeed; a lapse lets a sweep take the run for dead
                log.warning("lease %s/%s not renewed: %s", self.kube.namespace, self.name, exc)

    def record_pool(self, record: dict[str, Any]) -> None:
        """Write a pool's original settings before it is changed; raises when they could not be written, so
        nothing is changed that a later run could not put back."""
        self.pools = [p for p in self.pools if p.get("name") != record.get("name")] + [record]
        self._write()

    def forget_pool(self, name: str) -> None:
        self.pools = [p for p in self.pools if p.get("name") != name]
        self._write()

    def stop_renewing(self) -> None:
        self._stop.set()

    def release(self) -> None:
        """Drop one holder; the last deletes the record, or marks it released when a pool is still to restore."""
        with _HELD_LOCK:
            self.holders -= 1
            if self.holders > 0:
                return
            _HELD.pop(self.key, None)
        self.stop_renewing()
        if self.pools:
            self.released = True
            self._write()
            raise PlatformError(f"the node pool(s) {', '.join(p.get('name', '?') for p in self.pools)} were not "
                                f"restored; their original settings stay in configmap {self.kube.namespace}/"
                                f"{self.name}: `nightcap cleanup --namespace {self.kube.namespace}` restores them")
        try:
            self.kube.call("delete", "configmaps", self.name, self.kube.core.delete_namespaced_config_map, self.name,
                           self.kube.namespace)
        except KubeApiError as exc:
            if exc.status != 404:
                raise

    @property
    def key(self) -> tuple[str, str, str]:
        return lease_key(self.kube, self.run_id)


def lease_key(kube: Kube, run_id: str) -> tuple[str, str, str]:
    return (str(kube.api.configuration.host), kube.namespace, run_id)


def hold_lease(kube: Kube, config: Config, run_id: str, covers: str, clock: Any = time) -> tuple[RunLease, bool]:
    """The record of run `run_id` (created on first use in this process), covering `covers`; True when it was
    created now, i.e. the run starts here (the caller then sweeps the namespace)."""
    key = lease_key(kube, run_id)
    with _HELD_LOCK:
        lease = _HELD.get(key)
        first = lease is None
        if lease is None:
            lease = _HELD[key] = RunLease(kube, config, run_id, clock)
        lease.holders += 1
    try:
        lease.cover(covers)
    except BaseException:
        with _HELD_LOCK:
            lease.holders -= 1
            if lease.holders <= 0:
                _HELD.pop(key, None)
                lease.stop_renewing()
        raise
    return lease, first


def prefect_flow_run_state(flow_run_id: str) -> str | None:
    """The final state of a Prefect flow run (CRASHED, CANCELLED, FAILED, COMPLETED); None while it runs, or when
    this process has no Prefect API to ask, or that API does not know the run (another server's run)."""
    if "prefect" not in sys.modules:
        return None
    try:
        from uuid import UUID

        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            return None
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
    except Exception:
        return None
    return state.type.value if state is not None and state.is_final() else None
