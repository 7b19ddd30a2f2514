"""The regression check alarms on a real drop and stays quiet on noise and on a short history."""

from __future__ import annotations

import json
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from nightcap.analysis.regression import FIGURES, check_regression

STABLE = [  # five nights of a steady reference target, with a little noise
    {"run_id": f"night-{i}", "saturation_rps": rps, "rps_per_core": rps / 2, "p95_at_operating_ms": p95,
     "slo_users": users}
    for i, (rps, p95, users) in enumerate(
        [(210.0, 101.0, 40), (212.0, 99.0, 41), (214.0, 100.0, 40), (208.0, 102.0, 39), (213.0, 100.0, 40)]
    )
]


def test_thirty_percent_slower_run_regresses_with_the_right_message():
    tonight = {"saturation_rps": 146.3, "rps_per_core": 73.15, "p95_at_operating_ms": 100.0, "slo_users": 40}
    result = check_regression(tonight, STABLE, threshold=0.10, noise_k=3.0, min_runs=2)
    assert result.verdict == "regressed" and result.regressed
    assert result.baseline_run_ids == [f"night-{i}" for i in range(5)]
    by_name = {row.figure: row for row in result.figures}
    assert by_name["saturation_rps"].verdict == "regressed"
    assert by_name["saturation_rps"].baseline_median == 212.0
    assert round(by_name["saturation_rps"].change_pct) == -31
    assert by_name["p95_at_operating_ms"].verdict == "ok"
    assert result.message.startswith("saturation_rps fell 31% (212.0 → 146.3 rps), beyond the 10% threshold")
    assert "rps_per_core fell 31% (106.0 → 73.2 rps/core)" in result.message
    assert "noise band (±" in result.message
    json.dumps(result.to_dict(), allow_nan=False)  # goes into summary.json as is


def test_latency_rise_regresses_because_lower_is_better():
    tonight = {"saturation_rps": 212.0, "rps_per_core": 106.0, "p95_at_operating_ms": 160.0, "slo_users": 40}
    result = check_regression(tonight, STABLE)
    assert result.verdict == "regressed"
    assert result.message.startswith("p95_at_operating_ms rose 60% (100.0 → 160.0 ms)")


def test_run_within_noise_passes():
    tonight = {"saturation_rps": 205.0, "rps_per_core": 103.0, "p95_at_operating_ms": 104.0, "slo_users": 39}
    result = check_regression(tonight, STABLE)
    assert result.verdict == "ok", result.message
    assert all(row.verdict == "ok" for row in result.figures)


def test_noisy_history_widens_the_band():
    noisy = [{"run_id": str(i), "saturation_rps": v} for i, v in enumerate([150, 260, 200, 140, 250, 210])]
    # 25% below the median: beyond the 10% threshold, but within what these nights usually do
    result = check_regression({"saturation_rps": 153.0}, noisy)
    row = result.figures[0]
    assert row.verdict == "ok" and row.noise_pct > 25
    assert result.verdict == "ok"


def test_improvement_is_reported_not_failed():
    tonight = {"saturation_rps": 300.0, "rps_per_core": 150.0, "p95_at_operating_ms": 60.0, "slo_users": 60}
    result = check_regression(tonight, STABLE)
    assert result.verdict == "ok"
    assert {row.verdict for row in result.figures} == {"improved"}


def test_insufficient_history_never_fails():
    tonight = {"saturation_rps": 1.0, "rps_per_core": 0.5, "p95_at_operating_ms": 9999.0, "slo_users": 1}
    for baseline in ([], STABLE[:1]):
        result = check_regression(tonight, baseline, min_runs=2)
        assert result.verdict == "insufficient history" and not result.regressed
        assert "need 2" in result.message
    # enough runs, but tonight measured none of the figures they have
    result = check_regression({}, STABLE)
    assert result.verdict == "insufficient history"
    assert {row.verdict for row in result.figures} == {"not measured"}


def test_figure_missing_from_old_runs_is_not_enough_history():
    old = [{"run_id": str(i), "saturation_rps": 210.0} for i in range(3)]
    result = check_regression({"saturation_rps": 209.0, "slo_users": 5}, old)
    by_name = {row.figure: row.verdict for row in result.figures}
    assert by_name["saturation_rps"] == "ok" and by_name["slo_users"] == "not enough history"
    assert result.verdict == "ok"


