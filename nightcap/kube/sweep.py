"""Sweep one namespace for what dead runs left: their objects by label, and their node pools' original settings.

Called when a run starts (its platform's first deploy) and by `nightcap cleanup --namespace NS`. It needs no
local record: a run's lease in the cluster (`lease`) says whether its runner lives. A run is dead when
- its lease was not renewed for `leaseDurationSeconds` (SIGKILL, eviction, a lost node), or was released with
  a pool left to restore, or
- its Prefect flow run is in a final state (Crashed, Cancelled, Failed, Completed), when the caller can ask, or
- its objects carry no lease at all and are older than `grace_s` (a runner from before leases).
Objects are listed before the leases: a run writes its lease before any object, so a run starting meanwhile
is never taken for dead. For each dead run its objects are deleted first (so its pods leave the nodes), then
its node pools are restored from the record, and the record is deleted only when every pool was restored.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

from nightcap.kube import manifests as mf
from nightcap.platforms.base import PlatformError
from nightcap.kube.client import Kube, KubeApiError, has_labels
from nightcap.kube.lease import rfc3339
from nightcap.kube.metrics import timestamp

log = logging.getLogger(__name__)

MANAGED = {mf.MANAGED_BY: mf.MANAGER}
FlowRunState = Callable[[str], "str | None"]  # flow run id -> its final state's name, None while running/unknown
RestorePool = Callable[[dict[str, Any]], None]


def _listed(kube: Kube) -> dict[str, list[dict[str, Any]]]:
    """Run label -> the nightcap objects carrying it (every kind teardown deletes)."""
    c, a, h, n = kube.core, kube.apps, kube.autoscaling, kube.networking
    runs: dict[str, list[dict[str, Any]]] = {}
    for resource, list_fn in (("horizontalpodautoscalers.autoscaling", h.list_namespaced_horizontal_pod_autoscaler),
                              ("deployments.apps", a.list_namespaced_deployment),
                              ("services", c.list_namespaced_service),
                              ("configmaps", c.list_namespaced_config_map),
                              ("networkpolicies.networking.k8s.io", n.list_namespaced_network_policy)):
        items = kube.call("list", resource, None, list_fn, kube.namespace,
                          label_selector=mf.selector_string(MANAGED)).get("items", [])
        for item in items:
            run = ((item.get("metadata") or {}).get("labels") or {}).get(mf.RUN_ID)
            if has_labels(item, MANAGED) and run:
                runs.setdefault(run, []).append(item)
    return runs


def _leases(kube: Kube) -> dict[str, dict[str, Any]]:
    """Record name -> record ConfigMap, listed after the objects."""
    selector = {**MANAGED, mf.COMPONENT: mf.RUN_RECORD}
    items = kube.call("list", "configmaps", None, kube.core.list_namespaced_config_map, kube.namespace,
                      label_selector=mf.selector_string(selector)).get("items", [])
    return {i["metadata"]["name"]: i for i in items if has_labels(i, selector)}


def lease_state(data: dict[str, str], now: float, flow_run_state: FlowRunState | None) -> tuple[bool, str]:
    """(alive, why not) of one record's lease."""
    renewed = timestamp(data.get("renewTime"))
    try:
        duration = float(data.get("leaseDurationSeconds") or 0)
    except ValueError:
        duration = 0.0
    if data.get("released") == "true":
        return False, "its runner ended with a node pool left to restore"
    if renewed is None or now > renewed + duration:
        ago = f" {now - renewed - duration:.0f}s ago" if renewed is not None else ""
        return False, f"its lease (renewed {data.get('renewTime') or 'never'}, {duration:.0f}s) expired{ago}"
    flow_run = data.get("flowRunId")
    if flow_run and flow_run_state is not None:
        state = flow_run_state(flow_run)
        if state:
            return False, f"its Prefect flow run {flow_run} is {state}"
    return True, ""


def _runs_of(record: dict[str, Any]) -> set[str]:
    own = ((record.get("metadata") or {}).get("labels") or {}).get(mf.RUN_ID)
    try:
        covered = set(json.loads((record.get("data") or {}).get("runs") or "[]"))
    except ValueError:
        covered = set()
    return covered | ({own} if own else set())


def _created(obj: dict[str, Any]) -> float | None:
    return timestamp((obj.get("metadata") or {}).get("creationTimestamp"))


