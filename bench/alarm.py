"""The nightly alarm on simulated nights: false alarms per 100 nights, and how soon a real change is caught.

Pure computation (no load, no server, no Prefect): run it freely. Seeded, so it prints the same figures on
every machine. Each simulated night goes through `check_regression` with `RegressionConfig().alarm_settings()`
(the function and settings the regression flow uses), and is then stored the way the history store keeps a
night: its figures, and a summary with the headline stage, `saturation.rps_ci`, the canary block and that
night's own `regression` block (so a reported change restarts the baseline, as it does in the flow).

A simulated night: saturation rps around 200, rps per core = saturation / 2 cores (the same test: counted
once), SLO users around 40 (whole users) and p95 at the operating point around 80 ms (whole ms, higher is
worse). Each figure's night-to-night noise has the row's relative SD; half of its variance is a night factor
shared by the figures (the machine), p95 leans the other way. `saturation.rps_ci` is ±1.96 x the noise / 2:
a night's own interval is narrower than the spread between nights, as on real machines. A step multiplies the
throughput figures and SLO users from its night on; a platform change multiplies the canary too (2% noise).

    .venv/bin/python -m bench.alarm            # every row (~2-3 minutes on one core)
    .venv/bin/python -m bench.alarm "null"     # rows whose name contains "null"
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from bench.common import Table
from nightcap.analysis.regression import check_regression
from nightcap.analysis.regression_result import IMPROVED, REGRESSED
from nightcap.config_history import RegressionConfig

SEED = 20261203
NIGHTS = 37  # the series length the issue measured the old rule on
SERIES = 400
SETTINGS = RegressionConfig().alarm_settings()
START = datetime(2026, 11, 1, 2, 0)
CANARY_SETTINGS = {"work_kb": 2048, "cpu": 0.5, "slots": 2, "users": 4}


@dataclass(frozen=True)
class Scenario:
    name: str
    noise: float  # relative SD of each figure between nights
    change: float = 0.0  # the model's capacity x (1 + change) from night `at` on
    at: int | None = None  # 1-based night the change starts
    drift: float = 0.0  # the model's capacity x (1 + drift) per night from night `at` on
    outlier: float = 0.0  # one night (`outlier_at`) x (1 + outlier), then back
    outlier_at: int | None = None
    platform: float = 0.0  # the platform (canary and model together) x (1 + platform) from night `at` on
    canary: bool = False
    tails: float | None = None  # Student-t noise with this many degrees of freedom (scaled to `noise`)
    series: int = SERIES


SCENARIOS = [
    Scenario("null, 2% noise", 0.02),
    Scenario("null, 5% noise", 0.05),
    Scenario("null, 10% noise", 0.10),
    Scenario("null, 15% noise", 0.15),
    Scenario("null, 10% noise, heavy tails (t, 4 df)", 0.10, tails=4),
    Scenario("null, 5% noise, one night -30% (night 15)", 0.05, outlier=-0.30, outlier_at=15),
    Scenario("step -15% at night 21, 5% noise", 0.05, change=-0.15, at=21),
    Scenario("step -15% at night 9 (8 nights before), 5% noise", 0.05, change=-0.15, at=9),
    Scenario("step -15% at night 21 after a -30% night 12, 5% noise", 0.05, change=-0.15, at=21, outlier=-0.30,
             outlier_at=12),
    Scenario("step -10% at night 21, 5% noise", 0.05, change=-0.10, at=21),
    Scenario("step -20% at night 21, 5% noise", 0.05, change=-0.20, at=21),
    Scenario("step -15% at night 21, 2% noise", 0.02, change=-0.15, at=21),
    Scenario("step -15% at night 21, 10% noise", 0.10, change=-0.15, at=21),
    Scenario("step -30% at night 21, 10% noise", 0.10, change=-0.30, at=21),
    Scenario("drift -1%/night from night 11, 5% noise", 0.05, drift=-0.01, at=11),
    Scenario("model step -15% at night 21, canary steady, 5% noise", 0.05, change=-0.15, at=21, canary=True),
    Scenario("platform -15% at night 21 (canary too), 5% noise", 0.05, platform=-0.15, at=21, canary=True),
]
COLUMNS = ["scenario", "noise", "series", "judged nights", "false alarms /100 nights", "series with a false alarm %",
           "false improvements /100 nights", "caught night 1 %", "within 2 %", "within 3 %", "ever %",
           "median nights to alarm", "note"]


def simulate(s: Scenario, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One series of nights: each tonight's dict as the flow hands it to the check."""
    nights = []
    for night in range(1, NIGHTS + 1):
        model = platform = 1.0
        if s.at is not None and night >= s.at:
            model *= (1 + s.change) * (1 + s.drift) ** (night - s.at + 1)
            platform *= 1 + s.platform
        if s.outlier_at == night:
            model *= 1 + s.outlier
        shared, own = _noise(rng, s, 2), _noise(rng, s, 3)
        e = math.sqrt(0.5) * shared[0] + math.sqrt(0.5) * own  # half the variance shared by the figures
        e[2] = -math.sqrt(0.5) * shared[0] + math.sqrt(0.5) * own[2]  # a slower night: higher p95
        sat = 200.0 * model * platform * math.exp(s.noise * e[0])
        half = 1.96 * s.noise / 2
        tonight: dict[str, Any] = {
            "run_id": f"night-{night}", "saturation_rps": sat, "rps_per_core": sat / 2,
            "slo_users": float(round(40.0 * model * platform * math.exp(s.noise * e[1]))),
            "p95_at_operating_ms": float(round(80.0 / platform * math.exp(s.noise * e[2]))),
            "intervals": {"saturation_rps": [sat * math.exp(-half), sat * math.exp(half)],
                          "rps_per_core": [sat / 2 * math.exp(-half), sat / 2 * math.exp(half)]},
        }
        if s.canary:
            canary = 400.0 * platform * math.exp(0.02 * shared[1])
            tonight["canary_rps_per_core"] = canary
            tonight["intervals"]["canary_rps_per_core"] = [canary * math.exp(-0.0196), canary * math.exp(0.0196)]
        nights.append(tonight)
    return nights


