"""Kubernetes manifests nightcap creates, as plain dicts (pure: no API calls, no I/O).

Every object carries `app.kubernetes.io/managed-by: nightcap` and `nightcap.io/run-id: <run>`, so teardown
and `cleanup_dead_runs` can find exactly what a run created, by label, and nothing else. Names are short,
deterministic per (target, run) and valid DNS-1035 labels (Services need that).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from nightcap.config import Config
from nightcap.platforms.base import HpaSpec, PodSpec
from nightcap.quantities import format_cpu, format_memory

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "nightcap"
RUN_ID = "nightcap.io/run-id"
NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
PART_OF = "app.kubernetes.io/part-of"
NODE_POOL_LABEL = "cloud.google.com/gke-nodepool"
RUNNER_LABEL = "nightcap.io/runner"  # on the pod the flow runs in, when it runs in the cluster

MODEL = "model"
LOCUST_MASTER = "locust-master"
LOCUST_WORKER = "locust-worker"
LOCUST_FILES = "locust-files"

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


def _meta(name: str, namespace: str, labels_: dict[str, str], **extra: Any) -> Manifest:
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
        "readinessProbe": {
            "httpGet": {"path": config.target.ready_path, "port": "http"},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
            "successThreshold": 1,
        },
        "resources": resources(spec.cpu, spec.memory),
        "securityContext": {"allowPrivilegeEscalation": False},
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
        "metadata": _meta(name, config.platform.namespace, lab, annotations={"nightcap.io/target": config.target.name}),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            "progressDeadlineSeconds": max(int(config.platform.ready_timeout_s), 30),
            "selector": {"matchLabels": pod_selector(run_id, MODEL)},
            # A new pod size replaces the old pods rather than surging beside them: between tuning candidates
            # nothing is measured, and a surge pod needs room a full node pool does not have.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": lab},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 10,
                    "containers": [model_container(config, spec)],
                    # on the node pool whose size and autoscaling the run reads and changes
                    **({"nodeSelector": {NODE_POOL_LABEL: config.platform.gke.node_pool}}
                       if config.platform.gke else {}),
                },
            },
        },
    }


def model_service(config: Config, run_id: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(model_name(config, run_id), config.platform.namespace, labels(config, run_id, MODEL)),
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
        "metadata": _meta(name, config.platform.namespace, labels(config, run_id, MODEL)),
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


def locust_configmap(config: Config, run_id: str, files: dict[str, str]) -> Manifest:
    """The locustfile (and payloads) mounted into master and workers."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(locust_name(run_id, "files"), config.platform.namespace,
                          labels(config, run_id, LOCUST_FILES)),
        "data": dict(files),
    }


def _locust_env(env: dict[str, str], secret_env: dict[str, tuple[str, str]] | None) -> list[Manifest]:
    out: list[Manifest] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    for var, (secret, key) in sorted((secret_env or {}).items()):
        out.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return out


def _locust_pod(config: Config, run_id: str, component: str, args: list[str], env: dict[str, str],
                secret_env: dict[str, tuple[str, str]] | None, ports: list[Manifest]) -> Manifest:
    container: Manifest = {
        "name": "locust",
        "image": config.load.locust_image,
        "args": ["-f", f"{LOCUST_MOUNT}/locustfile.py", *args],
        "env": _locust_env(env, secret_env),
        "volumeMounts": [{"name": "files", "mountPath": LOCUST_MOUNT, "readOnly": True}],
        # One gevent process uses at most one core: request it, so "100% of a core" means generator-bound.
        "resources": {"requests": {"cpu": "1", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if ports:
        container["ports"] = ports
    return {
        "metadata": {"labels": labels(config, run_id, component)},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
            "volumes": [{"name": "files", "configMap": {"name": locust_name(run_id, "files")}}],
        },
    }


def locust_master_deployment(config: Config, run_id: str, env: dict[str, str]) -> Manifest:
    """The master sends no request, so it never gets the API key (only the workers' pods reference it).

    Its web API can start a swarm against any host. Outside the cluster the flow reaches it through a
    port-forward, which arrives on the pod's loopback, so it listens on 127.0.0.1 only; in the cluster it
    must listen on the pod's address, and `locust_network_policy` admits only the runner pod to it.
    """
    web_host = "0.0.0.0" if config.platform.in_cluster else "127.0.0.1"
    args = ["--master", "--class-picker", "--web-host", web_host, "--web-port", str(LOCUST_WEB_PORT),
            "--master-bind-port", str(LOCUST_MASTER_PORT), "--loglevel", "WARNING"]
    ports = [{"name": "web", "containerPort": LOCUST_WEB_PORT, "protocol": "TCP"},
             {"name": "master", "containerPort": LOCUST_MASTER_PORT, "protocol": "TCP"}]
    template = _locust_pod(config, run_id, LOCUST_MASTER, args, env, None, ports)
    # ready when workers can connect (the web API is polled by the flow itself: it waits for the workers)
    template["spec"]["containers"][0]["readinessProbe"] = {
        "tcpSocket": {"port": "master"}, "periodSeconds": 2, "failureThreshold": 3}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(locust_name(run_id, "master"), config.platform.namespace,
                          labels(config, run_id, LOCUST_MASTER)),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": pod_selector(run_id, LOCUST_MASTER)},
            "strategy": {"type": "Recreate"},
            "template": template,
        },
    }


