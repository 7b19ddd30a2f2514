"""report.md read as an answer (issue 23, item 6): every sentence template checked against its numbers.

Sample summaries are built from typed stage results, as a run builds them (`build_summary`), with the stage
verdicts the parent flow would record: a run where every stage answered, one with inconclusive stages, one with
a failed stage and no answer, and a run of one stage. Each report is checked for its layout (the answer and how
sure it is first, the sections in recipe order, warnings last) and for punctuation, signs and units.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from nightcap.analysis.sizing import ValidationRow
from nightcap.analysis.usl import MIN_R2, fit_usl
from nightcap.results.report import multi_client_line, write_markdown
from nightcap.results.report_lines import (confidence_line, scaling_rows_line, sentence, usl_line, validation_line, verdict_lines,
                                           warning_line)
from nightcap.results.report_sections import TITLES, sizing_text
from nightcap.results.stages import RampResult, ScalingResult, ScalingRow, SizingResult, StageResults
from nightcap.results.summary import build_summary, headline_figures
from nightcap.results.verdicts import close_stages, inconclusive_reason
from nightcap.search.levels import Level, SearchResult
from test_summary_keys import _ctx, _search, full_summary, sparse_summary

RECIPE = ["tune", "single_client", "multi_client", "scaling", "autoscale", "sizing", "regression"]
LOWER_BOUND = "reached search.max_users (16) while throughput still grew"


def _lower_bound(rps: float = 160.0) -> SearchResult:
    level = Level(16, rps, 30.0, 0.0, 2, True, True, False, rps_halfwidth=4.0, batches=4)
    return SearchResult(16, rps, 11, rps * 0.7, 16, rps, levels=[level], stop_reason=LOWER_BOUND, found=False,
                        windows=2, saturation_halfwidth=4.0)


def run_summary(results: StageResults, names: list[str], failed: dict[str, str] | None = None,
                **info: Any) -> dict[str, Any]:
    """What the parent flow records: each stage completed, inconclusive (its result's reason) or failed."""
    stages: dict[str, dict[str, Any]] = {}
    for name in names:
        if failed and name in failed:
            stages[name] = {"status": "failed", "error": failed[name]}
        elif reason := inconclusive_reason(results, name):
            stages[name] = {"status": "inconclusive", "reason": reason}
        else:
            stages[name] = {"status": "completed"}
        stages[name].update(duration_s=2.0, steps=3)
    status = close_stages("completed", stages)
    return build_summary(_ctx(results, stages, **{"status": status, **info}))  # type: ignore[arg-type]


def inconclusive_summary() -> dict[str, Any]:
    """The ramp stopped before its knee (a lower bound), scaling measured one pod count, sizing had no target."""
    fit = fit_usl([1], [160.0])
    results = StageResults(
        single_client=RampResult("single_client", 1, 1, _lower_bound(), 30.0, 0, plot="single_client.png"),
        scaling=ScalingResult([ScalingRow(1, 160.0, 16, 160.0, 1.0, 16, LOWER_BOUND)], fit, fit, 16, [],
                              plots=["scaling_usl.png"]),
        sizing=SizingResult([], None, None, 0.7, 2.0, 1.0, note="no sizing.users or sizing.rps targets configured"))
    return run_summary(results, ["single_client", "scaling", "sizing"])


def one_stage_summary() -> dict[str, Any]:
    results = StageResults(single_client=RampResult("single_client", 1, 1, _search(95.0, 2), 22.0, 0,
                                                    plot="single_client.png"))
    return run_summary(results, ["single_client"])


def samples() -> dict[str, dict[str, Any]]:
    return {"full": full_summary(), "inconclusive": inconclusive_summary(), "failed": sparse_summary(),
            "one stage": one_stage_summary()}


def report_of(summary: dict[str, Any], tmp_path: Path) -> str:
    plots = []
    for name in summary["plots"]:
        (tmp_path / name).write_bytes(b"\x89PNG")
        plots.append(tmp_path / name)
    return write_markdown(summary, tmp_path, plots)


PROSE_FLAWS = [r"\.\.(?!\.)", r" [.,;:]", r",,", r";;", r"\( ", r" \)", r"\bNone\b", r"\bnan\b", r"\+-", r"-\+",
               r"\+−", r"\brps rps\b", r"\S {2,}\S", r"\(\)", r"\bn/a rps\b"]


def prose(text: str) -> list[str]:
    """The report's sentences: not tables, not images, not headings."""
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.startswith(("|", "![", "#"))]