def _noise(rng: np.random.Generator, s: Scenario, n: int) -> np.ndarray:
    if s.tails is None:
        return rng.standard_normal(n)
    return rng.standard_t(s.tails, n) / math.sqrt(s.tails / (s.tails - 2))  # SD 1


def stored(tonight: dict[str, Any], result: Any) -> dict[str, Any]:
    """The night as `HistoryStore.comparable_runs` returns it: figures, and the summary kept with the run."""
    run = {k: v for k, v in tonight.items() if k != "intervals"}
    summary: dict[str, Any] = {
        "saturation": {"stage": "single_client", "rps": tonight["saturation_rps"],
                       "rps_ci": tonight["intervals"]["saturation_rps"]},
        "stages": {"single_client": {"status": "completed"}, "regression": {"status": "completed"}},
        "regression": result.to_dict()}
    if "canary_rps_per_core" in tonight:
        summary["canary"] = {"rps_per_core": tonight["canary_rps_per_core"], "settings": CANARY_SETTINGS,
                             "rps_ci": tonight["intervals"]["canary_rps_per_core"]}
    night = int(tonight["run_id"].removeprefix("night-"))
    return {**run, "started_at": (START + timedelta(days=night - 1)).isoformat(), "summary": summary}


def run_series(nights: list[dict[str, Any]]) -> list[Any]:
    """Night after night through the check, each night stored for the next: what the flow does."""
    history: list[dict[str, Any]] = []  # newest first
    results = []
    for tonight in nights:
        result = check_regression(tonight, history, **SETTINGS)
        results.append(result)
        history.insert(0, stored(tonight, result))
    return results


def improved(result: Any) -> bool:
    rows = result.normalised if result.platform_moved else result.figures
    return any(r.verdict == IMPROVED for r in rows)


