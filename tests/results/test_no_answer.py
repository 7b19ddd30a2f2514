"""No answer is not success: the one-line reason a run without a saturation point gives (milliseconds)."""

from __future__ import annotations

from nightcap.results.no_answer import no_answer_reason, top_errors
from nightcap.steps import StepRow


def row(stage: str = "single_client", users: int = 1, requests: int = 100, failures: int = 0, note: str = "",
        valid: bool = True) -> StepRow:
    return StepRow(stage=stage, step=1, replicas=1, cpu=1.0, memory=None, concurrency=1, users=users,
                   requests=requests, failures=failures, error_rate=failures / requests if requests else 0.0,
                   note=note, valid=valid)


def summary(stages: dict[str, str], rps: float | None = None, stop_reason: str = "") -> dict:
    out: dict = {"stages": {k: {"status": v} for k, v in stages.items()}, "saturation": {"rps": rps}}
    for name in stages:
        out[name] = {"saturation": {"rps": rps, "stop_reason": stop_reason}}
    return out


def test_every_request_failed_names_the_status() -> None:
    steps = [row(users=1, failures=100, note="errors: LocustBadStatusCode(code=400) x100"),
             row(users=2, failures=100, note="errors: LocustBadStatusCode(code=400) x98; ConnectionResetError() x2")]
    reason = no_answer_reason(summary({"single_client": "completed"}), steps)
    assert reason == "every request failed: 400 Bad Request x198, ConnectionResetError() x2"


def test_a_found_saturation_or_no_searching_stage_is_an_answer() -> None:
    assert no_answer_reason(summary({"single_client": "completed"}, rps=120.0), [row()]) is None
    assert no_answer_reason(summary({"sizing": "completed", "regression": "completed"}), []) is None
    assert no_answer_reason(summary({"single_client": "skipped"}), []) is None
    tuned = summary({"tune": "completed"})
    tuned["tuning"] = {"best": {"cpu": 0.25, "saturation_rps": 127.8}}  # a tune-only run answers per pod size
    assert no_answer_reason(tuned, [row(stage="tune")]) is None
    scaled = summary({"scaling": "completed"})
    scaled["scaling"] = {"rows": [{"replicas": 1, "saturation_rps": 200.0}]}
    assert no_answer_reason(scaled, [row(stage="scaling")]) is None


def test_slo_breach_at_the_first_level_gives_the_search_stop_reason() -> None:
    reason = no_answer_reason(summary({"single_client": "completed"}, stop_reason="p95 52 ms > SLO 10 ms at 1 users"),
                              [row()])
    assert reason == "no load level met the SLO: p95 52 ms > SLO 10 ms at 1 users"


def test_some_failures_are_counted_beside_the_stop_reason() -> None:
    steps = [row(failures=20, note="errors: BadStatusCode('http://x', code=503) x20")]
    reason = no_answer_reason(summary({"single_client": "completed"}, stop_reason="errors 20% at 1 users"), steps)
    assert reason == "no load level met the SLO: errors 20% at 1 users (20 of 100 requests failed: 503 Service Unavailable x20)"


def test_nothing_measured_names_the_stage_error() -> None:
    s = summary({"single_client": "failed"})
    s["stages"]["single_client"]["error"] = "the load generator did not start"
    assert no_answer_reason(s, [row(valid=False)]) == (
        "no load step was measured (single_client: the load generator did not start)")
    assert no_answer_reason(summary({"tune": "completed"}), [row(stage="tune", requests=0)]) == (
        "no request completed in any measured window")
    assert no_answer_reason(summary({"multi_client": "completed"}), [row(stage="multi_client")]) == (
        "no load level met the SLO")


def test_top_errors_sums_over_rows_and_skips_other_notes() -> None:
    steps = [row(note="a load generator worker died; errors: X() x3"), row(note="errors: X() x4; rps 900 above load.max_rps")]
    assert top_errors(steps) == [("X()", 7)]
