"""Which steps count for capacity, and the p95 at a rate along a ramp."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from nightcap.analysis.saturation import p95_at_rate, steps_frame, usable, usable_mask
from nightcap.steps import StepRow


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


@dataclass
class _Level:
    users: int
    rps: float
    p95_ms: float | None
    good: bool = True


def test_p95_at_rate_interpolates_along_the_rising_ramp() -> None:
    levels = [_Level(1, 100.0, 10.0), _Level(2, 200.0, 20.0), _Level(4, 300.0, 60.0), _Level(8, 310.0, 200.0, good=False)]
    assert p95_at_rate(levels, 150.0) == 15.0  # halfway between 1 and 2 users
    assert p95_at_rate(levels, 210.0) == 24.0
    assert p95_at_rate(levels, 50.0) == 10.0  # below the first level: its p95
    assert p95_at_rate(levels, 305.0) == 60.0  # past the last good level: its p95, never a bad one's
    assert p95_at_rate(levels, None) is None and p95_at_rate([], 10.0) is None


def test_p95_at_rate_on_a_plateau_takes_the_first_level_reaching_the_rate() -> None:
    # 8 and 12 users both give 200 rps: the operating rate's p95 comes from the rise, not from either plateau level
    levels = [_Level(4, 150.0, 12.0), _Level(8, 200.0, 30.0), _Level(12, 200.0, 55.0)]
    assert p95_at_rate(levels, 140.0) == 12.0
    assert p95_at_rate(levels, 175.0) == 21.0
    assert p95_at_rate([_Level(8, 200.0, 30.0), _Level(12, 200.0, 55.0)], 200.0) == 30.0
