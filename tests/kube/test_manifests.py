"""Every manifest nightcap can produce, and every file under deployments/k8s, is valid Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_schemas import ValidationError, validate_strictly

from nightcap.config import Config, load_config, validate
from nightcap.kube import manifests as mf, manifests_locust as locust_mf
from nightcap.platforms.base import HpaSpec, PodSpec

ROOT = Path(__file__).resolve().parents[2]


def _config(**target: Any) -> Config:
    data: dict[str, Any] = {
        "target": {"name": "Wine_Classifier.v2", "kind": "mlflow", "image": "registry.example/wine:1.0", **target},
        "platform": {"kind": "kubernetes", "namespace": "capacity", "port": 5000},
        "slo": {"p95_ms": 500},
    }
    return validate(data)


CONFIGS = {
    "mlflow": _config(),
    "reference": _config(kind="reference", image="registry.example/nightcap:0.1", cpu_ms=2.0, coherency_ms=0.5,
                         memory_mb=64),
    "command": _config(kind="command", image="registry.example/srv:3",
                       command=["serve", "--port={port}", "--workers", "{concurrency}", "--json={\"a\": 1}"]),
    "gke-example": load_config(ROOT / "configs" / "gke.yaml"),
}
SPECS = [PodSpec(cpu=0.5, memory=512 * 2**20, concurrency=4), PodSpec(cpu=2.0, memory=None, concurrency=1),
         PodSpec(cpu=None, memory=None, concurrency=16), PodSpec(cpu=0.25, memory=3 * 2**30 // 2, concurrency=2)]
RUN_IDS = ["0b6f3c1e-8d2a-4b7e-9a51-2f1d6c0e7a93", "nightly_2024-06-01T02:00:00Z", "r1"]


def all_manifests(config: Config, run_id: str) -> list[dict[str, Any]]:
    env = {"NIGHTCAP_PATH": config.target.path, "NIGHTCAP_HEADERS": "{}"}
    out = [mf.model_service(config, run_id), locust_mf.locust_master_service(config, run_id),
           locust_mf.locust_configmap(config, run_id, {"locustfile.py": "print('hi')\n", "payloads.jsonl": "{}\n"}),
           locust_mf.locust_master_deployment(config, run_id, env),
           locust_mf.locust_worker_deployment(config, run_id, config.load.workers, env,
                                       {"NIGHTCAP_API_KEY": (mf.locust_name(run_id, "key"), "api-key")}),
           locust_mf.api_key_secret(config, run_id, "s3cr3t"),
           locust_mf.api_key_secret(config, run_id, "s3cr3t", {"metadata": {"name": "owner", "uid": "1234-abcd"}}),
           locust_mf.locust_network_policy(config, run_id)]
    inside = config.model_copy(update={"platform": config.platform.model_copy(update={"in_cluster": True})})
    out += [locust_mf.locust_network_policy(inside, run_id), locust_mf.locust_master_deployment(inside, run_id, env),
            locust_mf.locust_master_service(inside, run_id)]
    out += [mf.model_deployment(config, run_id, spec, replicas) for spec in SPECS for replicas in (0, 1, 12)]
    out += [mf.hpa(config, run_id, HpaSpec()),
            mf.hpa(config, run_id, HpaSpec(target_cpu_pct=65.5, min_replicas=2, max_replicas=40, stabilization_s=0)),
            mf.hpa(config, run_id, HpaSpec(stabilization_s=86_400))]
    return out


@pytest.mark.parametrize("run_id", RUN_IDS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_generated_manifest_validates_strictly(name: str, run_id: str) -> None:
    config = CONFIGS[name]
    for obj in all_manifests(config, run_id):
        validate_strictly(obj)
        labels = obj["metadata"]["labels"]
        assert labels[mf.MANAGED_BY] == "nightcap"
        assert labels[mf.RUN_ID] == mf.run_label(run_id)
        assert mf.NAME in labels
        assert len(obj["metadata"]["name"]) <= 63
        if obj["kind"] == "Service":
            assert obj["metadata"]["name"][0].isalpha()  # DNS-1035


def test_strict_validation_is_real() -> None:
    """A control: an unknown field is rejected, so the passes above mean something."""
    obj = mf.model_service(CONFIGS["mlflow"], "r1")
    obj["spec"]["portz"] = []
    with pytest.raises(ValidationError):
        validate_strictly(obj)


@pytest.mark.parametrize("path", sorted((ROOT / "deployments" / "k8s").glob("*.yaml")), ids=lambda p: p.name)
def test_every_file_under_deployments_k8s_validates(path: Path) -> None:
    from test_kube_render import fill

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for obj in docs:
        validate_strictly(fill(obj) if obj["kind"] == "Job" else obj)
        assert obj["metadata"].get("labels"), f"{obj['kind']}/{obj['metadata']['name']} has no labels"


def test_model_container_fills_port_and_concurrency_and_sizes_the_pod() -> None:
    config = CONFIGS["command"]
    dep = mf.model_deployment(config, "r1", PodSpec(cpu=0.5, memory=512 * 2**20, concurrency=4), 3)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["serve", "--port=5000", "--workers", "4", "--json={\"a\": 1}"]
    assert {"name": "NIGHTCAP_CONCURRENCY", "value": "4"} in container["env"]
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"},
                                      "limits": {"cpu": "500m", "memory": "512Mi"}}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ping", "port": "http"}
    # a slow model load is a start bounded by target.startup_timeout_s (120 s), not a failing readiness probe
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/ping", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= config.target.startup_timeout_s
    # readiness survives the deliberate overload: a /ping queued behind requests gets the request timeout, and
    # a pod leaves the Service only after 30 s without one answer
    ready = container["readinessProbe"]
    assert ready["timeoutSeconds"] >= config.target.request_timeout_s
    assert ready["periodSeconds"] * ready["failureThreshold"] >= 30
    assert dep["spec"]["progressDeadlineSeconds"] >= config.platform.ready_timeout_s + config.target.startup_timeout_s
    assert container["ports"][0]["containerPort"] == 5000
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"] == {"type": "Recreate"}  # a surge pod would need room a full pool lacks
    assert "nodeSelector" not in dep["spec"]["template"]["spec"]  # no platform.gke: wherever there is room
    assert "tolerations" not in dep["spec"]["template"]["spec"] and "imagePullSecrets" not in dep["spec"]["template"]["spec"]
    gke = mf.model_deployment(CONFIGS["gke-example"], "r1", SPECS[0], 1)["spec"]["template"]["spec"]
    assert gke["nodeSelector"] == {mf.NODE_POOL_LABEL: "models"}  # the pool the run sizes and autoscales
    selector = dep["spec"]["selector"]["matchLabels"].items()
    assert set(selector) <= set(dep["spec"]["template"]["metadata"]["labels"].items())
    mlflow = mf.model_deployment(CONFIGS["mlflow"], "r1", PodSpec(cpu=1.0, memory=None, concurrency=3), 1)
    mc = mlflow["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in mc  # the image's own entrypoint serves the model
    assert {"name": "MLFLOW_MODELS_WORKERS", "value": "3"} in mc["env"]
    ref = mf.model_deployment(CONFIGS["reference"], "r1", PodSpec(cpu=1.0, memory=None, concurrency=8), 1)
    rc = ref["spec"]["template"]["spec"]["containers"][0]["command"]
    assert rc[rc.index("--slots") + 1] == "8" and rc[rc.index("--host") + 1] == "0.0.0.0"


def test_hpa_targets_the_model_with_cpu_utilization_and_behavior() -> None:
    config = CONFIGS["mlflow"]
    h = mf.hpa(config, "r1", HpaSpec(target_cpu_pct=80, min_replicas=1, max_replicas=12, stabilization_s=120))
    assert h["apiVersion"] == "autoscaling/v2"
    assert h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                           "name": mf.model_name(config, "r1")}
    assert (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) == (1, 12)
    assert h["spec"]["metrics"][0]["resource"] == {"name": "cpu",
                                                   "target": {"type": "Utilization", "averageUtilization": 80}}
    assert h["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120


def test_locust_manifests_use_the_configured_image_and_wire_workers_to_the_master() -> None:
    config = CONFIGS["gke-example"]
    master = locust_mf.locust_master_deployment(config, "r1", {})
    worker = locust_mf.locust_worker_deployment(config, "r1", 4, {})
    svc = locust_mf.locust_master_service(config, "r1")
    assert master["spec"]["template"]["spec"]["containers"][0]["image"] == config.load.locust_image
    assert worker["spec"]["replicas"] == 4
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--master-host") + 1] == svc["metadata"]["name"]
    assert {p["port"] for p in svc["spec"]["ports"]} == {mf.LOCUST_MASTER_PORT}  # the web API: port-forward only
    assert svc["spec"]["selector"] == master["spec"]["selector"]["matchLabels"]


def _admits(policy: dict[str, Any], pod_labels: dict[str, str], port: int) -> bool:
    """Does a NetworkPolicy's ingress let a pod with `pod_labels` (same namespace) reach `port`?"""
    return any(any(set(peer["podSelector"]["matchLabels"].items()) <= set(pod_labels.items())
                   and peer.get("namespaceSelector", {"matchLabels": {"kubernetes.io/metadata.name": "nightcap"}})
                   == {"matchLabels": {"kubernetes.io/metadata.name": "nightcap"}} for peer in rule["from"])
               and any(p["port"] == port for p in rule["ports"]) for rule in policy["spec"]["ingress"])