@pytest.mark.parametrize("name", ["full", "inconclusive", "failed", "one stage"])
def test_every_sentence_is_punctuated_once_and_names_no_missing_value(name: str, tmp_path: Path) -> None:
    text = report_of(samples()[name], tmp_path)
    for line in prose(text):
        for flaw in PROSE_FLAWS:
            assert not re.search(flaw, line), (flaw, line)
    assert (tmp_path / "report.md").read_text() == text


@pytest.mark.parametrize("name", ["full", "inconclusive", "failed", "one stage"])
def test_the_answer_and_how_sure_lead_then_sections_in_recipe_order_then_warnings(name: str, tmp_path: Path) -> None:
    summary = samples()[name]
    text = report_of(summary, tmp_path)
    lines = text.splitlines()
    top = lines[2:] if summary.get("failure") else lines
    assert lines[0].startswith("**Run failed**: ") == bool(summary.get("failure"))
    assert top[0].replace("**", "") == summary["answer"] and top[2].startswith("How sure: ")
    headings = [line[3:] for line in lines if line.startswith("## ")]
    assert headings[0] == "Stages"
    order = [RECIPE.index(s["stage"]) for s in summary["sections"]]
    assert order == sorted(order)  # recipe order, whatever ran
    assert [h for h in headings if h not in ("Stages", "Warnings and disagreements", "Trend")] == \
        [s["title"] for s in summary["sections"]]
    if summary["warnings"]:
        assert headings[-1] == "Warnings and disagreements"
        assert "a warning" not in text.split("## Warnings and disagreements")[0].lower()  # nothing before it
    for section in summary["sections"]:  # each plot under its own section
        body = text.split(f"## {section['title']}\n", 1)[1].split("\n## ", 1)[0]
        for plot in section["plots"]:
            assert f"![{Path(plot).stem}]({plot})" in body


def test_an_inconclusive_stage_is_named_first_with_its_reason_and_its_figures_are_not_recorded(tmp_path) -> None:
    summary = inconclusive_summary()
    stages = summary["stages"]
    assert [stages[s]["status"] for s in ("single_client", "scaling", "sizing")] == ["inconclusive"] * 3
    assert summary["status"] == "completed" and summary["verdict"] == "inconclusive"
    assert stages["single_client"]["reason"] == (f"no saturation point was found ({LOWER_BOUND}): 160.0 rps at 16 "
                                                 "users is a lower bound")
    assert stages["scaling"]["reason"].startswith("only 1 replica count was measured")
    assert stages["sizing"]["reason"] == "no sizing.users or sizing.rps targets configured"
    # the answer says it, the figures stay in summary.json, and none is stored or compared
    assert summary["saturation"]["inconclusive"] == stages["single_client"]["reason"]
    assert summary["answer"].endswith("; single_client was inconclusive, so these figures are not recorded for "
                                      "comparison. Inconclusive: single_client, scaling, sizing.")
    assert summary["saturation"]["rps"] == 160.0
    assert set(headline_figures(summary).values()) == {None}
    lines = report_of(summary, tmp_path).splitlines()
    assert lines[4:7] == [f"**Inconclusive**: {s}: {stages[s]['reason']}.  " for s in ("single_client", "scaling",
                                                                                       "sizing")]
    assert "lower bound" in lines[2] and "not recorded for comparison" in lines[2]
    section = "\n".join(lines).split("## Single-client ramp\n", 1)[1]
    assert section.startswith(f"\n**Inconclusive**: {stages['single_client']['reason']}.")


def test_a_failed_stage_is_named_first_and_fails_the_verdict(tmp_path) -> None:
    summary = sparse_summary()
    assert summary["verdict"] == "failed"  # a failed stage beats an inconclusive one
    text = report_of(summary, tmp_path)
    assert text.startswith("**Run failed**: no saturation point was measured: boom\n")
    assert "**Failed**: tune: no candidate met the SLO.  " in text.split("## Stages")[0]
    assert "Tuning chose no pod size (no candidate met the SLO)" in text  # not "tuning chose no candidate met ..."
    assert summary["answer"].endswith("Inconclusive: single_client. Failed: tune.")


