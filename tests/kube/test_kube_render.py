"""`nightcap render configs/gke.yaml --out DIR`: valid Kubernetes, the `restricted` Pod Security Standard, CPU and
memory requests and limits on every container; deployments/k8s/ is exactly its output; the runner's Job.

The Pod Security check below is written from the standard itself (kubernetes.io/docs/concepts/security/
pod-security-standards, "Restricted"), not from nightcap's code, so it can disagree with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_schemas import validate_strictly
from typer.testing import CliRunner

from nightcap.cli import app

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33"
EXAMPLES = ROOT / "deployments" / "k8s"
NOT_KEPT = {"locust-files.yaml"}  # the locustfile itself: it follows nightcap/load/locust_side/
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
PLACEHOLDERS = {"{{ labels }}": {"app": "x"}, "{{ namespace }}": "nightcap", "{{ name }}-": "run-",
                "{{ finished_job_ttl }}": 3600, "{{ service_account_name }}": "nightcap",
                "{{ image }}": "registry.example/nightcap:1", "{{ image_pull_policy }}": "IfNotPresent",
                "{{ env }}": [{"name": "PREFECT__FLOW_RUN_ID", "value": "x"}]}


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """What the `restricted` profile (with the `baseline` rules it includes) refuses in a pod spec."""
    bad = []
    psc = pod_spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            bad.append(key)
    for v in pod_spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            bad.append(f"volume {v['name']} of type {kinds}")
    containers = (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or [])
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation != false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{name}: capabilities not dropped (ALL)")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps.get('add')}")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            bad.append(f"{name}: runAsNonRoot != true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile {seccomp}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                bad.append(f"{name}: hostPort")
    return bad


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] in ("Deployment", "Job"):
        return [obj["spec"]["template"]["spec"]]
    return [obj["spec"]] if obj["kind"] == "Pod" else []


def fill(obj: Any) -> Any:
    """The runner's Job with the work pool's `{{ }}` variables filled as the Prefect worker fills them."""
    if isinstance(obj, dict):
        return {k: fill(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fill(v) for v in obj]
    if isinstance(obj, str):
        for placeholder, value in PLACEHOLDERS.items():
            if obj == placeholder:
                return value
            if placeholder in obj and isinstance(value, str):
                obj = obj.replace(placeholder, value)
        assert "{{" not in obj, obj
    return obj


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("render")
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)  # the config path as the examples' header names it
    try:
        result = CliRunner().invoke(app, ["render", "configs/gke.yaml", "--out", str(out)])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    return out


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_rendered_manifests_are_valid_restricted_and_sized(rendered: Path) -> None:
    kinds = []
    for path in sorted(rendered.glob("*.yaml")):
        for obj in _docs(path):
            obj = fill(obj) if obj["kind"] == "Job" else obj
            validate_strictly(obj, K8S_VERSION)
            kinds.append(obj["kind"])
            for spec in pod_specs(obj):
                assert restricted_violations(spec) == [], (path.name, obj["metadata"].get("name"))
                for c in spec["containers"]:
                    res = c.get("resources") or {}
                    for side in ("requests", "limits"):
                        assert {"cpu", "memory"} <= set(res.get(side) or {}), (path.name, c["name"], res)
    # model + canary + Locust master + workers + the runner's Job: every pod a run (or its runner) starts
    assert kinds.count("Deployment") == 4 and kinds.count("Job") == 1
    assert {"Service", "HorizontalPodAutoscaler", "NetworkPolicy", "ConfigMap", "Role", "ClusterRole",
            "PersistentVolumeClaim"} <= set(kinds)


def test_the_restricted_check_is_real() -> None:
    """A control: the pods of the old examples (only allowPrivilegeEscalation set) fail it."""
    spec = {"containers": [{"name": "model", "securityContext": {"allowPrivilegeEscalation": False}}]}
    assert restricted_violations(spec) == ["model: capabilities not dropped (ALL)", "model: runAsNonRoot != true",
                                           "model: seccompProfile None"]


def test_deployments_k8s_is_what_render_writes(rendered: Path) -> None:
    written = {p.name for p in rendered.glob("*.yaml")} - NOT_KEPT
    kept = {p.name for p in EXAMPLES.glob("*.yaml")}
    fix = "run `nightcap render configs/gke.yaml --out deployments/k8s && rm deployments/k8s/locust-files.yaml`"
    assert kept == written, fix
    for name in sorted(written):
        assert (EXAMPLES / name).read_text() == (rendered / name).read_text(), f"deployments/k8s/{name} differs: {fix}"


def test_the_preview_ships_every_file_of_the_locustfile(rendered: Path) -> None:
    """What preflight dry-runs is what the generator creates: the ConfigMap holds every file Locust runs."""
    from nightcap.locust_env import LOCUST_SOURCES

    (configmap,) = _docs(rendered / "locust-files.yaml")
    assert set(configmap["data"]) == {*LOCUST_SOURCES, "payloads.jsonl"}


def test_the_runners_job_survives_its_teardown(rendered: Path) -> None:
    """SIGTERM reaches the flow (it is PID 1, not a child of `prefect flow-run execute`, which the kubelet's
    signal never reaches and whose supervisor kills the flow 30 s later), and the grace period covers teardown."""
    from nightcap.config import load_config
    from nightcap.kube.runner_manifests import teardown_bound_s

    (job,) = _docs(rendered / "prefect-job.yaml")
    pod = job["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "prefect.engine"]
    bound = teardown_bound_s(load_config(ROOT / "configs" / "gke.yaml"))
    assert pod["spec"]["terminationGracePeriodSeconds"] == bound >= 60 + 2 * 900  # Locust + two GKE operations
    assert job["spec"]["backoffLimit"] == 0
    assert pod["metadata"]["labels"]["nightcap.io/runner"] == "true"
    assert pod["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "cloud.google.com/gke-nodepool", "operator": "NotIn", "values": ["models"]}]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] in {
        d["metadata"]["name"] for d in _docs(rendered / "rbac.yaml") if d["kind"] == "PersistentVolumeClaim"}


def test_render_refuses_a_local_config(tmp_path: Path) -> None:
    local = tmp_path / "local.yaml"
    local.write_text("target: {name: x, kind: reference}\nslo: {p95_ms: 100}\n")
    result = CliRunner().invoke(app, ["render", str(local), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and re.search(r"platform.kind: kubernetes", result.output)
