"""One pod, one number: a confirmed figure that later stages verify, settle, or call unstable."""

from __future__ import annotations

import pytest

from nightcap.analysis.pod_capacity import (FigureWindow, PodFigure, PodKey, compare_configs, levels_above, pod_steps,
                                           settle, verify)

KEY = PodKey(cpu=1.0, memory=2**30, concurrency=2, replicas=1)


def windows(stage: str, purpose: str, rates: list[float], workers: int = 1, half: float = 3.0,
            first_step: int | None = None) -> list[FigureWindow]:
    steps = [None] * len(rates) if first_step is None else list(range(first_step, first_step + len(rates)))
    return [FigureWindow(stage, purpose, workers, 4, r, half, 10, step) for r, step in zip(rates, steps)]


def figure(rates: list[float] = [200.0, 202.0, 198.0]) -> PodFigure:
    return PodFigure(KEY, 4, "tune", 1, windows("tune", "confirm", rates), window_s=2.0)


def test_agreeing_windows_join_the_figure_which_then_spans_the_run():
    f = figure()
    check = verify(f, windows("single_client", "verify", [199.0, 203.0, 206.0]))
    assert check is not None and check.outcome == "agrees" and f.status == "confirmed"
    assert f.estimate.mean == pytest.approx(sum([200.0, 202.0, 198.0, 199.0, 203.0, 206.0]) / 6)
    d = f.to_dict()
    assert d["stage"] == "tune" and d["windows"] == 6 and d["confirm_windows"] == 3 and d["unstable"] is None
    assert d["measured_by"] == ["tune", "single_client"]
    assert d["checks"][0]["stage"] == "single_client" and d["checks"][0]["outcome"] == "agrees"
    assert d["ci"][0] < 200 < d["ci"][1]


def test_disagreeing_windows_do_not_join_until_settled():
    f = figure()
    assert verify(f, windows("single_client", "verify", [150.0, 152.0, 151.0])) is None
    assert len(f.windows) == 3


def test_same_configuration_a_transient_joins_and_a_lasting_change_is_unstable_planned_on_the_lower():
    f = figure()
    fresh = windows("single_client", "verify", [150.0, 152.0, 151.0])
    check = settle(f, fresh, [], windows("single_client", "recheck", [201.0, 199.0, 200.0]))
    assert check.outcome == "transient" and f.status == "confirmed"
    assert [w.purpose for w in f.windows] == ["confirm"] * 3 + ["recheck"] * 3  # the transient windows stay out

    f = figure()
    check = settle(f, fresh, [], windows("single_client", "recheck", [149.0, 150.0, 151.0]))
    assert check.outcome == "unstable" and f.status == "unstable"
    assert f.planning.mean == pytest.approx(150.5, abs=0.5)  # the lower, never the midpoint
    assert f.per_pod.mean == f.planning.mean and f.to_dict()["unstable"]["stage"] == "single_client"
    assert "planning on the lower" in check.note


def test_more_generators_that_measure_more_replace_the_figure():
    f = figure()
    single = windows("multi_client", "pair", [200.0, 198.0, 201.0], workers=1)
    multi = windows("multi_client", "pair", [240.0, 238.0, 243.0], workers=2)
    check = compare_configs(f, single, multi)
    assert check.outcome == "bottleneck" and check.ratio.low > 1
    assert f.workers == 2 and f.stage == "multi_client" and f.estimate.mean == pytest.approx(240.3, abs=0.1)


def test_generators_that_agree_join_and_report_their_ratio():
    f = figure()
    check = compare_configs(f, windows("multi_client", "pair", [200.0, 198.0, 201.0]),
                            windows("multi_client", "pair", [201.0, 199.0, 200.0], workers=2))
    assert check.outcome == "agrees" and check.ratio.low <= 1 <= check.ratio.high
    assert check.to_dict()["ratio"]["pairs"] == 3 and len(f.windows) == 9
    assert [w.workers for w in f.windows[3:]] == [1, 2, 1, 2, 1, 2]  # pairs join in the order measured


def test_fewer_measured_with_more_generators_is_unstable_not_a_midpoint():
    f = figure()
    check = compare_configs(f, windows("multi_client", "pair", [200.0, 198.0, 201.0]),
                            windows("multi_client", "pair", [160.0, 158.0, 161.0], workers=2))
    assert check.outcome == "unstable" and f.planning.mean == pytest.approx(159.7, abs=0.1)
    assert f.estimate.mean == pytest.approx(200, abs=1)  # the confirmed figure is still reported beside it
    assert len(f.windows) == 3  # windows that disagree never join