def test_the_stage_table_says_why_each_stage_did_not_answer(tmp_path) -> None:
    text = report_of(inconclusive_summary(), tmp_path)
    table = text.split("## Stages\n", 1)[1].split("\n\n", 1)[0]
    assert "| single_client | inconclusive | 2.00 | 3 | no saturation point was found (" in table
    assert "| n/a |" not in table  # a stage that answered has an empty note, not "n/a"


@pytest.mark.parametrize("predicted, measured, words", [
    (284.0, 226.0, "20% below the prediction"),  # issue 23: was "(+26%)"
    (200.0, 230.0, "15% above the prediction"),
    (200.0, 200.4, "as predicted"),
])
def test_predicted_against_measured_says_which_way_the_measurement_is(predicted, measured, words) -> None:
    row = ValidationRow(2, predicted, measured, predicted / measured - 1, 0.7 * predicted)
    line = validation_line(row)
    assert line == f"2 pods: predicted {predicted:.0f} rps, measured {measured:.0f} rps ({words})"


def test_the_sizing_check_against_scaling_is_one_sentence(tmp_path) -> None:
    text = sizing_text(SizingResult([], None, 0.02, 0.7, 2.0, 1.0, validation=[
        ValidationRow(1, 142.0, 140.0, 142 / 140 - 1, 99.4), ValidationRow(2, 284.0, 226.0, 284 / 226 - 1, 198.8)]),
        500.0)
    assert text.endswith("1 pod: predicted 142 rps, measured 140 rps (1% below the prediction); 2 pods: predicted "
                         "284 rps, measured 226 rps (20% below the prediction).")


@pytest.mark.parametrize("ratio, half, words", [
    (1.042, 0.01, "+4.2% (95% interval +3.2% to +5.2%); the single client was the bottleneck"),
    (0.95, 0.01, "-5.0% (95% interval -6.0% to -4.0%); fewer with more generators"),
    (1.004, 0.01, "+0.4% (95% interval -0.6% to +1.4%); one client was enough")])
def test_multi_client_change_has_the_sign_of_multi_minus_single(ratio, half, words) -> None:
    from nightcap.analysis.confidence import Estimate

    ramp = RampResult("multi_client", 2, 1, _search(99.0, 2), 20.0, 0, ratio=Estimate(ratio, half, 3, 2.0))
    line = multi_client_line(ramp)
    assert line is not None and "over 3 pairs of alternating windows" in line and words in line, line


def test_a_usl_that_does_not_fit_says_no_fit_in_one_clause_and_extrapolates_nothing() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    users = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
    rejected = fit_usl(users, 120 + rng.normal(0, 6, len(users)))
    line = usl_line(rejected, "users on one pod", "users", "measure more user levels (search.max_users)")
    assert line == f"USL over users on one pod: no fit: r² {rejected.r2:.2f} is below {MIN_R2:g}, the curve does " \
                   "not follow the measurements"
    assert "peaks" not in line and "σ=" not in line
    few = usl_line(fit_usl([1, 2], [100.0, 190.0]), "replicas", "pods",
                   "measure more replica counts (scaling.max_replicas)")
    assert few == ("USL over replicas: no fit: 2 distinct count(s) measured (1, 2), the USL needs 3 to separate "
                   "contention from coherency; measure more replica counts (scaling.max_replicas)")
    assert not sentence(few).endswith("..")  # issue 23: "... or user levels.."


def test_an_accepted_usl_gives_its_parameters_with_intervals_and_a_retrograde_point_only_with_kappa() -> None:
    linear = usl_line(fit_usl([1, 2, 3], [200.0, 396.0, 606.0]), "replicas", "pods", "")
    assert re.fullmatch(r"USL over replicas: σ=0\.0\d\d ± 0\.\d{3}, κ=0\.0000 \(fixed: the data show no coherency "
                        r"cost\), r²=0\.99\d; no retrograde predicted", linear), linear
    from nightcap.analysis.usl import usl

    n = list(range(1, 13))
    retro = fit_usl(n, [float(usl(k, 100.0, 0.05, 0.02)) for k in n])
    line = usl_line(retro, "replicas", "pods", "")
    assert f"throughput peaks at {retro.predicted_peak_n:.1f} pods and falls from {retro.retrograde_from_n} pods" in line


