"""Paired windows in, scaling efficiency and the multi-client gain out (milliseconds, no load)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nightcap.analysis.paired import good_rps, multi_client_gain, pair_order, scaling_efficiency
from nightcap.analysis.pod_capacity import FigureWindow, PodFigure, PodKey


def _w(rps: float, workers: int = 1) -> FigureWindow:
    return FigureWindow("scaling", "pair", workers, 8, rps, 2.0, 10)


def test_efficiency_is_the_mean_of_the_pairs_ratios_so_drift_cancels() -> None:
    one = [_w(100.0), _w(90.0), _w(80.0)]  # the machine slows down; each pair's N-pod window with it
    three = [_w(285.0), _w(256.5), _w(228.0)]
    eff = scaling_efficiency(one, three, 3)
    assert eff.ratio.mean == pytest.approx(0.95) and eff.pairs == 3
    assert eff.one_pod.mean == pytest.approx(90.0) and eff.n_pods.mean == pytest.approx(256.5)
    assert eff.ci is not None and eff.ci[0] < 0.95 < eff.ci[1]


def _row(rps: float, valid: bool = True, bound: bool = False) -> SimpleNamespace:
    return SimpleNamespace(users=8, rps=rps, rps_halfwidth=2.0, batches=10, step=None, valid=valid,
                           generator_bound=bound)


def test_the_multi_client_gain_says_one_generator_was_the_bottleneck() -> None:
    key = PodKey(1.0, None, 4, 1)
    fig = PodFigure(key, 8, "single_client", 1, [FigureWindow("single_client", "confirm", 1, 8, 100.0, 2.0, 10)] * 3,
                    2.0)
    check = multi_client_gain(fig, "multi_client", 4, [_row(100.0)] * 3, [_row(130.0)] * 3)
    assert check.outcome == "bottleneck" and check.ratio is not None and check.ratio.mean == pytest.approx(1.3)
    assert fig.stage == "multi_client" and fig.workers == 4  # the figure is now the stage's


def test_good_rps_leaves_out_invalid_and_generator_bound_windows() -> None:
    assert good_rps([_row(100.0), _row(10.0, valid=False), _row(20.0, bound=True), _row(110.0)]) == 105.0
    assert good_rps([_row(10.0, valid=False)]) is None


def test_n_pods_are_measured_at_as_many_users_per_pod_as_one_pod():
    """make run's 2-pod search put its plateau at 3 users (1.5 per pod) beside one pod measured at 4: the pairs
    run 2 pods at 8, never past max_users; fewer than one pod's knee each makes the efficiency a lower bound."""
    from nightcap.analysis.paired import n_pod_users, under_knee_note

    assert n_pod_users(one_pod_users=4, n=2, max_users=32) == 8
    assert n_pod_users(one_pod_users=8, n=3, max_users=16) == 16
    assert under_knee_note(16, 3, 4) == ""  # 5.3 users each, past a knee of 4
    assert under_knee_note(16, 3, 8) == ("; search.max_users left the 3 pods 5.3 users each, under one pod's knee "
                                         "of 8: the efficiency is a lower bound (raise search.max_users)")
    assert under_knee_note(8, 2, None) == ""


def test_pairs_alternate_and_a_side_that_meets_itself_is_measured_back_to_back():
    assert pair_order(1) == [(0, 1), (1, 1)]
    assert pair_order(3) == [(0, 1), (1, 2), (0, 2), (1, 1)]
    for pairs in range(1, 7):
        runs = pair_order(pairs)
        assert sum(n for side, n in runs if side == 0) == sum(n for side, n in runs if side == 1) == pairs
        assert all(a != b for (a, _), (b, _) in zip(runs, runs[1:]))  # consecutive runs switch sides
        flat = [side for side, n in runs for _ in range(n)]
        assert all({flat[2 * i], flat[2 * i + 1]} == {0, 1} for i in range(pairs))  # every pair has both sides
