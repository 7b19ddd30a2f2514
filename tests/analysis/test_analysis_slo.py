"""The SLO rule is decided once (nightcap/analysis/slo.py): p95 ≤ SLO and error rate ≤ the max meet it. Every
form of the rule, and every analysis that judges a window, agrees on the boundary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nightcap.analysis import operating_point
from nightcap.analysis.autoscale_metrics import AutoscaleSample, breaches
from nightcap.analysis.saturation import steps_frame, within_slo_mask
from nightcap.analysis.sizing import slo_capacity_by_cores
from nightcap.analysis.slo import Slo
from nightcap.config import SloConfig
from nightcap.search.levels import Point, SearchParams, judge, measure_level
from nightcap.steps import StepRow

SLO = Slo(p95_ms=100.0, max_error_rate=0.01)
ABOVE = math.nextafter(100.0, math.inf)  # the smallest p95 over the SLO
# (p95, error rate, meets): on both lines, just over each, no p95 at all
CASES = [(100.0, 0.01, True), (ABOVE, 0.0, False), (100.0, 0.0101, False), (50.0, 0.0, True), (None, 0.0, False)]


@pytest.mark.parametrize(("p95", "errors", "meets"), CASES)
def test_the_boundary_meets_and_just_over_does_not(p95: float | None, errors: float, meets: bool) -> None:
    assert SLO.met(p95, errors) is meets
    assert SLO.met_steps([Point(1, 10.0, p95, errors)]) == [meets]
    assert SLO.met_many([p95], [errors]).tolist() == [meets]
    frame = pd.DataFrame({"p95_ms": [p95], "error_rate": [errors]}, index=[7])
    assert SLO.met_frame(frame).to_dict() == {7: meets}


def test_the_vectorised_forms_take_columns_arrays_and_gaps() -> None:
    p95 = pd.Series([100.0, ABOVE, np.nan, 20.0, "12"])
    errors = [0.01, 0.0, 0.0, None, 0.0]  # a missing error rate counts as all errors
    assert SLO.met_many(p95, errors).tolist() == [True, False, False, False, True]
    assert SLO.met_frame(pd.DataFrame(columns=["p95_ms", "error_rate"])).empty


def test_of_the_config_and_scaled_lines() -> None:
    assert Slo.of(SloConfig(p95_ms=250)) == Slo(250.0, 0.01)
    assert SLO.scaled(0.8).p95_met(80.0) and not SLO.scaled(0.8).p95_met(80.5)
    assert not SLO.scaled(5, error_floor=0.05).errors_met(0.06) and SLO.scaled(5, error_floor=0.05).errors_met(0.05)


def _row(p95: float, errors: float) -> StepRow:
    return StepRow("single_client", 1, replicas=1, cpu=1.0, memory=None, concurrency=1, users=4, rps=40.0,
                   p95_ms=p95, error_rate=errors)


@pytest.mark.parametrize(("p95", "errors", "meets"), [c for c in CASES if c[0] is not None])
def test_every_analysis_agrees_at_the_boundary(p95: float, errors: float, meets: bool) -> None:
    """The search, the saturation mask, sizing, the operating-point check and the autoscale timings once
    disagreed at p95 == SLO; now each answers what `Slo.met` does."""
    window = Point(4, 40.0, p95, errors)
    search = judge(window, SLO)[0]
    level = measure_level(lambda users: window, 4, SLO, SearchParams(max_windows=1)).good
    frame = steps_frame([_row(p95, errors)])
    saturation = bool(within_slo_mask(frame, SLO).iloc[0])
    sizing = int(slo_capacity_by_cores(frame, SLO)["slo_users"].iloc[0]) == 4
    operating = operating_point.judge(SLO, p95_ms=p95, error_rate=errors, verdict="ok")[0]
    sample = AutoscaleSample(t=0.0, phase="overload", rps=40.0, p50_ms=p95 / 2, p95_ms=p95, error_rate=errors,
                             current=1, desired=1, ready=1, pending=0)
    autoscale = not breaches(sample, SLO)
    assert (search, level, saturation, sizing, operating, autoscale) == (meets,) * 6