def test_scaling_rows_say_where_no_level_met_the_slo_instead_of_zero(tmp_path) -> None:
    fit = fit_usl([1, 2], [95.0, 180.0])
    rows = [ScalingRow(1, 95.0, 2, 95.0, 1.0, 4, "flat"),
            ScalingRow(2, 180.0, 4, 90.0, 180 / 190, 8, "flat", efficiency_ci=[0.93, 0.97], pairs=3),
            ScalingRow(3, 0.0, None, 0.0, 0.0, None, "p95 900 ms over the SLO 500 ms at 1 users")]
    summary = run_summary(StageResults(scaling=ScalingResult(rows, fit, fit, 8, [])), ["scaling"])
    text = report_of(summary, tmp_path)
    assert ("Saturation by pod count: 1 pod 95 rps, 2 pods 180 rps (95% of 2 × one pod, 95% interval 93%-97%, 3 "
            "pairs of windows alternating one pod and 2), 3 pods: no level met the SLO.") in text
    assert summary["stages"]["scaling"]["reason"].startswith("no load level met the SLO at 3 replica(s) (p95 900 ms")


def test_an_efficiency_names_the_one_pod_it_was_paired_with() -> None:
    """An unstable pod: 1 pod printed at 128 rps, 2 pods at 322 rps, 77% efficiency against the 209 rps one pod
    gave in the paired windows. Without the denominator the line reads 322 / 256 = 126% against "77%"."""
    rows = [ScalingRow(1, 128.0, 2, 128.0, 1.0, 4, "flat"),
            ScalingRow(2, 322.0, 4, 161.0, 0.77, 8, "flat", efficiency_ci=[0.57, 0.97], pairs=3,
                       paired_one_pod_rps=209.3)]
    line = scaling_rows_line(rows)
    assert "2 pods 322 rps (77% of 2 × 209 rps, one pod in the same pairs, 95% interval 57%-97%" in line
    assert 322 / (2 * 209.3) == pytest.approx(0.77, abs=0.005)  # the line's numbers agree with each other


def test_how_sure_names_the_interval_the_lower_bound_and_disagreements() -> None:
    full = full_summary()
    assert confidence_line(full) == ("How sure: the saturation figure's 95% interval is 95.0-99.0 rps, from 3 fresh "
                                     "windows; two measurements of the pod disagreed after interleaved windows: "
                                     "**unstable**, planned on the lower.")
    assert confidence_line({"saturation": {"rps": None}}) == "How sure: there is no figure to be sure of."
    shaky = {"saturation": {"rps": 50.0, "rps_ci": None, "found": False, "stage": "single_client"},
             "capacity": {"per_pod": {"status": "confirmed", "checks": [{"stage": "multi_client", "outcome": "agrees"}]}},
             "operating_point": {"load": "closed"}, "platform": {"limits_enforced": False},
             "target": {"payload": {"synthetic": True}}}
    assert confidence_line(shaky) == (
        "How sure: the saturation figure has no interval (its level was not measured in sub-windows); it is a lower "
        "bound: the search stopped before the knee; 1 later stage(s) met the pod and found it as confirmed "
        "(multi_client agrees); the operating point's latency was interpolated, not measured at "
        "its rate; CPU and memory limits were not enforced; the request bodies were synthetic.")


def test_warnings_are_one_line_each_and_point_at_their_section() -> None:
    titles = {"scaling": TITLES["scaling"], "tune": TITLES["tune"]}
    assert warning_line("scaling stopped at 1 replica(s): 1.0 allocatable\n cores / 1 CPU per pod", titles) == (
        "Scaling stopped at 1 replica(s): 1.0 allocatable cores / 1 CPU per pod. Detail: section "
        "\"Scaling (throughput per pod)\".")
    assert warning_line("the pod was measured differently by tune and single_client: ...; capacity.per_pod pools "
                        "them", titles).endswith("Detail: `capacity.per_pod` in summary.json.")
    assert warning_line("history store unavailable (disk full)", titles) == "History store unavailable (disk full)."


def test_verdict_lines_keep_the_reasons_case_and_end_once() -> None:
    stages = {"tune": {"status": "completed"}, "autoscale": {"status": "inconclusive", "reason": "the added pods "
              "never became ready within the 32 s of the experiment."}, "scaling": {"status": "failed", "error": "boom"}}
    assert verdict_lines(stages) == [
        "**Inconclusive**: autoscale: the added pods never became ready within the 32 s of the experiment.",
        "**Failed**: scaling: boom."]


def test_sentence_capitalises_prose_but_not_identifiers() -> None:
    assert sentence("tuning chose cpu=0.5") == "Tuning chose cpu=0.5."
    assert sentence("saturation_rps fell 51%") == "saturation_rps fell 51%."
    assert sentence("done.") == "Done." and sentence("") == ""