figure_values = st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(values=st.fixed_dictionaries({f.name: figure_values for f in FIGURES}),
       n=st.integers(min_value=0, max_value=10),
       threshold=st.floats(min_value=0.001, max_value=0.9), k=st.floats(min_value=0, max_value=10))
def test_identical_runs_never_regress(values, n, threshold, k):
    baseline = [dict(values, run_id=f"r{i}") for i in range(n)]
    result = check_regression(values, baseline, threshold=threshold, noise_k=k, min_runs=2)
    assert not result.regressed
    assert result.verdict == ("ok" if n >= 2 else "insufficient history")


@settings(max_examples=200, deadline=None)
@given(history=st.lists(figure_values, min_size=2, max_size=10), scale=st.floats(min_value=0.01, max_value=100))
def test_better_than_every_night_never_regresses_and_scale_does_not_matter(history, scale):
    baseline = [{"run_id": str(i), "saturation_rps": v, "p95_at_operating_ms": v} for i, v in enumerate(history)]
    tonight = {"saturation_rps": max(history), "p95_at_operating_ms": min(history)}
    assert not check_regression(tonight, baseline).regressed
    worse = {"saturation_rps": min(history) * 0.5}
    plain = check_regression(worse, baseline)
    scaled = check_regression(
        {"saturation_rps": worse["saturation_rps"] * scale},
        [dict(run, saturation_rps=run["saturation_rps"] * scale) for run in baseline],
    )
    assert plain.verdict == scaled.verdict


def test_latency_changes_below_the_measurement_resolution_never_regress():
    """Nights with identical p95 have no spread; a 2.5 ms change is Locust's ms rounding, not a regression."""
    baseline = [{"run_id": str(i), "saturation_rps": 200.0, "p95_at_operating_ms": 22.0} for i in range(3)]
    ok = check_regression({"saturation_rps": 200.0, "p95_at_operating_ms": 24.5}, baseline)
    assert not ok.regressed
    bad = check_regression({"saturation_rps": 200.0, "p95_at_operating_ms": 40.0}, baseline)
    assert bad.regressed and "p95_at_operating_ms" in bad.message


# -- change points: the check run night after night, each night's verdict stored for the next ------------------

def nightly(series: list[float], *, last_n: int = 7, figure: str = "saturation_rps") -> list:
    """Run the check every night over `series`, storing each night's verdict like the history store does."""
    history: list[dict] = []  # newest first, as HistoryStore.comparable_runs returns them
    results = []
    for i, value in enumerate(series):
        tonight = {"run_id": f"night-{i + 1}", figure: value}
        result = check_regression(tonight, history, last_n=last_n, min_runs=2)
        results.append(result)
        history.insert(0, dict(tonight, started_at=f"2026-11-{i + 1:02d}T02:00:00", summary={"regression": result.to_dict()}))
    return results


def series_of(n: int = 14, **kw) -> list[float]:
    from tests.test_change_points import nights

    return nights(n, **kw)


def test_a_step_is_reported_once_at_the_night_it_happened_and_then_is_the_new_level():
    results = nightly(series_of(drop_at=9))
    verdicts = [r.verdict for r in results]
    assert verdicts == ["insufficient history"] * 2 + ["ok"] * 6 + ["regressed"] + ["ok"] * 5, verdicts
    night9 = results[8].figures[0]
    assert night9.change_point["night"] == 9 and night9.change_point["tonight"] and night9.change_point["new"]
    last = results[-1]
    (point,) = last.change_points
    assert (point["figure"], point["night"], point["run_id"], point["new"]) == ("saturation_rps", 9, "night-9", False)
    assert point["started_at"].startswith("2026-11-09")
    assert point["mean_before"] > 190 and point["mean_after"] < 165 and point["pvalue"] < 0.001
    assert last.figures[0].baseline == "5 night(s) since the level change at night 9"
    json.dumps(last.to_dict(), allow_nan=False)


def test_noise_alone_raises_no_change_point_alarm_night_after_night():
    """(The median check alone still alarms on some of these: seeds 101, 103, 105, 109, 113, 115, 118.)"""
    for seed in range(20):
        results = nightly(series_of(seed=100 + seed))
        assert not any("changed level" in r.message for r in results), [r.message for r in results]
        assert results[-1].change_points == []


