"""The night at a glance (nightcap/results/glance.py): the flow run's name and the answer artifact's text.

Nights written as summary.json has them (a first night, a steady one, a regressed one, one whose operating rate
missed the SLO, one not verified open loop) and summaries built as a run builds them (tests/results/test_summary_keys.py).
That the artifact is published first in a real run, under its key, is held by tests/nightly/test_prefect_deployment.py
and tests/flows/test_regression_flow.py. Milliseconds.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

from nightcap.results.glance import (NO_EARLIER_NIGHT, answer_description, answer_markdown, night_name,
                                     operating_words, pending_markdown, verdict_words)
from test_summary_keys import full_summary, sparse_summary, verified_summary

FIRST_NIGHT: dict[str, Any] = {
    "run_id": "20261203-020000-abc123", "status": "completed", "verdict": "completed",
    "target": {"name": "wine-mlflow", "kind": "mlflow", "payload": {"source": "its input example", "synthetic": False}},
    "platform": {"kind": "local", "replicas": 1, "cpu": 1.0, "concurrency": 1, "limits_enforced": True},
    "saturation": {"rps": 120.4, "users": 2, "found": True, "rps_ci": [116.8, 124.0], "replicas": 1,
                   "stage": "single_client", "inconclusive": None, "status": "confirmed", "windows": 4},
    "operating_point": {"rps": 84.28, "users": 1, "headroom": 0.7, "rps_ci": [81.8, 86.8], "load": "open",
                        "p95_ms": 212.0, "meets_slo": True},
    "slo_capacity": {"users": 3, "rps": 121.0, "rate_rps": None, "p95_ms": 250, "max_error_rate": 0.01},
    "capacity": {"per_pod": {"pod": {"cpu": 1.0, "memory": 1073741824, "concurrency": 1}, "replicas": 1, "users": 2,
                             "rps": 120.4, "ci": [116.8, 124.0], "status": "confirmed", "stage": "single_client",
                             "windows": 4, "window_s": 10, "checks": [], "unstable": None}},
    "stages": {"single_client": {"status": "completed"}, "regression": {"status": "completed"}},
    "regression": {"verdict": "insufficient history", "nights_analysed": 1, "baseline_run_ids": [], "cause": None,
                   "message": "insufficient history: 0 comparable completed night(s), need 5 before any figure can "
                              "alarm; tonight's figures build the baseline",
                   "figures": [{"figure": "saturation_rps", "unit": "rps", "tonight": 120.4, "baseline_mean": None,
                                "change_pct": None, "window_mean": None, "verdict": "not enough history"}]},
}


def night(**changes: Any) -> dict[str, Any]:
    """The first night with some blocks replaced or updated (a dict value updates the block, None removes it)."""
    summary = copy.deepcopy(FIRST_NIGHT)
    for key, value in changes.items():
        if value is None:
            summary.pop(key, None)
        elif isinstance(value, dict) and isinstance(summary.get(key), dict):
            summary[key].update(value)
        else:
            summary[key] = value
    return summary


def regression(verdict: str, *figures: dict[str, Any], cause: str | None = None, earlier: int = 3) -> dict[str, Any]:
    return {"verdict": verdict, "message": "(the check's full message)", "nights_analysed": earlier + 1,
            "baseline_run_ids": [f"n{i}" for i in range(earlier)], "cause": cause, "figures": list(figures)}


def figure(name: str, unit: str, base: float, tonight: float, change_pct: float, verdict: str) -> dict[str, Any]:
    return {"figure": name, "unit": unit, "tonight": tonight, "baseline_mean": base, "window_mean": tonight,
            "change_pct": change_pct, "verdict": verdict}


def test_the_run_is_named_by_target_and_the_local_date_it_started() -> None:
    assert night_name("wine-mlflow", datetime(2026, 12, 3, 2, 0, tzinfo=timezone.utc)) == "wine-mlflow 2026-12-03"
    # 23:30 in New York is already the 4th in UTC: the night is the date where the run started
    evening = datetime(2026, 12, 3, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert night_name("reference", evening) == "reference 2026-12-03"


def test_a_first_night_reads_in_four_lines() -> None:
    assert answer_markdown(FIRST_NIGHT, "the `wine-mlflow-summary` artifact and report.md") == "\n".join([
        "### wine-mlflow: completed",
        "",
        "- **One pod (1.00 CPU, concurrency 1): 120.4 rps** (95% interval 116.8–124.0, ±3%).",
        "- **Operate at 84.3 rps** (70% of saturation on 1 pod): verified within the SLO (open-loop p95 212 ms, "
        "p95 ≤ 250 ms).",
        "- **How sure**: **confirmed** on 4 fresh window(s); its 95% interval is ±3% of the figure.",
        f"- **Against earlier nights**: {NO_EARLIER_NIGHT}; tonight starts the history.",
        "",
        "Run 20261203-020000-abc123; every stage, table and plot: the `wine-mlflow-summary` artifact and report.md.",
    ])


def test_a_steady_night_quotes_the_capacity_against_its_baseline() -> None:
    steady = night(regression=regression("ok", figure("saturation_rps", "rps", 119.9, 120.4, 0.42, "ok"),
                                         figure("p95_at_operating_ms", "ms", 200.0, 212.0, 6.0, "ok")))
    assert verdict_words(steady) == ("**Against earlier nights**: **ok** against 3 earlier night(s): saturation_rps "
                                     "+0.4% (119.9 → 120.4 rps), within the noise.")
    assert answer_markdown(steady).startswith("### wine-mlflow: completed\n")


def test_a_regressed_night_names_each_figure_that_moved_and_why() -> None:
    regressed = night(regression=regression(
        "regressed", figure("saturation_rps", "rps", 198.895805, 99.87, -49.78778, "regressed"),
        figure("p95_at_operating_ms", "ms", 23.709498, 42.458, 79.075914, "regressed"),
        figure("slo_users", "users", 16, 16, 0.0, "ok"), cause="model"))
    assert verdict_words(regressed) == (
        "**Against earlier nights**: **regressed** against 3 earlier night(s): "
        "saturation_rps −50% (198.9 → 99.9 rps); "
        "p95_at_operating_ms +79% (23.7 → 42.5 ms) (the model moved; the platform canary held).")
    text = answer_markdown(regressed)
    assert text.startswith("### wine-mlflow: completed, regressed\n")
    assert "slo_users" not in text  # only what moved
    assert answer_description(regressed) == "wine-mlflow: 120.4 rps per pod ±3%, operate at 84.3 rps; regressed"


def test_a_young_history_and_a_night_without_the_check_say_so() -> None:
    young = night(regression={"verdict": "insufficient history", "nights_analysed": 3, "baseline_run_ids": [],
                              "message": "insufficient history: 2 comparable completed night(s), need 5 before any "
                                         "figure can alarm; tonight's figures build the baseline"})
    assert verdict_words(young) == ("**Against earlier nights**: not judged yet; insufficient history: 2 comparable "
                                    "completed night(s), need 5 before any figure can alarm; tonight's figures build "
                                    "the baseline.")
    assert "not checked tonight" in verdict_words(night(regression=None))
    assert answer_description(FIRST_NIGHT).endswith(f"; {NO_EARLIER_NIGHT}")


def test_the_operating_rate_says_whether_the_slo_was_verified_there() -> None:
    missed = night(operating_point={"meets_slo": False, "p95_ms": 412.0}, slo_capacity={"rate_rps": 60.0})
    assert operating_words(missed) == (
        "**Operate at 60.0 rps**: the highest rate verified within the SLO (p95 ≤ 250 ms); at 84.3 rps (70% of "
        "saturation on 1 pod) the SLO did not hold (open-loop p95 412 ms).")
    nothing = night(operating_point={"meets_slo": False, "p95_ms": 412.0})
    assert operating_words(nothing).startswith("**No rate verified within the SLO** (p95 ≤ 250 ms)")
    closed = night(operating_point={"load": "closed", "p95_ms": 24.0, "meets_slo": None})
    assert operating_words(closed) == ("**Operate at 84.3 rps** (70% of saturation on 1 pod): **not verified** at that "
                                       "rate (no open-loop check); its p95 24 ms is interpolated from the ramp.")


def test_how_sure_names_what_weakens_the_figure() -> None:
    weak = night(saturation={"found": False}, platform={"limits_enforced": False},
                 target={"payload": {"synthetic": True}})
    text = answer_markdown(weak)
    assert "a lower bound (the search stopped before the knee)" in text
    assert "CPU and memory limits were not enforced" in text and "the request bodies were synthetic" in text
    wide = night(capacity={"per_pod": {**FIRST_NIGHT["capacity"]["per_pod"], "ci": [96.0, 144.8]}})
    assert "its 95% interval is ±20% of the figure" in answer_markdown(wide)


def test_summaries_built_as_a_run_builds_them() -> None:
    full = full_summary()  # unstable pod, an operating point backed off, a regression against eight nights
    per_pod = full["capacity"]["per_pod"]
    text = answer_markdown(full)
    assert per_pod["status"] == "unstable" and "**unstable**" in text
    assert f": {per_pod['rps']:,.1f} rps** (95% interval {per_pod['ci'][0]:.1f}–{per_pod['ci'][1]:.1f}" in text
    assert full["regression"]["verdict"] == "regressed" and "**regressed** against" in text
    assert "saturation_rps −30%" in text

    verified = answer_markdown(verified_summary())  # tune confirmed the pod; no regression stage
    assert "**confirmed** on 3 fresh window(s)" in verified and "not checked tonight" in verified

    sparse = sparse_summary()  # no answer: the run failed, saying why first
    text = answer_markdown(sparse)
    assert "**No answer tonight**: no saturation point was measured: boom" in text
    assert "there is no figure to be sure of" in text and "not judged yet; no history store." in text
    assert "Stages that did not answer: tune, single_client." in text
    assert answer_description(sparse) == "golden: no answer tonight"

    for summary in (full, verified_summary(), sparse, FIRST_NIGHT):
        for text in (answer_markdown(summary), answer_description(summary)):
            assert text.count("**") % 2 == 0, text  # bold marks balanced: the UI renders what was meant
        assert len(answer_description(summary)) <= 250


def test_while_the_run_measures_the_answer_says_so_and_where_last_night_is() -> None:
    text = pending_markdown("wine-mlflow", "20261203-020000-abc123", ["tune", "single_client"])
    assert text.startswith("### wine-mlflow: running\n")
    assert "Run 20261203-020000-abc123 is measuring (tune, single_client)" in text
    assert "previous version of this artifact is the last night's answer" in text and "`nightcap cleanup`" in text
