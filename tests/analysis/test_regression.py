"""The nightly alarm: one decision per night, beyond the history's noise and tonight's own interval."""

from __future__ import annotations

import inspect
import json
import math
import statistics

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nightcap.analysis import alarm
from nightcap.analysis.figures import COMPARED_FIGURES
from nightcap.analysis.regression import check_regression
from nightcap.config import ConfigError, validate
from nightcap.config_history import RegressionConfig

STABLE = [  # six nights of a steady reference target, with a little noise; newest first, as the store gives them
    {"run_id": f"night-{i}", "saturation_rps": rps, "rps_per_core": rps / 2, "p95_at_operating_ms": p95,
     "slo_users": users}
    for i, (rps, p95, users) in enumerate(
        [(210.0, 101.0, 40), (212.0, 99.0, 41), (214.0, 100.0, 40), (208.0, 102.0, 39), (213.0, 100.0, 40),
         (211.0, 98.0, 40)])
][::-1]
LEVEL = statistics.geometric_mean(r["saturation_rps"] for r in STABLE)


def test_thirty_percent_slower_run_regresses_with_the_right_message():
    tonight = {"saturation_rps": 146.3, "rps_per_core": 73.15, "p95_at_operating_ms": 100.0, "slo_users": 40}
    result = check_regression(tonight, STABLE)
    assert result.verdict == "regressed" and result.regressed
    assert result.baseline_run_ids == [f"night-{i}" for i in range(5, -1, -1)]
    by_name = {row.figure: row for row in result.figures}
    sat = by_name["saturation_rps"]
    assert sat.verdict == "regressed" and sat.baseline_mean == pytest.approx(LEVEL)
    assert sat.baseline_median == statistics.median(r["saturation_rps"] for r in STABLE)
    assert round(sat.change_pct) == -31 and sat.window_nights == 1 and sat.pvalue < 0.005
    assert by_name["p95_at_operating_ms"].verdict == "ok"
    assert result.message.startswith(f"saturation_rps fell 31% ({LEVEL:.1f} → 146.3 rps), beyond the ±")
    assert "noise band of 6 comparable night(s)" in result.message and "its own interval unknown" in result.message
    # rps per core is saturation / the same cores every night: the same test, counted once (3 figures x 2 looks)
    assert result.looks == 6 and "one decision at 1 false alarm in 200 nights over 6 look(s)" in result.message
    assert result.new_level == {"run_id": None, "started_at": None, "night": 7, "figure": "saturation_rps",
                                "level_before": pytest.approx(LEVEL), "level_after": pytest.approx(146.3)}  # no run id
    json.dumps(result.to_dict(), allow_nan=False)  # goes into summary.json as is


def test_latency_rise_regresses_because_lower_is_better():
    tonight = {"saturation_rps": 212.0, "rps_per_core": 106.0, "p95_at_operating_ms": 160.0, "slo_users": 40}
    result = check_regression(tonight, STABLE)
    assert result.verdict == "regressed"
    assert result.message.startswith("p95_at_operating_ms rose 60% (100.0 → 160.0 ms)")


def test_run_within_noise_passes_and_says_how_tonight_compares():
    tonight = {"saturation_rps": 205.0, "rps_per_core": 103.0, "p95_at_operating_ms": 104.0, "slo_users": 39}
    result = check_regression(tonight, STABLE)
    assert result.verdict == "ok", result.message
    assert all(row.verdict == "ok" and row.window_nights == 1 for row in result.figures)
    assert result.figures[0].message.startswith(f"saturation_rps fell 3.0% ({LEVEL:.1f} → 205.0 rps), within the ±")


def test_noisy_history_widens_the_band():
    noisy = [{"run_id": str(i), "saturation_rps": v} for i, v in enumerate([150, 260, 200, 140, 250, 210])]
    # 25% below the level: beyond the 10% threshold, but within what these nights usually do
    result = check_regression({"saturation_rps": 153.0}, noisy)
    row = result.figures[0]
    assert row.verdict == "ok" and row.noise_pct > 25
    assert result.verdict == "ok"