@pytest.mark.parametrize("in_cluster", [False, True])
def test_only_the_workers_and_the_runner_reach_the_locust_master(in_cluster: bool) -> None:
    base = CONFIGS["gke-example"]
    config = base.model_copy(update={"platform": base.platform.model_copy(update={"in_cluster": in_cluster})})
    policy = locust_mf.locust_network_policy(config, "r1")
    master = locust_mf.locust_master_deployment(config, "r1", {})
    worker = locust_mf.locust_worker_deployment(config, "r1", 2, {})
    model = mf.model_deployment(config, "r1", SPECS[0], 1)
    master_pod = master["spec"]["template"]["metadata"]["labels"]
    assert set(policy["spec"]["podSelector"]["matchLabels"].items()) <= set(master_pod.items())
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # anything not admitted below is refused
    worker_pod = worker["spec"]["template"]["metadata"]["labels"]
    other_run = locust_mf.locust_worker_deployment(config, "r2", 2, {})["spec"]["template"]["metadata"]["labels"]
    runner = {mf.RUNNER_LABEL: "true", "app": "prefect-job"}
    assert _admits(policy, worker_pod, mf.LOCUST_MASTER_PORT)
    assert not _admits(policy, worker_pod, mf.LOCUST_WEB_PORT)  # a worker cannot start a swarm
    assert not _admits(policy, other_run, mf.LOCUST_MASTER_PORT)
    for pod in (model["spec"]["template"]["metadata"]["labels"], {"app": "anything"}):
        assert not _admits(policy, pod, mf.LOCUST_WEB_PORT) and not _admits(policy, pod, mf.LOCUST_MASTER_PORT)
    assert _admits(policy, runner, mf.LOCUST_WEB_PORT) is in_cluster
    args = master["spec"]["template"]["spec"]["containers"][0]["args"]
    # outside the cluster the web API listens on the pod's loopback, where the port-forward arrives
    assert args[args.index("--web-host") + 1] == ("0.0.0.0" if in_cluster else "127.0.0.1")


