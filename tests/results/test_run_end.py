"""How a run ends: its history status and the error its flow run raises, from what the parent flow knows."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from nightcap.results.run_end import (NoAnswer, NotRecorded, PrefectApiGone, RegressionDetected, StagesFailed,
                                      end_status, run_error)


def _stages(**status: str) -> dict[str, dict[str, Any]]:
    return {name: {"status": s, "error": f"{name} broke"} for name, s in status.items()}


def never() -> str | None:
    raise AssertionError("asked for the answer of a run that already failed")


def test_a_completed_run_without_a_saturation_point_is_failed_with_the_reason() -> None:
    info: dict[str, Any] = {}
    status, fatal = end_status("completed", None, False, None, _stages(single_client="completed"), info,
                               lambda: "every level missed the SLO")
    assert (status, fatal) == ("failed", None)
    assert info["failure"] == "no saturation point was measured: every level missed the SLO"
    assert isinstance(run_error(info, _stages(single_client="completed"), None, None, True), NoAnswer)


def test_a_cancelled_run_skips_the_stages_it_never_reached() -> None:
    stages = _stages(tune="completed", single_client="running", scaling="pending")
    stop = KeyboardInterrupt("signal 15")
    status, fatal = end_status("completed", stop, True, None, stages, {}, never)
    assert (status, fatal) == ("cancelled", stop) and run_error({}, stages, fatal, None, True) is stop
    assert [s["status"] for s in stages.values()] == ["completed", "failed", "skipped"]


def test_the_prefect_api_gone_fails_the_run_whatever_stopped_it() -> None:
    info: dict[str, Any] = {}
    status, fatal = end_status("completed", None, False, "the Prefect API stopped answering", {}, info, never)
    assert status == "failed" and isinstance(fatal, PrefectApiGone) and info["failure"].startswith("the Prefect")


@pytest.mark.parametrize("info, stages, regressed, error", [
    ({"history_error": "disk full"}, _stages(tune="completed"), False, NotRecorded),
    ({}, _stages(tune="completed"), True, RegressionDetected),
    ({}, _stages(tune="failed", single_client="inconclusive"), False, StagesFailed),
    ({}, _stages(tune="completed", single_client="inconclusive"), False, None),
])
def test_the_error_the_flow_run_ends_with(info: dict[str, Any], stages: dict[str, dict[str, Any]], regressed: bool,
                                          error: type | None) -> None:
    regression = SimpleNamespace(regressed=regressed, result=SimpleNamespace(message="saturation_rps fell 20%"))
    raised = run_error(info, stages, None, regression, fail_on_regression=True)
    assert (type(raised) if raised else None) is error
    if error is StagesFailed:
        assert str(raised).startswith("stage(s) tune failed: tune broke (") and "single_client" in str(raised)
    if error is RegressionDetected:  # regression.fail_flow off: the alarm is in the report, the run completes
        assert run_error(info, stages, None, regression, fail_on_regression=False) is None