def locust_master_service(config: Config, run_id: str) -> Manifest:
    """The workers' way to the master; the web port only for a runner in the cluster (else a port-forward)."""
    ports = [{"name": "master", "port": LOCUST_MASTER_PORT, "targetPort": "master", "protocol": "TCP"}]
    if config.platform.in_cluster:
        ports.insert(0, {"name": "web", "port": LOCUST_WEB_PORT, "targetPort": "web", "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(locust_name(run_id, "master"), config.platform.namespace,
                          labels(config, run_id, LOCUST_MASTER)),
        "spec": {
            "type": "ClusterIP",
            "selector": pod_selector(run_id, LOCUST_MASTER),
            "ports": ports,
        },
    }


def locust_network_policy(config: Config, run_id: str) -> Manifest:
    """Who may reach the Locust master: this run's workers on the master port, and (in the cluster) the pod
    labelled `nightcap.io/runner: "true"` on the web port. Every other pod in the cluster is refused.

    A port-forward arrives on the pod's loopback, which network policies do not filter. Enforcement needs a
    network-policy provider (GKE: Dataplane V2, or network policy enforcement turned on).
    """
    ingress: list[Manifest] = [{
        "from": [{"podSelector": {"matchLabels": pod_selector(run_id, LOCUST_WORKER)}}],
        "ports": [{"protocol": "TCP", "port": LOCUST_MASTER_PORT}],
    }]
    if config.platform.in_cluster:
        ingress.append({"from": [{"podSelector": {"matchLabels": {RUNNER_LABEL: "true"}}}],
                        "ports": [{"protocol": "TCP", "port": LOCUST_WEB_PORT}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(locust_name(run_id, "master"), config.platform.namespace,
                          labels(config, run_id, LOCUST_MASTER)),
        "spec": {
            "podSelector": {"matchLabels": pod_selector(run_id, LOCUST_MASTER)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def locust_worker_deployment(config: Config, run_id: str, workers: int, env: dict[str, str],
                             secret_env: dict[str, tuple[str, str]] | None = None) -> Manifest:
    args = ["--worker", "--master-host", locust_name(run_id, "master"), "--master-port", str(LOCUST_MASTER_PORT),
            "--loglevel", "WARNING"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(locust_name(run_id, "worker"), config.platform.namespace,
                          labels(config, run_id, LOCUST_WORKER)),
        "spec": {
            "replicas": workers,
            "selector": {"matchLabels": pod_selector(run_id, LOCUST_WORKER)},
            "template": _locust_pod(config, run_id, LOCUST_WORKER, args, env, secret_env, []),
        },
    }


def api_key_secret(config: Config, run_id: str, key: str, owner: Manifest | None = None) -> Manifest:
    """The target's API key for the Locust workers, owned by the master Deployment so GC removes it with it."""
    meta = _meta(locust_name(run_id, "key"), config.platform.namespace, labels(config, run_id, LOCUST_WORKER))
    if owner is not None:
        meta["ownerReferences"] = [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "blockOwnerDeletion": False,
        }]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "stringData": {"api-key": key}}
