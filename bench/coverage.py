"""Interval coverage: does the reported 95% interval of one pod's figure contain the truth 95% of the time?

On reference targets whose capacity is known exactly (`reference_capacity`), each run deploys a fresh stack (real
replicas under cgroup limits behind the local proxy, one Locust generator) and does what the single_client stage
does when it meets a pod for the first time: the saturation search with configs/local.yaml's `search:` block
(it chooses the knee), then the knee confirmed on fresh windows (`nightcap.search.confirm`, the reported figure and its
interval). Side by side in the same runs: the search's own figure and interval at the knee (the level it chose,
the windows it chose on), i.e. what nightcap reported before the confirmation.

Per case: the truth inside the (not widened) interval in how many runs, the median half-width, the median and
worst error, the windows the confirmation took. Targets (issue 22): ≥ 90% coverage per case, median half-width
≤ 6%.

`python -m bench.coverage [--runs N] [case substring ...]` (default 20 runs, every case); the CSV keeps the rows
of cases a run did not measure.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.common import RESULTS, Table, fmt, reference_config, reference_stack
from bench.search_accuracy import _params, shipped_search
from nightcap.analysis.confidence import t_quantile, window_estimate
from nightcap.search.confirm import ConfirmParams, confirm_knee
from nightcap.load.runner import StepRunner
from nightcap.analysis.slo import Slo
from nightcap.search.saturation import find_saturation
from nightcap.targets.reference_capacity import reference_capacity

RUNS = 20
WARMUP_S = 0.5
WINDOW_S = 1.5
MAX_USERS = 32

# name, slots, service_ms, queue, cpu_ms, cpu limit (cores), replicas
CASES = [
    ("plain: 4 slots x 20 ms, queue 8", 4, 20.0, 8, 0.0, None, 1),
    ("CPU-limited: 0.5 core, 10 ms CPU + 5 ms wait, 8 slots", 8, 5.0, 4, 10.0, 0.5, 1),
    ("queue 0 driven past its slots: 4 slots x 50 ms", 4, 50.0, 0, 0.0, None, 1),
    ("2 replicas x 4 slots x 20 ms, queue 4", 4, 20.0, 4, 0.0, None, 2),
]
COLUMNS = ["case", "truth_rps", "figure", "runs", "truth_in_ci", "coverage_pct", "median_halfwidth_pct",
           "median_error_pct", "worst_error_pct", "median_windows", "median_knee_users", "median_run_s"]


@dataclass
class Outcome:
    rps: float
    half: float | None
    windows: int
    users: int


def floor_over_root_k(c: Any) -> float | None:
    """The confirmed figure's half-width if its floor were the median window's own half-width over √k (as if the
    windows were independent) instead of one window's own: measured on the same windows, side by side."""
    ests = [window_estimate(w) for w in c.windows]
    own = [e.half_width for e in ests if e.half_width is not None]
    k = len(ests)
    if k < 2:
        return c.half_width
    first = int(c.estimate.df or (k - 1)) + 1
    means = [e.mean for e in ests]
    between = t_quantile(first - 1) * statistics.stdev(means[:first]) / math.sqrt(k)
    return max(between, (statistics.median(own) / math.sqrt(k)) if own else 0.0)


def one_run(case: tuple) -> tuple[Outcome | None, Outcome | None, Outcome | None, float]:
    """One short single_client run on a fresh stack: (the search's figure, the confirmed figure, the confirmed
    figure with the alternative floor, wall seconds)."""
    name, slots, service_ms, queue, cpu_ms, cpu, replicas = case
    config = reference_config(slots, service_ms, queue=queue, cpu_ms=cpu_ms, cpu=cpu, replicas=replicas,
                              warmup_s=WARMUP_S, window_s=WINDOW_S, max_users=MAX_USERS)
    search = {**shipped_search(MAX_USERS)}
    params = _params(search)
    slo = Slo.of(config.slo)
    confirm = ConfirmParams(min_windows=config.search.confirm_windows, max_windows=config.search.confirm_max_windows,
                            precision=config.search.precision)
    t0 = time.monotonic()
    with reference_stack(config) as stack:
        runner = StepRunner(config, stack.platform, stack.generator, "single_client", lambda row: None)
        result = find_saturation(runner.measure, slo, params)
        runner.purpose = "confirm"
        c = confirm_knee(runner.measure, result, slo, confirm)
    chosen = None
    if result.saturation_rps is not None and result.saturation_users:
        level = result.level(result.saturation_users)
        chosen = Outcome(result.saturation_rps, result.saturation_halfwidth, level.windows if level else 0,
                         result.saturation_users)
    confirmed = alternative = None
    if c is not None and c.good and not c.generator_bound:
        confirmed = Outcome(c.rps, c.half_width, len(c.windows), c.users)
        alternative = Outcome(c.rps, floor_over_root_k(c), len(c.windows), c.users)
    return chosen, confirmed, alternative, time.monotonic() - t0