def scenario_row(s: Scenario, index: int) -> list[Any]:
    rng = np.random.default_rng([SEED, index])
    judged = false = false_up = series_false = outlier_alarms = named = model_cause = 0
    delays: list[int | None] = []
    for _ in range(s.series):
        results = run_series(simulate(s, rng))
        change_from = s.at if (s.change or s.drift) else None
        any_false = False
        for night, r in enumerate(results, start=1):
            if change_from is not None and night >= change_from:
                continue
            if night == s.outlier_at:
                outlier_alarms += r.verdict == REGRESSED
                continue
            if r.verdict in ("insufficient history", "not judged"):
                continue
            judged += 1
            false += r.verdict == REGRESSED
            false_up += improved(r)
            any_false |= r.verdict == REGRESSED
        series_false += any_false
        if change_from is not None:
            hit = next((n for n in range(change_from, NIGHTS + 1) if results[n - 1].verdict == REGRESSED), None)
            delays.append(None if hit is None else hit - change_from + 1)
            model_cause += hit is not None and results[hit - 1].cause == "model"
        if s.platform:
            named += any(results[n - 1].cause == "platform" for n in range(s.at, s.at + 3))  # type: ignore[arg-type]
    row: list[Any] = [s.name, f"{s.noise:.0%}", s.series, judged, _f(100 * false / max(judged, 1), 2),
                      _f(100 * series_false / s.series, 1), _f(100 * false_up / max(judged, 1), 2)]
    notes = []
    if delays:
        caught = [d for d in delays if d is not None]
        row += [_f(100 * sum(d <= m for d in caught) / len(delays), 1) for m in (1, 2, 3)]
        row += [_f(100 * len(caught) / len(delays), 1), float(statistics.median(caught)) if caught else None]
        if s.drift:
            at = [(1 + s.drift) ** d - 1 for d in caught]
            notes.append(f"change when caught: median {statistics.median(at):+.1%}, "
                         f"90th percentile {np.percentile(at, 10):+.1%}" if at else "never caught")
        if s.canary:
            notes.append(f"cause 'model' in {100 * model_cause / max(len(caught), 1):.0f}% of alarms")
    else:
        row += [None] * 5
    if s.outlier_at and not s.change:
        notes.append(f"the -30% night itself alarmed in {100 * outlier_alarms / s.series:.0f}% of series "
                     "(not counted as false)")
    elif s.outlier_at:
        notes.append(f"the -30% night 12 alarmed in {100 * outlier_alarms / s.series:.0f}% of series")
    if s.platform:
        notes.append(f"the platform named as the cause within 3 nights in {100 * named / s.series:.0f}% of series; "
                     "false alarms counted over all judged nights")
    return row + ["; ".join(notes)]


def _f(value: float, digits: int) -> float:
    return round(value, digits)


def run(names: list[str] | None = None) -> Table:
    table = Table("alarm", "The nightly alarm on simulated nights (seeded; one decision per night over every figure)",
                  COLUMNS)
    for index, s in enumerate(SCENARIOS):
        if names and not any(n in s.name for n in names):
            continue
        t0 = time.monotonic()
        table.add(*scenario_row(s, index))
        print(f"  {s.name}: {time.monotonic() - t0:.0f}s", file=sys.stderr)
    table.notes += [
        f"{NIGHTS}-night series, {SERIES} per row, seed {SEED}; settings {SETTINGS} (RegressionConfig defaults)",
        "false alarms: nights whose one decision was 'regressed' with no change in the model (before the change in "
        "change rows; every judged night in null and platform rows); judged = not 'insufficient history'",
        "caught within n: the first 'regressed' night is at most n-1 nights after the change began (night 1 = the "
        "change's first night); ever = within the series",
    ]
    return table


if __name__ == "__main__":
    from bench.run_all import show

    result = run(sys.argv[1:])
    show(result)
    if not sys.argv[1:]:
        print(f"written: {result.write_csv()}")