def test_improvement_is_reported_not_failed():
    tonight = {"saturation_rps": 300.0, "rps_per_core": 150.0, "p95_at_operating_ms": 60.0, "slo_users": 60}
    result = check_regression(tonight, STABLE)
    assert result.verdict == "ok" and not result.regressed
    assert {row.verdict for row in result.figures} == {"improved"}
    assert "an improvement" in result.message


def test_insufficient_history_never_fails_and_five_nights_are_needed():
    tonight = {"saturation_rps": 1.0, "rps_per_core": 0.5, "p95_at_operating_ms": 9999.0, "slo_users": 1}
    for n in (0, 1, 4):
        result = check_regression(tonight, STABLE[-n:] if n else [])
        assert result.verdict == "insufficient history" and not result.regressed
        assert f"{n} comparable completed night(s), need 5" in result.message
    assert check_regression(tonight, STABLE[-5:]).regressed  # the fifth night makes a baseline
    # enough runs, but tonight measured none of the figures they have
    result = check_regression({}, STABLE)
    assert result.verdict == "insufficient history"
    assert {row.verdict for row in result.figures} == {"not measured"}


def test_figure_missing_from_old_runs_is_not_enough_history():
    old = [{"run_id": str(i), "saturation_rps": 210.0 + i} for i in range(6)]
    result = check_regression({"saturation_rps": 209.0, "slo_users": 5}, old)
    by_name = {row.figure: row for row in result.figures}
    assert by_name["saturation_rps"].verdict == "ok" and by_name["slo_users"].verdict == "not enough history"
    assert by_name["slo_users"].message == "slo_users: 0 comparable night(s), need 5"
    assert result.verdict == "ok"
    # no look was made: the table's "nights averaged" is empty, not 1 beside an empty "their mean" (make run 05:51)
    assert by_name["slo_users"].window_nights is None and by_name["slo_users"].window_mean is None
    assert by_name["saturation_rps"].window_nights == 1
    row = next(r for r in result.table_rows() if r["figure"] == "slo_users")
    assert row["nights averaged"] is None and row["their mean"] is None


def test_latency_changes_below_the_measurement_resolution_never_regress():
    """Nights with identical p95 have no spread; a 2.5 ms change is Locust's ms rounding, not a regression."""
    baseline = [{"run_id": str(i), "saturation_rps": 200.0 + i % 2, "p95_at_operating_ms": 22.0} for i in range(6)]
    ok = check_regression({"saturation_rps": 200.0, "p95_at_operating_ms": 24.5}, baseline)
    assert not ok.regressed, ok.message
    bad = check_regression({"saturation_rps": 200.0, "p95_at_operating_ms": 40.0}, baseline)
    assert bad.regressed and "p95_at_operating_ms" in bad.message


def test_a_change_beyond_the_noise_but_within_tonights_own_interval_does_not_alarm():
    tonight = {"saturation_rps": 170.0, "rps_per_core": 85.0}
    assert check_regression(tonight, STABLE).regressed  # no interval given: the history's noise decides
    wide = check_regression({**tonight, "intervals": {"saturation_rps": [110.0, 250.0], "rps_per_core": [55, 125]}},
                            STABLE)
    assert not wide.regressed and "within its own ±" in wide.figures[0].message
    narrow = check_regression({**tonight, "intervals": {"saturation_rps": [165.0, 175.0]}}, STABLE)
    # 165 is 2.9% under 170: the side the change went to
    assert narrow.regressed and "and its own ±2.9% interval" in narrow.figures[0].message


def test_a_change_beyond_the_noise_but_under_the_threshold_does_not_alarm():
    steady = [{"run_id": str(i), "saturation_rps": 200.0 + 0.2 * (i % 3)} for i in range(8)]
    row = check_regression({"saturation_rps": 190.0}, steady).figures[0]  # -5%: far beyond 0.1% of noise
    assert row.verdict == "ok" and "but under the 10% worth an alarm" in row.message
    assert check_regression({"saturation_rps": 170.0}, steady).regressed