def summarize(table: Table, name: str, truth: float, label: str, outcomes: list[Outcome | None],
              walls: list[float]) -> None:
    got = [o for o in outcomes if o is not None]
    inside = sum(1 for o in got if o.half is not None and o.rps - o.half <= truth <= o.rps + o.half)
    halves = [100 * o.half / o.rps for o in got if o.half is not None and o.rps]
    errors = [100 * (o.rps - truth) / truth for o in got]
    table.add(name, fmt(truth), label, len(outcomes), f"{inside}/{len(outcomes)}",
              fmt(100 * inside / len(outcomes)) if outcomes else None,
              fmt(statistics.median(halves)) if halves else None,
              fmt(statistics.median(errors)) if errors else None,
              fmt(max(errors, key=abs)) if errors else None,
              statistics.median(o.windows for o in got) if got else None,
              statistics.median(o.users for o in got) if got else None,
              fmt(statistics.median(walls)) if walls else None)


def run(cases: list[tuple] | None = None, runs: int = RUNS) -> Table:
    table = Table("coverage", "95% interval coverage of one pod's figure on reference targets (truth known)",
                  COLUMNS)
    for case in cases or CASES:
        name, slots, service_ms, queue, cpu_ms, cpu, replicas = case
        truth = reference_capacity(slots, service_ms, cpu_ms=cpu_ms, cpu_limit=cpu, replicas=replicas)
        chosen, confirmed, alternative, walls = [], [], [], []
        for i in range(runs):
            a, b, alt, wall = one_run(case)
            chosen.append(a)
            confirmed.append(b)
            alternative.append(alt)
            walls.append(wall)
            print(f"{name} run {i + 1}/{runs}: search {a.rps if a else None} ± {a.half if a else None}; confirmed "
                  f"{b.rps if b else None} ± {b.half if b else None} ({b.windows if b else 0} windows); "
                  f"{wall:.0f}s", flush=True)
        summarize(table, name, truth, "confirmed (reported)", confirmed, walls)
        summarize(table, name, truth, "search's knee level (before)", chosen, walls)
        summarize(table, name, truth, "confirmed, floor own/sqrt(k) (alternative)", alternative, walls)
    table.notes.append(
        f"each run: a fresh stack, configs/local.yaml's search block {shipped_search(MAX_USERS)} (windows "
        f"{WARMUP_S} s warm-up + {WINDOW_S} s), then the knee confirmed on fresh windows (search.confirm_windows to "
        "confirm_max_windows, Stein's two stages); SLO p95 ≤ 250 ms, errors ≤ 1%. Targets: truth inside the 95% "
        "interval in >= 90% of runs per case, median half-width <= 6%.")
    return table


def merge_into_csv(table: Table) -> None:
    """Keep the rows of cases this run did not measure."""
    path = RESULTS / "coverage.csv"
    done = {r[0] for r in table.rows}
    if path.exists():
        with path.open() as handle:
            old = list(csv.reader(handle))
        if old and old[0] == COLUMNS:
            keep: list[list[Any]] = [[None if v == "" else v for v in r] for r in old[1:] if r and r[0] not in done]
            table.rows = keep + table.rows
            order = [c[0] for c in CASES]
            table.rows.sort(key=lambda r: order.index(r[0]) if r[0] in order else len(order))


if __name__ == "__main__":
    from bench.common import machine_line
    from bench.run_all import record_machine, show

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("cases", nargs="*")
    args = parser.parse_args()
    picked = [c for c in CASES if not args.cases or any(a in c[0] for a in args.cases)]
    result = run(picked, args.runs)
    merge_into_csv(result)
    show(result)
    result.write_csv()
    record_machine("coverage", machine_line())
