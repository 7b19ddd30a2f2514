"""Issue 23 item 7: an autoscale stage stopped midway (the run's budget, a cancellation, an error) keeps what it
sampled: the samples and the timeline plot are in the result, and the result says why it has no answer."""

from __future__ import annotations

import logging
from pathlib import Path

from flows.autoscale import Timeline
from nightcap.analysis.autoscale_metrics import AutoscaleSample
from nightcap.analysis.autoscale_plan import Shape, fit_to_platform
from nightcap.analysis.pod_capacity import FigureWindow, PodFigure, PodKey
from nightcap.config import AutoscalePhase, validate
from nightcap.load.runner import BudgetExceeded
from nightcap.results.stages import RampResult
from nightcap.run.context import RunContext
from nightcap.search.levels import Level, SearchResult
from nightcap.targets.plan import plan_target


def test_a_stage_stopped_in_its_overload_keeps_its_samples_and_timeline(tmp_path: Path) -> None:
    config = validate({"target": {"name": "t", "kind": "reference"}, "slo": {"p95_ms": 500},
                       "stages": ["single_client", "autoscale"]})
    ctx = RunContext(config=config, run_id="stopped-1", out=tmp_path, plan=plan_target(config))
    level = Level(4, 100.0, 30.0, 0.0, 2, True, True, False)
    ctx.results.single_client = RampResult("single_client", 1, 1, SearchResult(4, 100.0, 1, 70.0, None, None,
                                                                               levels=[level]), 30.0, 0)
    key = ctx.results.run_pod = PodKey(0.5, None, 4, 1)  # the pod's confirmed figure: 100 rps
    ctx.results.pods[key] = PodFigure(key, 4, "single_client", 1,
                                      [FigureWindow("single_client", "confirm", 1, 4, 100.0, 2.0, 10)] * 3, 2.0)
    fit = fit_to_platform(Shape(0.5, None, 4, 100.0, "single_client / 1 pod(s)"), [], 1.0, 1, 2, 3.0, 0.7)
    timeline = Timeline(ctx, fit, logging.getLogger("test"))
    timeline.phases = [AutoscalePhase(name="baseline", load=0.7, duration_s=4),
                       AutoscalePhase(name="overload", load=1.4, duration_s=20),
                       AutoscalePhase(name="recovery", load=0.7, duration_s=10)]
    timeline.phase_t = {"baseline": 0.0, "overload": 4.0}
    for t, phase, desired, p95 in ((2, "baseline", 1, 30.0), (4, "baseline", 1, 31.0), (6, "overload", 2, 900.0),
                                   (8, "overload", 2, 1500.0)):
        timeline.samples.append(AutoscaleSample(t, phase, 70.0, p95 / 2, p95, 0.0, 1, desired, 1, 0,
                                                offered_rps=70.0, planned=140, ok=140, covered_s=2.0))
        timeline.windows.append(None)
    timeline.keep_what_was_measured(BudgetExceeded("the run would exceed load.max_duration_s (900s)"))
    kept = ctx.results.autoscale
    assert kept is not None and len(kept.samples) == 4
    assert kept.plot == "autoscale_timeline.png" and (tmp_path / "autoscale_timeline.png").stat().st_size > 0
    assert kept.inconclusive is not None and kept.inconclusive.startswith("it stopped after ")
    assert kept.inconclusive.endswith(": the run would exceed load.max_duration_s (900s)")
    assert kept.timings is not None and kept.timings.time_to_scale_up_s == 2.0  # from the overload's start
    assert [p["samples"] for p in kept.phases[:2]] == [2, 2] and "samples" not in kept.phases[2]
