"""Which steps count for capacity."""

from __future__ import annotations

import pandas as pd

from nightcap.analysis.saturation import steps_frame, usable, usable_mask
from nightcap.results.steps import StepRow


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
