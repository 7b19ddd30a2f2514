"""`nightcap run` reads the YAML and pins the model URI once; the flow takes both as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import flows.capacity_check as cc
import nightcap.targets.plan as plan_mod
from nightcap.config import load_config
from nightcap.targets.plan import CheckedConfig, check_target, plan_target

SIGNATURE = {"inputs": json.dumps([{"type": "double", "name": "alcohol"}])}


@pytest.fixture()
def config_path(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": {}}, "model_uuid": "0123456789ab",
                                                    "signature": SIGNATURE}))
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"target": {"name": "mine", "kind": "mlflow", "model_uri": str(folder)},
                                    "slo": {"p95_ms": 500}, "platform": {"kind": "local"}}))
    return path


def test_the_flow_takes_the_checked_config_and_downloads_the_pinned_model(config_path: Path, monkeypatch) -> None:
    cfg = load_config(config_path, ["slo.p95_ms=300"])
    model = check_target(cfg)
    assert model is not None
    checked = CheckedConfig.of(config_path, cfg, model)
    recorded = cc.capacity_check.serialize_parameters({"config": checked, "overrides": ["slo.p95_ms=300"]})
    assert recorded["config"] == {"path": str(config_path), "target": "mine"}  # what the Prefect UI shows

    def again(*_a: object, **_k: object) -> None:
        raise AssertionError("read or resolved a second time")
    monkeypatch.setattr(cc, "load_config", again)
    monkeypatch.setattr(plan_mod, "resolve", again)
    validated = cc.capacity_check.validate_parameters({"config": checked, "overrides": ["slo.p95_ms=300"]})
    got, pinned = cc.checked_config(validated["config"], validated["overrides"])
    assert got is cfg and pinned is model and got.slo.p95_ms == 300
    plan = plan_target(got, model=pinned)
    assert plan.model is model and plan.downloaded is None  # a local folder is served in place
    from prefect.runtime import flow_run

    monkeypatch.setattr(flow_run, "parameters", {"config": checked}, raising=False)
    assert cc.run_name().startswith("mine ")  # the run's name from the checked config, no YAML read


def test_a_deployment_run_loads_its_config_path(config_path: Path) -> None:
    cfg, model = cc.checked_config(str(config_path), ["slo.p95_ms=300"])
    assert cfg.slo.p95_ms == 300 and model is not None and model.uri == cfg.target.model_uri
    # parameters read back from Prefect's API (a retry): the path is loaded again
    cfg, _ = cc.checked_config(CheckedConfig(path=str(config_path), target="mine"), [])
    assert cfg.slo.p95_ms == 500
    assert "config" in cc.capacity_check.parameters.properties
    assert cc.capacity_check.parameters.properties["config"]["type"] == "string"  # the deployment's form: a path
