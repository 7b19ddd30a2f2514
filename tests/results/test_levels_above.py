"""The warning that a ramp measured the pod clearly faster than its figure reads the figure as the run ends."""

from __future__ import annotations

from nightcap.analysis.pod_capacity import FigureWindow, PodFigure, PodKey
from nightcap.results.stages import RampResult, StageResults
from nightcap.results.capacity import levels_above_warnings
from nightcap.search.levels import Level, SearchResult

KEY = PodKey(cpu=0.5, memory=2**30, concurrency=1, replicas=1)


def _figure(rates: list[float], stage: str = "tune", first: int = 0) -> PodFigure:
    return PodFigure(KEY, 1, stage, 1, [FigureWindow(stage, "confirm", 1, 1, r, 4.0, 10, first + i)
                                        for i, r in enumerate(rates)], window_s=2.0)


def _ramp(levels: list[Level], replicas: int = 1) -> RampResult:
    return RampResult("single_client", 1, replicas, SearchResult(1, 108.0, 1, 75.0, None, None, levels=levels), 50.0, 0)


def test_a_level_wholly_above_the_final_figure_is_named_with_that_figure() -> None:
    """make run 12-05 03:08: the warning quoted 108.2 rps, the figure after single_client, while the answer line
    gave 111.0 once multi_client's and scaling's windows had joined it."""
    fig = _figure([110.0, 106.0, 108.0])
    fig.join([FigureWindow("scaling", "pair", 1, 1, r, 4.0, 10, 50 + i) for i, r in enumerate([116.0, 114.0, 118.0])])
    res = StageResults(single_client=_ramp([Level(1, 108.0, 50.0, 0.0, 3, True, True, False, rps_halfwidth=9.0),
                                            Level(2, 150.0, 60.0, 0.0, 1, True, True, False, rps_halfwidth=3.0)]))
    [line] = levels_above_warnings(res, fig)
    assert f"figure {fig.planning.mean:.1f} rps" in line and "150.0 rps at 2 users" in line
    assert f"{fig.planning.low:.1f}-{fig.planning.high:.1f}" in line


def test_no_warning_within_the_figure_or_from_the_ramp_that_chose_it_or_on_other_replicas() -> None:
    fig = _figure([110.0, 106.0, 108.0])
    near = [Level(2, 112.0, 60.0, 0.0, 1, True, True, False, rps_halfwidth=3.0)]
    assert levels_above_warnings(StageResults(single_client=_ramp(near)), fig) == []
    far = [Level(2, 150.0, 60.0, 0.0, 1, True, True, False, rps_halfwidth=3.0)]
    assert levels_above_warnings(StageResults(single_client=_ramp(far, replicas=2)), fig) == []
    confirmed = _ramp(far)
    confirmed.confirmation = object()  # type: ignore[assignment]  # this ramp confirmed the figure itself
    assert levels_above_warnings(StageResults(single_client=confirmed), fig) == []