def test_both_configurations_moved_together_since_the_figure_is_unstable():
    f = figure()
    check = compare_configs(f, windows("multi_client", "pair", [170.0, 171.0, 169.0]),
                            windows("multi_client", "pair", [170.0, 169.0, 171.0], workers=2))
    assert check.outcome == "unstable" and "changed between them" in check.note


def test_a_drift_between_stages_widens_the_joined_interval_and_many_windows_do_not_hide_it():
    """Three stages, each agreeing within itself, at 100, 108 and 116 rps: the figure's interval must hold the
    drift between them, not shrink as if 12 windows were 12 independent draws (±1.9 rps then)."""
    f = PodFigure(KEY, 4, "tune", 1, windows("tune", "confirm", [100.0, 101.0, 99.0, 100.0], half=2.0, first_step=0),
                  window_s=2.0)
    for i, (stage, level) in enumerate([("single_client", 108.0), ("scaling", 116.0)]):
        f.join(windows(stage, "verify", [level, level + 1, level - 1, level], half=2.0, first_step=10 * (i + 1)))
    e = f.estimate
    assert e.mean == pytest.approx(108.0)
    naive = 2.2 * 6.9 / 12 ** 0.5  # t x sd / sqrt(n) over the 12 windows as if independent
    assert e.half_width > 2 * naive
    assert e.low < 104 and e.high > 112


def test_the_joined_figure_orders_windows_by_step_whatever_order_they_joined_in():
    f = PodFigure(KEY, 4, "tune", 1, windows("tune", "confirm", [100.0, 100.0, 100.0], first_step=0), window_s=2.0)
    f.join(windows("scaling", "pair", [130.0, 130.0], first_step=20))
    f.join(windows("single_client", "verify", [115.0, 115.0], first_step=10))
    # in step order the series rises 100, 115, 130: neighbours alike, so the interval is widened for it
    g = PodFigure(KEY, 4, "tune", 1, windows("tune", "confirm", [100.0, 100.0, 100.0], first_step=0), window_s=2.0)
    g.join(windows("single_client", "verify", [115.0, 115.0], first_step=10))
    g.join(windows("scaling", "pair", [130.0, 130.0], first_step=20))
    assert f.estimate == g.estimate


def test_a_figure_on_two_replicas_plans_per_pod():
    f = PodFigure(PodKey(1.0, None, 2, 2), 8, "single_client", 1, windows("single_client", "confirm", [400.0] * 3), 2.0)
    assert f.per_pod.mean == 200 and f.per_pod.half_width == 1.5


def test_a_difference_within_two_percent_is_not_acted_on_however_tight_the_intervals():
    # a deterministic server: windows ± 0.3%; two generators measure 1.2% more, which the intervals can tell apart
    f = PodFigure(KEY, 8, "single_client", 1, windows("single_client", "confirm", [198.8, 199.7, 199.5], half=0.6), 2.0)
    check = compare_configs(f, windows("multi_client", "pair", [197.1, 199.5, 197.6], half=0.6),
                            windows("multi_client", "pair", [199.7, 197.0, 199.6], workers=2, half=0.6))
    assert check.outcome == "agrees" and f.stage == "single_client"
    assert verify(f, windows("scaling", "verify", [201.5, 201.9, 201.2], half=0.6)).outcome == "agrees"


def test_a_later_level_wholly_above_the_figure_is_named_and_a_noisy_one_is_not() -> None:
    """make run (2026-12-04): the figure 156.8 rps (137.8-175.7) at 4 users, while single_client's extension measured
    228.6 ± 9.7 rps at 8 users and 231.2 ± 17.0 at 16: both contradict it. A level whose interval reaches the
    figure's (180 ± 10), a bad level and a generator-bound one do not."""
    from nightcap.analysis.confidence import Estimate
    from nightcap.search.levels import Level

    def level(users: int, rps: float, half: float, good: bool = True, bound: bool = False) -> Level:
        return Level(users, rps, 50.0, 0.0, 1, True, good, bound, rps_halfwidth=half)

    figure = Estimate(156.8, 18.95, 6, 2.0)
    levels = [level(4, 118.4, 14.9), level(8, 228.6, 9.7), level(16, 231.2, 17.0), level(20, 180.0, 10.0),
              level(32, 260.0, 5.0, good=False), level(24, 260.0, 5.0, bound=True)]
    assert [lv.users for lv in levels_above(figure, levels)] == [8, 16]
    assert levels_above(Estimate(240.0, 10.0, 6, 2.0), levels) == []