def test_the_warm_start_line_names_what_was_measured_or_that_nothing_was() -> None:
    """make run, 20:42: a tune warm start refused before measuring read "0 window(s) at []"."""
    from nightcap.results.report import warm_start_line
    from nightcap.results.stages import TuneResult
    from nightcap.search.warm_start import WarmStart

    def line(warm: WarmStart) -> str | None:
        return warm_start_line(StageResults(tune=TuneResult([], 0, 12, 1, [], "", True, None, None, 0.7,
                                                            warm_start=warm)))

    assert line(WarmStart("r1", False, [], 0, "its planner measured 4: the planner runs")) == (
        "warm start: tune refused (run r1, nothing measured for it): its planner measured 4: the planner runs")
    assert line(WarmStart("r1", True, ["cpu=0.5", "cpu=1"], 6, "the choice holds")) == (
        "warm start: tune accepted (run r1, 6 window(s) at cpu=0.5, cpu=1): the choice holds")
    assert line(WarmStart(None, False, reason="off")) is None


def test_the_answer_and_the_per_pod_line_say_where_the_figure_was_measured_and_where_the_knee_is() -> None:
    """make run's answer said "with 2 concurrent users" and the line under it "at 4 user(s)": the knee is at 2 and
    the figure's windows ran on the plateau at 4. Both lines now say both numbers."""
    from nightcap.results.report import answer_line, per_pod_line

    per_pod = {"pod": {"cpu": 0.5, "concurrency": 1}, "replicas": 1, "users": 4, "knee_users": 2, "rps": 123.0,
               "ci": [100.4, 145.6], "status": "confirmed", "stage": "tune", "windows": 6, "window_s": 2.0,
               "checks": [], "unstable": None}
    summary = {"target": {"name": "wine"}, "platform": {"replicas": 1, "cpu": 0.5},
               "saturation": {"rps": 123.0, "users": 2, "rps_ci": [100.4, 145.6], "status": "confirmed",
                              "windows": 6, "found": True},
               "operating_point": {"rps": 86.1, "headroom": 0.7}, "slo_capacity": {"users": 14, "p95_ms": 250},
               "capacity": {"per_pod": per_pod}}
    assert "with 2 concurrent users (the knee; measured at 4) on 1 replica(s)" in answer_line(summary)
    assert "123.0 rps (95% interval 100.4-145.6), measured at 4 user(s) on 1 pod(s) (the knee is at 2)" in \
        (per_pod_line(per_pod) or "")
    same = {**per_pod, "knee_users": 4}
    assert "(the knee" not in (per_pod_line(same) or "")
    assert "(the knee" not in answer_line({**summary, "capacity": {"per_pod": same},
                                           "saturation": {**summary["saturation"], "users": 4}})


def test_a_phase_line_rounds_its_load() -> None:
    from nightcap.results.report import phase_line

    row = {"name": "baseline", "load": 0.643745, "offered_rps": 80.3, "served_rps": 80.3, "planned": 476,
           "dropped": 0, "failures": 0, "error_rate": 0.0, "worst_p95_ms": 120.0}
    assert "(0.64× one pod)" in phase_line(row)


def test_the_table_by_core_count_says_which_layouts_were_never_pushed_past_the_slo() -> None:
    from nightcap.results.report_sections import by_cores_text

    rows = [{"replicas": 1, "slo_users": 14, "slo_exceeded": True}, {"replicas": 2, "slo_users": 5, "slo_exceeded": False}]
    text = by_cores_text(rows)
    assert "At 2 pod(s) no level failed the SLO" in text and "1 pod(s)" not in text
    assert "no level failed" not in by_cores_text(rows[:1])


def _met_at(rate: float, p95_ms: float) -> "OperatingPointCheck":
    from nightcap.analysis.operating_point import RateWindow, check_operating_point
    from test_summary_keys import SLO50

    def measure(r: float) -> RateWindow:
        return RateWindow(r, r, r, r, 10.0, p95_ms, p95_ms + 5, 12.0, int(r * 6), int(r * 6), 0, 0, 0, "ok",
                          ok_ms={10: int(r * 3), int(p95_ms): int(r * 3)})
    return check_operating_point(measure, rate, SLO50)