def test_a_slow_drift_regresses_once_it_adds_up_though_no_median_check_alarms():
    drift = [v * (1 - 0.015 * i) for i, v in enumerate(series_of(20, noise=0.02, seed=3))]
    results = nightly(drift)
    regressed = [i + 1 for i, r in enumerate(results) if r.regressed]
    assert len(regressed) == 1, [r.message for r in results]
    message = results[regressed[0] - 1].message
    assert message.startswith("saturation_rps changed level −") and "first seen tonight" in message, message
    # the median of the last seven nights never falls behind by more than the threshold
    for i in range(2, len(drift)):
        baseline = sorted(drift[max(0, i - 7):i])[len(drift[max(0, i - 7):i]) // 2]
        assert drift[i] > baseline * 0.9


def test_a_change_a_night_already_reported_is_not_reported_again():
    from nightcap.analysis.change_points import find_change_points

    values = series_of(9, drop_at=9, drop=0.15, seed=7)
    assert find_change_points(values) == []  # one lower night is not yet a level change...
    tonight = values[-1] * 0.99
    assert [p.index for p in find_change_points([*values, tonight])] == [8]  # ...two are
    runs = [{"run_id": f"night-{i + 1}", "saturation_rps": v} for i, v in enumerate(values)][::-1]
    fresh = check_regression({"saturation_rps": tonight}, runs, last_n=7).figures[0]
    assert fresh.change_point["new"] and fresh.verdict == "regressed"
    runs[0]["summary"] = {"regression": {"figures": [{"figure": "saturation_rps", "verdict": "regressed"}]}}
    known = check_regression({"saturation_rps": tonight}, runs, last_n=7).figures[0]
    assert not known.change_point["new"] and known.verdict == "ok", known.message


def test_a_level_change_smaller_than_the_threshold_does_not_split_the_baseline():
    """From a run of tests/test_regression_flow.py: night 1 was 6% under nights 2-4, which agree within 0.1%."""
    runs = [{"run_id": f"night-{i + 1}", "saturation_rps": v}
            for i, v in enumerate([199.68, 211.8, 211.71, 211.56])][::-1]
    row = check_regression({"saturation_rps": 107.82}, runs, last_n=7).figures[0]
    assert row.baseline_median == statistics.median([199.68, 211.8, 211.71, 211.56])
    assert row.baseline == "the last 4 night(s)" and row.change_point["tonight"]


def test_report_rows_name_the_level_change():
    from nightcap.results.report import table

    results = nightly(series_of(drop_at=9))
    rows = results[-1].table_rows()
    assert rows[0]["figure"] == "saturation_rps" and rows[0]["verdict"] == "ok"
    assert rows[0]["level change"].startswith("night 9 of 14 (2026-11-09): 2") and "p=" in rows[0]["level change"]
    assert rows[0]["baseline nights"] == "5 night(s) since the level change at night 9"
    assert results[8].table_rows()[0]["level change"].startswith("tonight: ")
    assert "| figure | tonight | baseline |" in table(rows)


def test_over_many_histories_a_step_is_reported_once_and_noise_raises_no_change_point_alarm():
    """The rates docs/nightly.md quotes (200 seeded series each; ~5 s)."""
    once = at_night_9 = named = 0
    for seed in range(200):
        results = nightly(series_of(drop_at=9, seed=7000 + seed))
        alarms = [i + 1 for i, r in enumerate(results) if r.regressed and i >= 8]
        once += len(alarms) == 1
        at_night_9 += alarms[:1] == [9]
        point = results[-1].figures[0].change_point
        named += bool(point and point["night"] == 9)
    assert once >= 170 and at_night_9 >= 150 and named >= 185, (once, at_night_9, named)  # 179, 158, 190 here
    median_alarms = change_point_alarms = 0
    for seed in range(200):
        for result in nightly(series_of(seed=5000 + seed)):
            if result.regressed:
                change_point_alarms += "changed level" in result.message
                median_alarms += "changed level" not in result.message
    assert change_point_alarms == 0 and median_alarms <= 60, (change_point_alarms, median_alarms)  # 0, 50 here
