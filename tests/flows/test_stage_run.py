"""Stage subflows take the run's context itself; Prefect records it as the run id and target, never the API key."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect._internal.engine import resolve_custom_flow_run_name

from flows.capacity_check import STAGE_FLOWS
from nightcap.config import validate
from nightcap.run.context import RunContext

SECRET = "sk-never-shown-0123456789"


@pytest.fixture()
def ctx(tmp_path: Path) -> RunContext:
    config = validate({"target": {"name": "wine", "kind": "reference"}, "slo": {"p95_ms": 500}})
    c = RunContext(config=config, run_id="20261203-020000-abc123", out=tmp_path,
                   plan=SimpleNamespace(payloads=[]))  # type: ignore[arg-type]
    c.api_key = SECRET
    c.info["target"] = {"name": "wine", "api_key_hint": SECRET}  # anywhere in the context: still not recorded
    return c


@pytest.mark.parametrize("name", sorted(STAGE_FLOWS))
def test_prefect_records_the_run_id_and_target_and_hands_the_flow_the_context(name: str, ctx: RunContext) -> None:
    stage = STAGE_FLOWS[name]
    run = ctx.stage_run()
    recorded = stage.serialize_parameters({"run": run})  # what Prefect sends to its API and shows in the UI
    assert recorded == {"run": {"run_id": ctx.run_id, "target": "wine"}}
    assert SECRET not in json.dumps(recorded) and SECRET not in repr(run)
    validated = stage.validate_parameters({"run": run})  # what the flow function is called with
    assert validated["run"].context is ctx
    assert resolve_custom_flow_run_name(stage, validated).endswith(ctx.run_id)


def test_the_context_never_shows_its_api_key(ctx: RunContext) -> None:
    ctx.info.clear()
    assert SECRET not in repr(ctx)  # a context in a log line or an error message
