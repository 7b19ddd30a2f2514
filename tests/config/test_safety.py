"""Safety limits refused before anything starts, and the stage dependencies config validation refuses."""

from __future__ import annotations

import pytest

from nightcap.config import ConfigError, validate
from nightcap.run.safety import check_safety_limits


def _config(**extra: object):
    return validate({"target": {"name": "t", "kind": "reference"}, "slo": {"p95_ms": 500}, **extra})


def test_autoscale_phases_longer_than_the_run_budget_are_refused() -> None:
    phases = [{"name": "a", "load": 1, "duration_s": 100}, {"name": "b", "load": 3, "duration_s": 100}]
    ok = _config(stages=["single_client", "autoscale"], autoscale={"phases": phases}, load={"max_duration_s": 300})
    check_safety_limits(ok)
    too_long = _config(stages=["single_client", "autoscale"], autoscale={"phases": phases}, load={"max_duration_s": 150})
    with pytest.raises(ConfigError, match=r"autoscale.phases last 200s, more than load.max_duration_s \(150s\)"):
        check_safety_limits(too_long)
    check_safety_limits(_config(stages=["single_client"], autoscale={"phases": phases}, load={"max_duration_s": 150}))


def test_local_platform_replicas_are_bounded() -> None:
    check_safety_limits(_config(platform={"kind": "local", "replicas": 64}))
    with pytest.raises(ConfigError, match="at most 64 replicas"):
        check_safety_limits(_config(platform={"kind": "local", "replicas": 65}))


@pytest.mark.parametrize("stages, needs", [
    (["autoscale"], "stage 'autoscale' needs one pod's saturation point from stage 'scaling', 'single_client' or"),
    (["scaling", "sizing"], "stage 'sizing' needs the latency at the operating point from stage 'single_client' or"),
    (["scaling", "regression"], "stage 'regression' needs tonight's saturation point from stage 'tune',"),
])
def test_a_stage_without_the_stage_it_reads_is_refused(stages: list[str], needs: str) -> None:
    with pytest.raises(ConfigError, match=needs):
        _config(stages=stages)


@pytest.mark.parametrize("stages", [["single_client", "autoscale"], ["scaling", "autoscale"], ["multi_client", "sizing"],
                                    ["tune", "regression"], ["tune", "single_client", "multi_client", "scaling",
                                                             "sizing", "autoscale", "regression"]])
def test_stage_lists_with_what_each_stage_reads_are_valid(stages: list[str]) -> None:
    assert _config(stages=stages).stages