def test_names_and_labels_are_safe_for_any_run_id() -> None:
    for run_id in ["A" * 200, "--weird__ID..", "ünïcode run", "x"]:
        value = mf.run_label(run_id)
        assert len(value) <= 63 and value[0].isalnum() and value[-1].isalnum()
        assert mf.run_label(run_id) == value  # stable
        assert len(mf.model_name(CONFIGS["mlflow"], run_id)) <= 63
    assert mf.short_run("run-a-1234567") != mf.short_run("run-a-1234568")


def test_locust_pods_stay_off_the_models_nodes_and_are_not_evicted() -> None:
    config = CONFIGS["gke-example"]
    for dep in (locust_mf.locust_master_deployment(config, "r1", {}), locust_mf.locust_worker_deployment(config, "r1", 2, {})):
        template = dep["spec"]["template"]
        assert template["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
        affinity = template["spec"]["affinity"]
        (term,) = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert term["matchExpressions"] == [{"key": mf.NODE_POOL_LABEL, "operator": "NotIn", "values": ["models"]}]
        (anti,) = affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        model_pod = mf.model_deployment(config, "r1", SPECS[0], 1)["spec"]["template"]["metadata"]["labels"]
        assert set(anti["labelSelector"]["matchLabels"].items()) <= set(model_pod.items())
        assert anti["topologyKey"] == "kubernetes.io/hostname"
        res = template["spec"]["containers"][0]["resources"]
        assert res["requests"] == res["limits"] and {"cpu", "memory"} <= set(res["limits"])  # a limits.cpu quota admits it


def test_tolerations_pull_secrets_and_selectors_come_from_the_config() -> None:
    from nightcap.config import ConfigError

    config = _config()
    data = config.model_dump()
    data["platform"]["kubernetes"] = {
        "tolerations": [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}, {"operator": "Exists"}],
        "image_pull_secrets": ["registry-creds"], "model_node_selector": {"pool": "big"},
        "generator_node_selector": {"pool": "load"}, "run_as_user": None}
    custom = validate(data)
    model = mf.model_deployment(custom, "r1", SPECS[0], 1)["spec"]["template"]["spec"]
    worker = locust_mf.locust_worker_deployment(custom, "r1", 1, {})["spec"]["template"]["spec"]
    for spec in (model, worker):
        assert spec["tolerations"] == [{"operator": "Equal", "key": "dedicated", "value": "ml", "effect": "NoSchedule"},
                                       {"operator": "Exists"}]
        assert spec["imagePullSecrets"] == [{"name": "registry-creds"}]
        assert spec["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        validate_strictly({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    assert model["nodeSelector"] == {"pool": "big"} and worker["nodeSelector"] == {"pool": "load"}
    assert worker["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["big"]}]}]
    data["platform"]["kubernetes"] = {"tolerations": [{"operator": "Exists", "value": "x"}]}
    with pytest.raises(ConfigError, match="platform.kubernetes.tolerations.0.*operator 'Exists' takes no value"):
        validate(data)
    data["platform"]["kubernetes"] = {"image_pull_secrets": ["Not_A_Name"]}
    with pytest.raises(ConfigError, match="platform.kubernetes.image_pull_secrets"):
        validate(data)


def test_the_runner_rule_names_the_runners_namespace() -> None:
    """A podSelector alone selects pods of the policy's namespace: a Prefect job elsewhere would be dropped."""
    base = CONFIGS["gke-example"]
    k = base.platform.kubernetes.model_copy(update={"runner_namespace": "prefect"})
    config = base.model_copy(update={"platform": base.platform.model_copy(update={"in_cluster": True, "kubernetes": k})})
    rule = locust_mf.locust_network_policy(config, "r1")["spec"]["ingress"][-1]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prefect"}},
                             "podSelector": {"matchLabels": {mf.RUNNER_LABEL: "true"}}}]