def test_the_table_by_core_count_reads_every_stage_that_measured_the_pod():
    """The scaling stage takes one pod only to its figure's users (8); the ramp found 32 within the SLO in the same
    run. The table reads both, and no other pod shape, no open-loop window, no other stage."""
    from nightcap.analysis.sizing import slo_capacity_by_cores
    from nightcap.analysis.saturation import steps_frame
    from nightcap.analysis.slo import Slo
    from nightcap.steps import StepRow

    def row(stage: str, replicas: int, users: int, p95: float, concurrency: int = 2, load: str = "closed") -> StepRow:
        return StepRow(stage, 0, replicas, 1.0, 2**30, concurrency, users, rps=100.0 * replicas, p95_ms=p95, load=load)

    steps = [row("scaling", 1, 8, 80.0), row("single_client", 1, 16, 110.0), row("single_client", 1, 32, 220.0),
             row("single_client", 1, 64, 400.0),  # past the SLO
             row("tune", 1, 48, 200.0, concurrency=4),  # another pod shape
             row("single_client", 1, 40, 90.0, load="open"),  # an open-loop window: a rate, not users
             row("autoscale", 1, 56, 100.0),  # not a stage that measures the pod's capacity
             row("scaling", 2, 16, 90.0)]
    kept = pod_steps(steps, KEY)
    assert {(s.stage, s.users) for s in kept} == {("scaling", 8), ("single_client", 16), ("single_client", 32),
                                                 ("single_client", 64), ("scaling", 16)}
    table = slo_capacity_by_cores(steps_frame(kept), Slo(p95_ms=250.0))
    assert table.set_index("replicas")["slo_users"].to_dict() == {1: 32, 2: 16}


def _at(users: int, stage: str, rates: list[float]) -> list[FigureWindow]:
    return [FigureWindow(stage, "confirm", 1, users, r, 3.0, 10) for r in rates]


def test_fresh_windows_wholly_above_the_figure_at_more_users_replace_it() -> None:
    """make run 12-05: tune confirmed a 0.5-CPU pod at 112 rps (1 user its knee), single_client's walk read 138 at 8:
    fresh windows there, wholly above the figure's interval, are the figure from then on; the old one is named."""
    from nightcap.analysis.pod_capacity import move_up

    f = PodFigure(KEY, 2, "tune", 1, _at(2, "tune", [110.0, 113.0, 114.0]), window_s=2.0, knee_users=1)
    check = move_up(f, _at(8, "single_client", [136.0, 139.0, 138.0]), 4, 3)
    assert check is not None and check.outcome == "higher" and "112.3 rps that tune confirmed at 2 users" in check.note
    d = f.to_dict()
    assert d["stage"] == "single_client" and d["users"] == 8 and d["knee_users"] == 4 and d["status"] == "confirmed"
    assert d["rps"] == pytest.approx(137.67, abs=0.01) and d["windows"] == d["confirm_windows"] == 3
    assert d["measured_by"] == ["single_client"] and d["checks"][-1]["outcome"] == "higher"


def test_fresh_windows_that_reach_the_figure_or_an_unstable_figure_keep_it() -> None:
    from nightcap.analysis.pod_capacity import move_up

    f = PodFigure(KEY, 2, "tune", 1, _at(2, "tune", [110.0, 113.0, 114.0]), window_s=2.0)
    assert move_up(f, _at(8, "single_client", [118.0, 112.0, 125.0]), 4, 3) is None  # overlaps: kept
    assert f.stage == "tune" and f.users == 2 and not f.checks
    settle(f, windows("multi_client", "verify", [90.0, 91.0, 92.0]), [], windows("multi_client", "recheck", [90.0]))
    assert f.status == "unstable"
    assert move_up(f, _at(8, "single_client", [150.0, 151.0, 152.0]), 4, 3) is None and f.stage == "tune"
