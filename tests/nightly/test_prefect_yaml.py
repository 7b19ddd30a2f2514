"""deployments/prefect.yaml is what `prefect deploy` reads: check it the way Prefect 3 does."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PREFECT_YAML = Path(__file__).resolve().parents[2] / "deployments" / "prefect.yaml"
ENTRYPOINT = "flows/capacity_check.py:capacity_check"
FLOW_PARAMETERS = {"config", "overrides", "out"}


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


@pytest.fixture(scope="module")
def deployments(spec) -> dict[str, dict]:
    return {d["name"]: d for d in spec["deployments"]}


def test_both_deployments_run_the_parent_flow(deployments):
    assert set(deployments) == {"nightly", "on-demand"}
    for deployment in deployments.values():
        assert deployment["entrypoint"] == ENTRYPOINT
        assert deployment["work_pool"]["name"] == "nightcap-local"
        assert set(deployment["parameters"]) <= FLOW_PARAMETERS
        assert deployment["parameters"]["config"].startswith("configs/")


def test_nightly_schedule_and_on_demand_has_none(deployments):
    (schedule,) = deployments["nightly"]["schedules"]
    assert schedule["cron"] == "0 2 * * *"
    assert schedule["timezone"] == "UTC"
    assert not deployments["on-demand"].get("schedules")


def test_pull_step_enters_the_checkout(spec, deployments):
    for deployment in deployments.values():
        steps = deployment.get("pull", spec["pull"])
        assert any("prefect.deployments.steps.set_working_directory" in step for step in steps)


def test_entrypoint_exists_when_the_flow_is_written():
    flow_file = PREFECT_YAML.parents[1] / ENTRYPOINT.split(":")[0]
    if not flow_file.exists():
        pytest.skip(f"{flow_file} not written yet")
    assert f"def {ENTRYPOINT.split(':')[1]}(" in flow_file.read_text()


def test_prefect_accepts_the_file():
    """Prefect's own loader and schedule builder, as `prefect deploy --prefect-file` uses them."""
    config_mod = pytest.importorskip("prefect.cli.deploy._config")
    schedules_mod = pytest.importorskip("prefect.cli.deploy._schedules")
    models = pytest.importorskip("prefect.cli.deploy._models")
    from prefect.client.schemas.schedules import CronSchedule
    from rich.console import Console

    models.PrefectYamlModel.model_validate(yaml.safe_load(PREFECT_YAML.read_text()))  # raises on a bad shape
    console = Console(file=open("/dev/null", "w"))  # noqa: SIM115 - the loader only warns, so check results
    configs, actions = config_mod._load_deploy_configs_and_actions(PREFECT_YAML, console=console)
    assert [c["name"] for c in configs] == ["nightly", "on-demand"]
    assert actions["pull"]
    by_name = {c["name"]: c for c in configs}
    built = schedules_mod._construct_schedules(by_name["nightly"], {}, console=console, is_interactive=lambda: False)
    assert len(built) == 1 and isinstance(built[0]["schedule"], CronSchedule)
    assert built[0]["schedule"].cron == "0 2 * * *" and built[0]["schedule"].timezone == "UTC"
    assert schedules_mod._construct_schedules(by_name["on-demand"], {}, console=console, is_interactive=lambda: False) == []


def _in_cluster_example() -> dict:
    """The commented `nightly-in-cluster` deployment at the end of prefect.yaml, uncommented as a user would."""
    lines = PREFECT_YAML.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#  - name: nightly-in-cluster"))
    block = [line[1:] for line in lines[start:] if line.startswith("#  ")]
    (deployment,) = yaml.safe_load("\n".join(block))
    return deployment


def test_in_cluster_example_runs_under_the_service_account_rbac_yaml_creates():
    """A job pod names a ServiceAccount; one that does not exist means the pod is never created."""
    rbac = [d for d in yaml.safe_load_all((PREFECT_YAML.parent / "k8s" / "rbac.yaml").read_text()) if d]
    accounts = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in rbac if d["kind"] == "ServiceAccount"}
    bound = {(s["namespace"], s["name"]) for d in rbac if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
             for s in d["subjects"] if s["kind"] == "ServiceAccount"}
    job = _in_cluster_example()["work_pool"]["job_variables"]
    account = (job["namespace"], job["service_account_name"])
    assert account in accounts, f"service_account_name {account} is not a ServiceAccount of rbac.yaml {accounts}"
    assert account in bound


def test_in_cluster_example_runner_may_drive_the_locust_master():
    """The Locust master's NetworkPolicy admits the web API only from a pod with the runner label."""
    from nightcap.config import load_config
    from nightcap.kube import manifests as mf, manifests_locust as locust_mf

    example = _in_cluster_example()
    config = load_config(PREFECT_YAML.parents[1] / example["parameters"]["config"], example["parameters"]["overrides"])
    policy = locust_mf.locust_network_policy(config, "r1")
    job_labels = example["work_pool"]["job_variables"]["labels"]
    web_peers = [peer["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"] for peer in rule["from"]
                 if any(p["port"] == mf.LOCUST_WEB_PORT for p in rule["ports"])]
    assert any(set(peer.items()) <= set(job_labels.items()) for peer in web_peers)


def test_in_cluster_example_writes_reports_where_they_outlive_the_pod():
    """The job's own disk dies with it: the reports go to the volume prefect-job.yaml mounts."""
    from nightcap.kube.runner_manifests import REPORTS_MOUNT

    example = _in_cluster_example()
    assert example["parameters"]["out"].startswith(REPORTS_MOUNT + "/")
    job = yaml.safe_load((PREFECT_YAML.parent / "k8s" / "prefect-job.yaml").read_text())
    mounts = job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "reports", "mountPath": REPORTS_MOUNT} in mounts
    assert job["spec"]["template"]["metadata"]["labels"]["nightcap.io/runner"] == "true"