def test_the_operating_line_is_the_check_the_answer_uses_and_a_replaced_check_says_so(tmp_path) -> None:
    """make run 12-05 05:37: the figure moved by more than 5% after single_client's check and scaling checked
    again; the answer gave that check's p95 (110 ms) while operating_line and the single-client section gave the
    first one's (40 ms), as if it were the run's."""
    from test_summary_keys import KEY, _confirmation, _figure, _search

    first, later = _met_at(70.0, 20.0), _met_at(64.9, 40.0)
    single = RampResult("single_client", 1, 1, _search(95.0, 2), 22.0, 0, operating_check=first,
                        confirmation=_confirmation([98.0, 99.0, 100.0]))
    fit = fit_usl([1, 2], [92.7, 185.0])
    rows = [ScalingRow(n, 92.7 * n, 2, 92.7, 1.0, 4, "flat", 2.0, 3, [0.97, 1.03], 3) for n in (1, 2)]
    results = StageResults(pods={KEY: _figure([100.0, 92.0, 86.0])}, run_pod=KEY, single_client=single,
                           scaling=ScalingResult(rows, fit, fit, 4, []), operating=later, operating_stage="scaling")
    summary = run_summary(results, ["single_client", "scaling"])
    op = summary["operating_point"]
    assert op["rps"] == 64.9 and op["p95_ms"] == 40.0
    assert "64.9 rps planned" in summary["operating_line"] and "p95 40 " in summary["operating_line"]
    assert "(scaling)" in summary["operating_line"] and "p95 20 " not in summary["operating_line"]
    report = report_of(summary, tmp_path)
    single_section = report.split("## Single-client ramp")[1].split("##")[0]
    scaling_section = report.split("## Scaling")[1].split("##")[0]
    assert "p95 20 " in single_section  # what single_client measured stays where it was measured
    assert "The figure moved after this check: scaling checked 64.9 rps again" in single_section
    assert "64.9 rps planned" in scaling_section and "p95 40 " in scaling_section
    # a check that is the run's is not said to be replaced
    results.operating, results.operating_stage = first, "single_client"
    assert "moved after this check" not in report_of(run_summary(results, ["single_client", "scaling"]), tmp_path)


def test_the_tuned_pods_row_gives_its_figure_as_the_run_ends_not_tunes_own_windows(tmp_path) -> None:
    """make run 12-05 05:37: the tuning table gave the chosen pod 99.77 rps (199.55 per core), tune's own three
    fresh windows, while the answer, scaling, sizing and the nightly figures gave 92.78 (185.56 per core) once
    later stages' windows had joined the figure: two figures for one pod in one report."""
    from nightcap.analysis.pod_capacity import PodKey
    from nightcap.analysis.tuning import Candidate, evaluate
    from nightcap.results.stages import TuneResult
    from test_summary_keys import MI, _confirmation, _figure, _search

    chosen = Candidate(0.5, 768 * MI, 1)
    candidates = [evaluate(c, replicas=1, saturation_rps=rps, p95_ms=20.0, cpu_use_pct=99.0, memory_peak_pct=20.0,
                           oom_kills=0, restarts=0, meets_slo=True)
                  for c, rps in ((Candidate(1.0, 768 * MI, 2), 167.4), (chosen, 86.3))]
    key = PodKey(0.5, 768 * MI, 1, 1)
    figure = _figure([100.3, 94.2, 104.8, 77.8, 77.9, 81.9, 101.1, 96.8, 87.8], "tune", 4, key=key)
    tune = TuneResult(candidates, 2, 12, 1, [], "cpu=0.5", True, candidates[1], _search(86.3, 2), 0.7,
                      confirmation=_confirmation([100.3, 94.2, 104.8], 4))
    summary = run_summary(StageResults(pods={key: figure}, run_pod=key, tune=tune), ["tune"])
    rps = summary["capacity"]["per_pod"]["rps"]
    assert rps == pytest.approx(figure.planning.mean, abs=0.01) and abs(rps - 99.77) > 5  # the figure moved
    best = summary["tuning"]["best"]
    assert best["saturation_rps"] == pytest.approx(rps, abs=0.01)
    assert best["rps_per_core"] == pytest.approx(2 * rps, abs=0.02)
    assert best["chosen_on_rps"] == 86.3  # what the choice compared stays beside it
    row = next(r for r in summary["tuning"]["candidates"] if r["cpu"] == 0.5)
    assert row["saturation_rps"] == pytest.approx(rps, abs=0.01) and row["chosen_on_rps"] == 86.3
    assert summary["tuning"]["confirmation"]["rps"] == pytest.approx(99.77, abs=0.01)  # tune's own windows, kept
    table = report_of(summary, tmp_path).split("## Fine-tuning")[1].split("##")[0]
    assert f"| {rps:.2f} | {2 * rps:.2f} |" in table and "99.77" not in table