def dead_runs(kube: Kube, now: float, flow_run_state: FlowRunState | None = None, spare: set[str] | None = None,
              grace_s: float = 600.0) -> tuple[dict[str, str], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(dead run label -> why, dead records, objects by run label), judged as the module docstring says."""
    objects = _listed(kube)
    records = _leases(kube)
    spare = spare or set()
    alive: set[str] = set(spare)
    dead: dict[str, str] = {}
    dead_records = []
    for record in records.values():
        ok, why = lease_state(record.get("data") or {}, now, flow_run_state)
        runs = _runs_of(record)
        if ok or runs & spare:
            alive |= runs
        else:
            dead_records.append(record)
            for run in runs:
                dead.setdefault(run, why)
    for run, items in objects.items():
        if run in alive or run in dead:
            continue
        ages = [now - t for t in (_created(i) for i in items) if t is not None]
        if all(age > grace_s for age in ages):
            dead[run] = "no lease covers its objects (a runner from before leases, or its record was deleted)"
    for run in alive:
        dead.pop(run, None)
    return dead, [r for r in dead_records if not _runs_of(r) & alive], objects


def sweep_namespace(kube: Kube, *, clock: Any = time, flow_run_state: FlowRunState | None = None,
                    restore_pool: RestorePool | None = None, spare: set[str] | None = None,
                    grace_s: float = 600.0) -> list[str]:
    """Remove what dead runs left in `kube.namespace`; one line per run (what was done, or what could not be)."""
    dead, records, objects = dead_runs(kube, clock.time(), flow_run_state, spare, grace_s)
    lines = []
    for run, why in sorted(dead.items()):
        selector = {**MANAGED, mf.RUN_ID: run}
        try:
            deleted = kube.delete_labelled(selector, records=False)
            deleted += kube.delete_secret(mf.locust_name(run, "key"), selector)  # the label is the run id
            lines.append(f"run {run} in namespace {kube.namespace} is dead ({why}): deleted "
                         f"{', '.join(deleted) or 'nothing more'}")
        except PlatformError as exc:
            lines.append(f"run {run} in namespace {kube.namespace} is dead ({why}): could not delete its objects: "
                         f"{exc}")
            objects.pop(run, None)
    for record in records:
        lines += _settle_record(kube, record, restore_pool, clock)
    for line in lines:
        log.warning("%s", line)
    return lines


def _settle_record(kube: Kube, record: dict[str, Any], restore_pool: RestorePool | None, clock: Any) -> list[str]:
    """Restore the record's pools; delete it when none is left, else keep the rest marked released."""
    name = record["metadata"]["name"]
    data = dict(record.get("data") or {})
    try:
        pools = json.loads(data.get("nodePools") or "[]")
    except ValueError:
        pools = []
    lines, left = [], []
    for pool in pools:
        try:
            if restore_pool is None:
                raise PlatformError("no GKE client here (Google credentials)")
            restore_pool(pool)
            lines.append(f"restored node pool {pool.get('name')} of dead run record {kube.namespace}/{name} to its "
                         "recorded settings")
        except Exception as exc:
            left.append(pool)
            lines.append(f"could not restore node pool {pool.get('name')} from {kube.namespace}/{name}: {exc}; "
                         "the record is kept for the next sweep")
    try:
        if left:
            data.update(nodePools=json.dumps(left), released="true", renewTime=rfc3339(clock.time()))
            kube.call("patch", "configmaps", name, kube.core.patch_namespaced_config_map, name, kube.namespace,
                      {"data": data}, _content_type="application/merge-patch+json")
        else:
            kube.call("delete", "configmaps", name, kube.core.delete_namespaced_config_map, name, kube.namespace)
    except KubeApiError as exc:
        if exc.status != 404:
            lines.append(f"could not update the record {kube.namespace}/{name}: {exc}")
    return lines


def cleanup_run(api_client: Any, namespace: str, run_id: str, clock: Any = time) -> list[str]:
    """Delete the objects of one (dead) run by its labels, its record included; return `resource/name` of each.
    Used with a local run record, which holds the node pools itself."""
    kube = Kube(api_client, namespace, clock=clock)
    return (kube.delete_labelled(mf.run_selector(run_id))
            + kube.delete_secret(mf.locust_name(run_id, "key"), mf.run_selector(run_id)))