def test_a_figure_that_is_another_over_other_cores_is_its_own_test():
    """rps per core counts once while the cores stay; with another pod size some nights it is a second test."""
    same = [{"run_id": str(i), "saturation_rps": v, "rps_per_core": v / 2}
            for i, v in enumerate([200, 204, 198, 202, 201, 199])]
    assert check_regression({"saturation_rps": 200.0, "rps_per_core": 100.0}, same).looks == 2
    other = [dict(r, rps_per_core=r["saturation_rps"] / (1 if i == 2 else 2)) for i, r in enumerate(same)]
    assert check_regression({"saturation_rps": 200.0, "rps_per_core": 100.0}, other).looks == 4


def test_an_outlier_night_is_left_out_of_the_baseline():
    values = [200.0, 202.0, 199.0, 201.0, 120.0, 200.5, 198.5, 201.5, 199.5, 200.0]  # night 5: a one-off bad night
    runs = [{"run_id": f"night-{i + 1}", "saturation_rps": v} for i, v in enumerate(values)][::-1]
    row = check_regression({"saturation_rps": 185.0}, runs).figures[0]
    assert row.outliers == ["night-5"] and "1 outlier night(s) left out" in row.baseline
    assert row.verdict == "ok" and row.baseline_mean == pytest.approx(statistics.geometric_mean(
        [v for v in values if v != 120.0]))
    assert check_regression({"saturation_rps": 170.0}, runs).regressed  # a 15% fall still shows


def test_inconclusive_and_failed_nights_are_never_a_baseline_and_an_inconclusive_tonight_is_not_judged():
    def night(i: int, rps: float, status: str = "completed") -> dict:
        return {"run_id": f"night-{i}", "saturation_rps": rps,
                "summary": {"saturation": {"stage": "single_client", "rps": rps},
                            "stages": {"single_client": {"status": status}}}}

    runs = [night(i, 200.0 + i % 3) for i in range(5)] + [night(5, 90.0, "inconclusive"), night(6, 95.0, "failed")]
    result = check_regression({"saturation_rps": 200.0}, runs[::-1])
    assert result.verdict == "ok" and "night-5" not in result.baseline_run_ids
    assert result.excluded == [{"run_id": "night-5", "why": "its headline stage single_client was inconclusive"},
                               {"run_id": "night-6", "why": "its headline stage single_client was failed"}]
    skipped = check_regression({"saturation_rps": 50.0}, runs[::-1], tonight_status="inconclusive")
    assert skipped.verdict == "not judged" and not skipped.regressed and "inconclusive" in skipped.message


# -- night after night: each night's verdict stored with it, as the history store keeps the summary ------------

def nightly(series: list[float], **kw) -> list:
    """Run the check every night over `series`, storing each night's regression block like the history store."""
    history: list[dict] = []  # newest first, as HistoryStore.comparable_runs returns them
    results = []
    for i, value in enumerate(series):
        tonight = {"run_id": f"night-{i + 1}", "saturation_rps": value}
        result = check_regression(tonight, history, **kw)
        results.append(result)
        history.insert(0, dict(tonight, started_at=f"2026-11-{i + 1:02d}T02:00:00",
                               summary={"regression": result.to_dict()}))
    return results


def noisy(n: int, *, noise: float = 0.05, seed: int = 0, step_at: int | None = None, step: float = 0.0) -> list[float]:
    rng = np.random.default_rng(seed)
    values = 200.0 * np.exp(noise * rng.standard_normal(n))
    if step_at is not None:
        values[step_at - 1:] *= 1 + step
    return [float(v) for v in values]