def test_one_pod_as_sizing_and_autoscaling_plan_on_it_carries_the_rate_the_open_loop_check_held() -> None:
    """A check that missed the SLO at the operating point and backed off: sizing plans on the rate it held, and
    autoscaling caps its phases there (`PerPod.held_share`); a check that held the operating point caps nothing."""
    from nightcap.analysis.operating_point import RateWindow, check_operating_point
    from test_summary_keys import KEY, SLO50, _figure

    def measure(r: float) -> RateWindow:
        p95 = 80.0 if r > 50.0 else 20.0
        return RateWindow(r, r, r, r, 10.0, p95, p95 + 5, 12.0, int(r * 6), int(r * 6), 0, 0, 0, "ok",
                          ok_ms={10: int(r * 3), int(p95): int(r * 3)})

    fig = _figure([100.0, 92.0, 86.0])
    backed = check_operating_point(measure, 70.0, SLO50, backoff_windows=3)
    assert backed.slo_rate_rps == 43.75  # 35 met, 52.5 missed, 43.75 met
    per_pod = StageResults(pods={KEY: fig}, run_pod=KEY, operating=backed).per_pod()
    assert per_pod is not None and per_pod.backed_off
    assert per_pod.slo_rate_rps == pytest.approx(43.75 / KEY.replicas)
    assert per_pod.held_share == pytest.approx(43.75 / KEY.replicas / per_pod.rps)
    held = StageResults(pods={KEY: fig}, run_pod=KEY, operating=_met_at(45.0, 20.0)).per_pod()
    assert held is not None and held.slo_rate_rps == pytest.approx(45.0 / KEY.replicas) and held.held_share is None
    unchecked = StageResults(pods={KEY: fig}, run_pod=KEY).per_pod()
    assert unchecked is not None and unchecked.slo_rate_rps is None and unchecked.held_share is None


def test_the_operating_check_gives_the_rate_the_answer_gives_and_what_arrived_beside_it() -> None:
    """make run 12-05 09:16: the answer said "operate at 55.4 rps" and sizing "the SLO held at 55.4 rps per pod",
    while the single-client section said "54.5 rps offered": Poisson arrivals of a 55.4-rps plan, one rate printed
    two ways. The line now gives the planned rate, with what arrived beside it."""
    from nightcap.analysis.operating_point import RateWindow, check_operating_point
    from nightcap.results.report import check_line
    from test_summary_keys import SLO50

    def measure(r: float) -> RateWindow:  # 2% fewer arrivals than planned, as a Poisson draw may give
        return RateWindow(r, 0.98 * r, 0.98 * r, 0.98 * r, 10.0, 20.0, 25.0, 12.0, int(r * 6), int(r * 6), 0, 0, 0,
                          "ok", ok_ms={10: int(r * 3), 20: int(r * 3)})

    line = check_line(check_operating_point(measure, 55.4, SLO50), "single_client", 1)
    assert line.startswith("operating point verified open loop: 55.4 rps planned (54.3 arrived) for 2 window(s)")


def test_a_prediction_missed_where_the_pairs_scale_says_what_the_pairs_found() -> None:
    """make run: sizing said 2 pods came 22% below 2 x the figure (114 rps) while scaling, from windows that paired
    one pod (79 rps then) with two, said 114%: the pod's rate had moved, not the scaling. The line says both."""
    from nightcap.analysis.sizing import SizingInputs, validate_against_scaling

    pod = SizingInputs(saturation_rps=114.3, headroom=0.7, mean_latency_s=0.015)
    [one, two] = validate_against_scaling(pod, {1: 114.3, 2: 178.51}, {2: (79.0, 1.1445, [0.6725, 1.6165])})
    assert one.paired_one_pod_rps is None and two.paired_one_pod_rps == 79.0
    assert validation_line(two) == ("2 pods: predicted 229 rps, measured 179 rps (22% below the prediction; one pod "
                                    "read 79 rps in the windows paired with these, against which 2 pods scale at "
                                    "114%, 95% interval 67%-162%)")
