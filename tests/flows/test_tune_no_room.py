"""A tuning candidate whose pods find no room on the nodes is recorded as such, not scored 0 rps."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from nightcap.analysis.tuning import Candidate
from nightcap.config import validate
from nightcap.platforms.base import NoRoomForPods, PodSpec


class FullPool:
    """A platform whose nodes have room for 1 CPU per pod at most."""

    replicas = 2

    def __init__(self) -> None:
        self.applied: list[PodSpec] = []

    def set_resources(self, spec: PodSpec) -> None:
        self.applied.append(spec)
        if spec.cpu and spec.cpu > 1:
            raise NoRoomForPods("set resources: deployment ns/m was not ready within 300s. Causes: FailedScheduling",
                                "0/3 nodes are available: 3 Insufficient cpu.")

    def observe(self) -> Any:
        pytest.fail("an unschedulable candidate has no pods to observe")


def test_measure_candidate_reports_no_room(monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.tune as tune

    monkeypatch.setattr(tune, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(tune, "run_search", lambda *a, **k: pytest.fail("nothing is measured without pods"))
    config = validate({"target": {"name": "t", "kind": "reference", "image": "x"}, "slo": {"p95_ms": 500},
                       "platform": {"kind": "kubernetes"}, "tune": {"replicas": 2}})
    ctx = SimpleNamespace(config=config, platform=FullPool(), steps=[], spec=None,
                          generator_for=lambda workers: None)  # the generator starts before the candidate
    result, search = tune.measure_candidate(ctx, Candidate(2.0, 1 << 30, 4))  # type: ignore[arg-type]
    assert search is None  # nothing was measured
    assert result.unschedulable and result.saturation_rps == 0 and not result.meets_slo
    assert result.verdict == "no room for this pod size (0/3 nodes are available: 3 Insufficient cpu.)"
