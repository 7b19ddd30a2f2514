"""Kubernetes manifests nightcap creates, as plain dicts (pure: no API calls, no I/O).

Every object carries `app.kubernetes.io/managed-by: nightcap` and `nightcap.io/run-id: <run>`, so teardown
and the namespace sweep (`sweep`) find exactly what a run created, by label, and nothing else. Names are
short, deterministic per (target, run) and valid DNS-1035 labels (Services need that). What every pod carries
(security, placement, probes) is `pods`; the Locust objects are `manifests_locust`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from nightcap.config import Config
from nightcap.kube import pods
from nightcap.platforms.base import HpaSpec, PodSpec
from nightcap.quantities import format_cpu, format_memory

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "nightcap"
RUN_ID = "nightcap.io/run-id"
NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
PART_OF = "app.kubernetes.io/part-of"
NODE_POOL_LABEL = pods.NODE_POOL_LABEL
RUNNER_LABEL = "nightcap.io/runner"  # on the pod the flow runs in, when it runs in the cluster

MODEL = "model"
LOCUST_MASTER = "locust-master"
LOCUST_WORKER = "locust-worker"
LOCUST_FILES = "locust-files"
RUN_RECORD = "run-record"  # the run's lease and node-pool record in the cluster (`lease`)

LOCUST_WEB_PORT = 8089
LOCUST_MASTER_PORT = 5557
LOCUST_MOUNT = "/mnt/nightcap"

Manifest = dict[str, Any]


def run_label(run_id: str) -> str:
    """The run id as a valid label value (63 chars, alphanumeric ends), stable for the same run id."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", run_id).strip("-_.")
    if len(value) > 63 or not value:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
        value = (value[:52].strip("-_.") + "-" + digest).strip("-")
    return value


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return slug[:limit].strip("-") or "x"


def short_run(run_id: str) -> str:
    """A short, name-safe run suffix: the run id itself when short, else a prefix plus a hash."""
    slug = _slug(run_id, 63)
    if len(slug) <= 10:
        return slug
    return f"{slug[:4].strip('-')}{hashlib.sha256(run_id.encode()).hexdigest()[:6]}"


def model_name(config: Config, run_id: str) -> str:
    return f"nc-{_slug(config.target.name, 36)}-{short_run(run_id)}"


def locust_name(run_id: str, part: str) -> str:
    return f"nc-locust-{short_run(run_id)}-{part}"


def run_selector(run_id: str) -> dict[str, str]:
    """Labels every object of one run carries: the only thing teardown selects on."""
    return {MANAGED_BY: MANAGER, RUN_ID: run_label(run_id)}


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def labels(config: Config, run_id: str, component: str) -> dict[str, str]:
    name = _slug(config.target.name, 63) if component == MODEL else "locust"
    return {**run_selector(run_id), NAME: name, COMPONENT: component, PART_OF: "nightcap"}


def pod_selector(run_id: str, component: str) -> dict[str, str]:
    """The immutable Deployment selector: one run, one component."""
    return {RUN_ID: run_label(run_id), COMPONENT: component}


def fill(text: str, port: int, concurrency: int) -> str:
    """Fill `{port}` and `{concurrency}` without `str.format`, so other braces in argv survive."""
    return text.replace("{port}", str(port)).replace("{concurrency}", str(concurrency))


def object_meta(name: str, namespace: str, labels_: dict[str, str], **extra: Any) -> Manifest:
    meta: Manifest = {"name": name, "namespace": namespace, "labels": dict(labels_)}
    meta.update(extra)
    return meta