def test_a_step_too_small_for_one_night_adds_up_over_the_next_and_is_reported_once():
    series = noisy(20, noise=0.05, seed=11, step_at=13, step=-0.15)
    results = nightly(series)
    verdicts = [r.verdict for r in results]
    alarms = [i + 1 for i, v in enumerate(verdicts) if v == "regressed"]
    assert alarms == [14], verdicts  # night 13 alone was within the noise; with night 14 the mean is not
    row = results[13].figures[0]
    assert row.window_nights == 2 and "over the last 2 nights" in row.message
    # report.md's table shows the look the change is of beside tonight's own value (its "nights" column read 1
    # beside "2 comparable nights" in make run's report, as if it counted the history)
    table = results[13].table_rows()[0]
    assert table["nights averaged"] == 2 and table["their mean"] == pytest.approx(row.window_mean)
    assert table["change %"] == pytest.approx(100 * (row.window_mean / row.baseline_mean - 1), abs=0.01)
    assert row.change_point["night"] == 13 and row.change_point["run_id"] == "night-13"
    assert {k: results[13].new_level[k] for k in ("run_id", "started_at", "night", "figure")} == {
        "run_id": "night-13", "started_at": "2026-11-13T02:00:00", "night": 13, "figure": "saturation_rps"}
    # the nights after compare with the nights since the change: quiet until five of them, then judged again
    assert verdicts[14:17] == ["insufficient history"] * 3
    assert "since the level change reported on night 13 (2026-11-13, run night-13)" in results[14].message
    assert verdicts[17:] == ["ok"] * 3 and [r.figures[0].baseline_runs for r in results[17:]] == [5, 6, 7]


def test_a_one_off_bad_night_alarms_once_and_leaves_the_baseline_instead_of_restarting_it():
    series = noisy(16, noise=0.03, seed=4)
    series[9] *= 0.6  # night 10: a bad night, then back to the level
    results = nightly(series)
    assert [i + 1 for i, r in enumerate(results) if r.regressed] == [10]
    after = results[10]  # night 11 is back at the old level: the change did not persist
    assert after.verdict == "ok" and "night-10" not in after.baseline_run_ids
    assert after.notes == ["the change reported on night 10 (2026-11-10, run night-10) did not persist: "
                           "its night left out"]
    assert all(r.verdict == "ok" for r in results[11:]) and results[-1].figures[0].baseline_runs == 14


def test_a_persistent_step_is_caught_within_three_nights_in_most_histories():
    """The benchmark's criterion (bench/alarm.py, 400 series) in small: 25 seeded series, 5% noise, -15% from
    night 21 (23 caught here)."""
    caught = sum(any(r.regressed for r in nightly(noisy(23, seed=900 + s, step_at=21, step=-0.15))[20:23])
                 for s in range(25))
    assert caught >= 22, caught


def test_the_looks_p_values_hold_their_false_alarm_rate_on_few_nights():
    """Five baseline nights know their noise badly: on Student's t the share of p < 0.05 is 5%; on a normal
    band it would be ~9%."""
    rng = np.random.default_rng(5)
    for k in (1, 3):
        p = [alarm.look(list(rng.standard_normal(5 + k)), k).pvalue(-1) for _ in range(4000)]  # type: ignore[union-attr]
        share = sum(v < 0.05 for v in p) / len(p)
        assert 0.04 < share < 0.06, (k, share)


# -- properties -------------------------------------------------------------------------------------------------

figure_values = st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(values=st.fixed_dictionaries({f.name: figure_values for f in COMPARED_FIGURES}),
       n=st.integers(min_value=0, max_value=10), threshold=st.floats(min_value=0.001, max_value=0.9),
       rate=st.floats(min_value=1e-4, max_value=0.2))
def test_identical_runs_never_regress(values, n, threshold, rate):
    baseline = [dict(values, run_id=f"r{i}") for i in range(n)]
    result = check_regression(values, baseline, threshold=threshold, false_alarm_rate=rate)
    assert not result.regressed
    assert result.verdict == ("ok" if n >= 5 else "insufficient history")


@settings(max_examples=150, deadline=None)
@given(history=st.lists(figure_values, min_size=5, max_size=12), scale=st.floats(min_value=0.01, max_value=100),
       worse=st.floats(min_value=0.0, max_value=0.99))
