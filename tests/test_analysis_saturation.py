"""Shared step rules: operating point, stability and which steps count for capacity."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nightcap.analysis.saturation import is_stable, operating_point, steps_frame, usable, usable_mask
from nightcap.steps import StepRow


def test_operating_point_is_70_percent_of_saturation() -> None:
    op = operating_point(1000.0, 64)
    assert op.rps == pytest.approx(700.0) and op.users == 44 and op.headroom == 0.7
    assert operating_point(100.0, 10).users == 7  # 7.000…01 is not rounded up to 8
    assert operating_point(5.0, 1).users == 1  # never 0 users when something was sustained
    assert operating_point(0.0, 0).users == 0
    with pytest.raises(ValueError):
        operating_point(100.0, 10, headroom=1.5)


@given(st.floats(0, 1e6), st.integers(0, 100_000), st.floats(0.05, 1.0))
def test_operating_point_never_exceeds_saturation(rps: float, users: int, headroom: float) -> None:
    op = operating_point(rps, users, headroom)
    assert op.rps <= rps + 1e-9 and op.users <= users


def test_is_stable() -> None:
    assert is_stable(100.0, 109.0, 0.10)
    assert not is_stable(100.0, 112.0, 0.10)
    assert is_stable(0.0, 0.0)
    assert not is_stable(math.nan, 1.0)


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(0, 1))
def test_is_stable_is_symmetric(a: float, b: float, within: float) -> None:
    assert is_stable(a, b, within) == is_stable(b, a, within)


def _row(**kw: object) -> StepRow:
    base = dict(stage="single_client", step=0, replicas=1, cpu=1.0, memory=None, concurrency=4, users=8)
    base.update(kw)
    return StepRow(**base)  # type: ignore[arg-type]


def test_usable_excludes_invalid_and_generator_bound_steps() -> None:
    assert usable(_row())
    assert not usable(_row(valid=False))
    assert not usable(_row(generator_bound=True))
    frame = steps_frame([_row(), _row(valid=False), _row(generator_bound=True)])
    assert usable_mask(frame).tolist() == [True, False, False]
    # as read back from steps.csv by pandas: strings and NaN
    csv_like = pd.DataFrame({"valid": ["True", "False", float("nan")], "generator_bound": ["False", "False", "True"]})
    assert usable_mask(csv_like).tolist() == [True, False, False]
    assert usable({"valid": "True", "generator_bound": "False"})