def resources(cpu: float | None, memory: int | None) -> Manifest:
    """Requests equal to limits: the pod size measured is the pod size guaranteed (Guaranteed QoS)."""
    amounts: dict[str, str] = {}
    if cpu is not None:
        amounts["cpu"] = format_cpu(cpu)
    if memory is not None:
        amounts["memory"] = format_memory(memory)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def model_argv(config: Config) -> tuple[list[str] | None, dict[str, str]]:
    """The container command for the target kind (None keeps the image's entrypoint) and extra env."""
    t = config.target
    if t.command:
        return list(t.command), {}
    if t.kind == "reference":
        argv = ["python", "-m", "nightcap.targets.reference_server", "--host", "0.0.0.0", "--port", "{port}",
                "--slots", "{concurrency}", "--service-ms", str(t.service_ms), "--queue", str(t.queue),
                "--cpu-ms", str(t.cpu_ms)]
        if t.coherency_ms:
            argv += ["--coherency-ms", str(t.coherency_ms)]
        if t.memory_mb:
            argv += ["--memory-mb", str(t.memory_mb)]
        if t.stall_s:
            argv += ["--stall-every-s", str(t.stall_every_s), "--stall-s", str(t.stall_s)]
        if t.work_kb:
            argv += ["--work-kb", str(t.work_kb)]
        return argv, {}
    if t.kind == "mlflow":
        # An image from `mlflow models build-docker` serves on 8080 and reads its worker count from env.
        return None, {"MLFLOW_MODELS_WORKERS": "{concurrency}"}
    return None, {}


def model_container(config: Config, spec: PodSpec) -> Manifest:
    port = config.platform.port
    argv, extra_env = model_argv(config)
    env = {"NIGHTCAP_PORT": "{port}", "NIGHTCAP_CONCURRENCY": "{concurrency}", **extra_env}
    container: Manifest = {
        "name": MODEL,
        "image": config.target.image,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [{"name": k, "value": fill(v, port, spec.concurrency)} for k, v in env.items()],
        **pods.model_probes(config),
        "resources": resources(spec.cpu, spec.memory),
        "securityContext": pods.container_security(),
    }
    if argv is not None:
        container["command"] = [fill(a, port, spec.concurrency) for a in argv]
    return container


def model_deployment(config: Config, run_id: str, spec: PodSpec, replicas: int) -> Manifest:
    name = model_name(config, run_id)
    lab = labels(config, run_id, MODEL)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(name, config.platform.namespace, lab, annotations={"nightcap.io/target": config.target.name}),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            "progressDeadlineSeconds": max(int(pods.rollout_timeout_s(config)), 30),
            "selector": {"matchLabels": pod_selector(run_id, MODEL)},
            # A new pod size replaces the old pods rather than surging beside them: between tuning candidates
            # nothing is measured, and a surge pod needs room a full node pool does not have.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": lab},
                "spec": {
                    **pods.common_pod_spec(config),
                    "terminationGracePeriodSeconds": 10,
                    "containers": [model_container(config, spec)],
                    **pods.model_placement(config),  # on the pool whose size and autoscaling the run changes
                },
            },
        },
    }


def model_service(config: Config, run_id: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(model_name(config, run_id), config.platform.namespace, labels(config, run_id, MODEL)),
        "spec": {
            "type": "ClusterIP",
            "selector": pod_selector(run_id, MODEL),
            "ports": [{"name": "http", "port": config.platform.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def hpa(config: Config, run_id: str, spec: HpaSpec) -> Manifest:
    """autoscaling/v2 on CPU utilization (relative to the CPU request, which equals the limit here).

    sync period, tolerance and readiness delay are kube-controller-manager flags, not HPA fields: they are
    not set here (the platform says so in its notes).
    """
    name = model_name(config, run_id)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(name, config.platform.namespace, labels(config, run_id, MODEL)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [{
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                       "averageUtilization": max(1, round(spec.target_cpu_pct))}},
            }],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15},
                                 {"type": "Pods", "value": 4, "periodSeconds": 15}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": min(int(spec.stabilization_s), 3600),
                    "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
                },
            },
        },
    }


def run_record(config: Config, run_id: str, data: dict[str, str]) -> Manifest:
    """The run's record in the cluster (`lease`): its lease, and the node pools' original settings."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(f"nc-run-{short_run(run_id)}", config.platform.namespace,
                          {**run_selector(run_id), NAME: "nightcap", COMPONENT: RUN_RECORD, PART_OF: "nightcap"}),
        "data": dict(data),
    }
