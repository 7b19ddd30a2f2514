"""The in-cluster Locust objects: files ConfigMap, master Deployment + Service + NetworkPolicy, workers, key Secret.

Pure, like `manifests` (whose names and labels they use). Every Locust container has CPU and memory requests
equal to its limits: a `limits.cpu` ResourceQuota admits it, and the pod is Guaranteed QoS, so node pressure
evicts it last. One gevent process uses at most one core, so one core is its request and its limit, and
"100% of a core" means generator-bound.
"""

from __future__ import annotations

from nightcap.config import Config
from nightcap.kube import pods
from nightcap.locust_env import LOCUST_ENTRY
from nightcap.kube.manifests import (
    COMPONENT,
    LOCUST_FILES,
    LOCUST_MASTER,
    LOCUST_MASTER_PORT,
    LOCUST_MOUNT,
    LOCUST_WEB_PORT,
    LOCUST_WORKER,
    MANAGED_BY,
    MANAGER,
    MODEL,
    RUNNER_LABEL,
    Manifest,
    object_meta,
    labels,
    locust_name,
    pod_selector,
)

LOCUST_RESOURCES: Manifest = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
NAMESPACE_NAME = "kubernetes.io/metadata.name"  # set by the API server on every namespace


def locust_configmap(config: Config, run_id: str, files: dict[str, str]) -> Manifest:
    """The locustfile's files (and payloads) mounted into master and workers: file name -> text."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(locust_name(run_id, "files"), config.platform.namespace,
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
        "args": ["-f", f"{LOCUST_MOUNT}/{LOCUST_ENTRY}", *args],
        "env": _locust_env(env, secret_env),
        "volumeMounts": [{"name": "files", "mountPath": LOCUST_MOUNT, "readOnly": True}],
        "resources": {k: dict(v) for k, v in LOCUST_RESOURCES.items()},
        "securityContext": pods.container_security(),
    }
    if ports:
        container["ports"] = ports
    any_model = {MANAGED_BY: MANAGER, COMPONENT: MODEL}  # this run's, the canary's, another run's
    return {
        # the cluster autoscaler must not evict the generator to shrink a node mid-measurement
        "metadata": {"labels": labels(config, run_id, component), "annotations": {pods.SAFE_TO_EVICT: "false"}},
        "spec": {
            **pods.common_pod_spec(config),
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
            "volumes": [{"name": "files", "configMap": {"name": locust_name(run_id, "files")}}],
            **pods.generator_placement(config, any_model),
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
        "metadata": object_meta(locust_name(run_id, "master"), config.platform.namespace,
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
        "metadata": object_meta(locust_name(run_id, "master"), config.platform.namespace,
                          labels(config, run_id, LOCUST_MASTER)),
        "spec": {
            "type": "ClusterIP",
            "selector": pod_selector(run_id, LOCUST_MASTER),
            "ports": ports,
        },
    }


def runner_namespace(config: Config) -> str:
    """Where the runner pod (a Prefect Kubernetes job) runs: platform.kubernetes.runner_namespace or ours."""
    return config.platform.kubernetes.runner_namespace or config.platform.namespace


def locust_network_policy(config: Config, run_id: str) -> Manifest:
    """Who may reach the Locust master: this run's workers on the master port, and (in the cluster) the pod
    labelled `nightcap.io/runner: "true"` in the runner's namespace on the web port. Every other pod is refused.

    The runner peer names its namespace: a podSelector alone selects pods of the policy's own namespace only,
    so a Prefect job in another namespace would be dropped (and the time-out would blame the workers). A
    port-forward arrives on the pod's loopback, which network policies do not filter. Enforcement needs a
    network-policy provider (GKE: Dataplane V2, or network policy enforcement); preflight checks it.
    """
    ingress: list[Manifest] = [{
        "from": [{"podSelector": {"matchLabels": pod_selector(run_id, LOCUST_WORKER)}}],
        "ports": [{"protocol": "TCP", "port": LOCUST_MASTER_PORT}],
    }]
    if config.platform.in_cluster:
        ingress.append({"from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME: runner_namespace(config)}},
                                  "podSelector": {"matchLabels": {RUNNER_LABEL: "true"}}}],
                        "ports": [{"protocol": "TCP", "port": LOCUST_WEB_PORT}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(locust_name(run_id, "master"), config.platform.namespace,
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
        "metadata": object_meta(locust_name(run_id, "worker"), config.platform.namespace,
                          labels(config, run_id, LOCUST_WORKER)),
        "spec": {
            "replicas": workers,
            "selector": {"matchLabels": pod_selector(run_id, LOCUST_WORKER)},
            "template": _locust_pod(config, run_id, LOCUST_WORKER, args, env, secret_env, []),
        },
    }


def api_key_secret(config: Config, run_id: str, key: str, owner: Manifest | None = None) -> Manifest:
    """The target's API key for the Locust workers, owned by the master Deployment so GC removes it with it."""
    meta = object_meta(locust_name(run_id, "key"), config.platform.namespace, labels(config, run_id, LOCUST_WORKER))
    if owner is not None:
        meta["ownerReferences"] = [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "blockOwnerDeletion": False,
        }]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "stringData": {"api-key": key}}