@example(history=[546.0, 546.0, 546.0, 546.0, 0.0625], scale=0.25, worse=0.0)  # outlier test cancelled to rounding
def test_better_than_every_night_never_regresses_scale_does_not_matter_and_worse_never_helps(history, scale, worse):
    baseline = [{"run_id": str(i), "saturation_rps": v, "p95_at_operating_ms": v} for i, v in enumerate(history)]
    assert not check_regression({"saturation_rps": max(history), "p95_at_operating_ms": min(history)},
                                baseline).regressed
    tonight = min(history) * (1 - worse)
    plain = check_regression({"saturation_rps": tonight}, baseline)
    scaled = check_regression({"saturation_rps": tonight * scale},
                              [dict(run, saturation_rps=run["saturation_rps"] * scale) for run in baseline])
    assert plain.verdict == scaled.verdict
    if plain.regressed:  # a night even lower regresses too, and the sentence's numbers agree with the verdict
        assert check_regression({"saturation_rps": tonight * 0.9}, baseline).regressed
        row = plain.figures[0]
        assert -row.change_pct > row.noise_pct and -row.change_pct >= 10


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(min_value=-5, max_value=5), min_size=6, max_size=25),
       k=st.integers(min_value=1, max_value=3))
def test_a_look_is_a_t_statistic_on_the_baseline_nights(values, k):
    found = alarm.look(values, k, min_nights=3)
    if found is None:
        return
    base = [values[i] for i in found.baseline]
    assert found.df == len(base) - 1 and len(found.dropped) <= 0.2 * (len(values) - k)
    assert set(found.baseline) | set(found.dropped) == set(range(len(values) - k))
    assert math.log(found.window_level) == pytest.approx(sum(values[-k:]) / k)
    assert 0.0 <= found.pvalue(-1) <= 1.0 and found.pvalue(-1) + found.pvalue(1) == pytest.approx(1.0)


# -- settings -------------------------------------------------------------------------------------------------

def test_the_flow_and_the_benchmark_pass_the_configs_settings_and_a_removed_key_says_what_to_do():
    settings_ = RegressionConfig().alarm_settings()
    assert settings_ == {"threshold": 0.10, "false_alarm_rate": 0.005, "min_runs": 5, "last_n": 20,
                         "window_nights": 3, "canary_threshold": 0.05}
    assert set(settings_) <= set(inspect.signature(check_regression).parameters)
    base = {"target": {"name": "t", "kind": "reference"}, "slo": {"p95_ms": 100}}
    with pytest.raises(ConfigError, match="noise_k was removed.*false_alarm_rate"):
        validate({**base, "regression": {"noise_k": 3}})
    with pytest.raises(ConfigError, match="last_n .* must be at least regression.min_runs"):
        validate({**base, "regression": {"min_runs": 8, "last_n": 6}})
    with pytest.raises(ValueError, match="regression.false_alarm_rate"):
        check_regression({}, [], false_alarm_rate=1.5)


def test_the_operating_p95_brings_its_own_interval_to_the_alarm():
    """A stable CI night alarmed on p95_at_operating_ms, 22.8 -> 120 ms, with "its own interval unknown": the
    operating point's p95_ci is now tonight's interval for that figure, so one window's tail must leave it."""
    from nightcap.analysis.regression_nights import figure_intervals

    head = {"saturation": {"rps": 200.0, "rps_ci": [190.0, 210.0]}, "rps_per_core": 200.0,
            "operating_point": {"p95_ms": 120.0, "p95_ci": [20.0, 190.0]}}
    assert figure_intervals(head)["p95_at_operating_ms"] == [20.0, 190.0]
    assert figure_intervals({"operating_point": {"p95_ci": [20.0, 190.0]}}) == {"p95_at_operating_ms": [20.0, 190.0]}
    assert "p95_at_operating_ms" not in figure_intervals({**head, "operating_point": {"p95_ci": None}})
