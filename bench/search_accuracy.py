"""Search accuracy and cost: nightcap's saturation search against the two ways people ramp by hand.

On reference targets whose capacity is known exactly (`reference_capacity`), each case deploys real replicas
(LocalPlatform: processes, cgroup CPU limits, the proxy) and one Locust generator (LocalLocust), and runs
three methods through the same StepRunner, so a step costs the same whatever the method:

- nightcap: `find_saturation` with the `search:` settings of configs/local.yaml (what `make run` uses:
  doubling, two windows per level until they agree, bisection, then the SLO-capacity extension), answer
  = its saturation rps;
- linear: the field report's procedure: one more user per step (one window each) until errors or an SLO
  breach (or the user ceiling); answer = the most rps of a good step;
- doubling: 1, 2, 4, ... users (one window each) until errors, an SLO breach or a gain under 5%, no
  refinement; answer = the most rps of a good step.

Windows are short (0.5 s warm-up + 1.5 s) to keep the benchmark within minutes; the methods share them.
nightcap runs each case `REPEATS` (3) times on a fresh stack and reports the median and the worst error and
how often the true capacity fell inside its reported 95% interval (`saturation.rps_ci`), as such and widened
by 3% (the tests' criterion); the hand methods, which report no interval, run once per case for their cost.

Measured cases stay small (knees of 4 to 24 users) to fit the time budget. The same three methods are
then run on the reference model (`reference_throughput`, no noise, milliseconds) for knees up to 128
users, counting windows and warm-ups: that is where the cost of a linear ramp (one step per user) and of
the search (logarithmic) part ways. Those rows are marked `model`, with no wall time measured.
"""

from __future__ import annotations

import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from bench.common import RESULTS, Stack, Table, fmt, reference_config, reference_stack
from nightcap.load.runner import StepRunner
from nightcap.platforms.cgroups import detect
from nightcap.targets.reference_capacity import reference_capacity, reference_throughput
from nightcap.analysis.slo import Slo
from nightcap.search.levels import Measured, SearchParams, Point, judge
from nightcap.search.saturation import find_saturation

ROOT = Path(__file__).resolve().parents[1]
MAX_USERS = 64
WARMUP_S = 0.5
WINDOW_S = 1.5
REPEATS = 3
WIDEN = 0.03  # the tests' criterion: the truth inside the interval widened by 3%

# name, slots, service_ms, queue, cpu_ms, cpu limit (cores), replicas
CASES = [
    ("4 slots x 50 ms, queue 0", 4, 50.0, 0, 0.0, None, 1),
    ("8 slots x 20 ms, queue 4", 8, 20.0, 4, 0.0, None, 1),
    ("2 replicas x 4 slots x 20 ms, queue 2", 4, 20.0, 2, 0.0, None, 2),
    ("CPU limit 0.5 core, 10 ms CPU + 5 ms wait, 8 slots, queue 4", 8, 5.0, 4, 10.0, 0.5, 1),
    ("24 slots x 50 ms, queue 8", 24, 50.0, 8, 0.0, None, 1),
    ("8 slots x 50 ms, queue 0 (past its slots: fast 503s)", 8, 50.0, 0, 0.0, None, 1),
]
# modelled only: slots, service_ms, queue (knees of 8 to 128 users)
MODEL_CASES = [(8, 50.0, 4), (12, 50.0, 0), (32, 50.0, 16), (96, 50.0, 0), (128, 50.0, 64)]

METHODS = ("nightcap", "linear +1 user", "doubling")


@dataclass
class Outcome:
    answer: float | None
    windows: int
    levels: int
    users: int
    why: str
    half_width: float | None = None  # nightcap's 95% half-width of the answer


def shipped_search(max_users: int = MAX_USERS) -> dict:
    """The `search:` block `make run` uses (configs/local.yaml), with a ceiling the cases fit under."""
    block = dict((yaml.safe_load((ROOT / "configs" / "local.yaml").read_text()) or {}).get("search") or {})
    block["max_users"] = max_users
    return block


def _params(search: dict) -> SearchParams:
    p = SearchParams()
    for key, value in search.items():
        if hasattr(p, key):
            setattr(p, key, value)
    return p


def nightcap_search(measure: Callable[[int], Measured], slo: Slo, search: dict) -> Outcome:
    result = find_saturation(measure, slo, _params(search))
    return Outcome(result.saturation_rps, result.windows, len(result.levels), result.saturation_users or 0,
                   result.stop_reason, result.saturation_halfwidth)


def ramp(measure: Callable[[int], Measured], slo: Slo, levels: Callable[[int], int], max_users: int,
         flat_stop: float | None = None) -> Outcome:
    """One window per level; stop at the first bad level (or, with `flat_stop`, a gain under it)."""
    best: Measured | None = None
    last_good: Measured | None = None
    why = f"reached {max_users} users"
    i = windows = 0
    while (users := levels(i)) <= max_users:
        i += 1
        row = measure(users)
        windows += 1
        if not row.valid:
            continue
        good, reason = judge(row, slo)
        if not good:
            why = f"{reason} at {users} users"
            note = getattr(row, "note", "")
            if "errors: " in note:  # what failed, e.g. BadStatusCode(... code=503)
                why += " (" + note.split("errors: ", 1)[1][:60] + ")"
            break
        if best is None or row.rps > best.rps:
            best = row
        if flat_stop is not None and last_good is not None and row.rps < last_good.rps * (1 + flat_stop):
            why = f"gain under {flat_stop:.0%} at {users} users"
            break
        last_good = row
    return Outcome(best.rps if best else None, windows, i, best.users if best else 0, why)


def three_methods(measure_for: Callable[[str], Callable[[int], Measured]], slo: Slo, search: dict,
                  between: Callable[[], None] = lambda: None,
                  methods: tuple[str, ...] = METHODS) -> list[tuple[str, Outcome, float]]:
    """Each method starts as a fresh search would: `between` stops the users the previous one left."""
    min_gain, ceiling = _params(search).min_gain, int(search["max_users"])
    runs = {
        "nightcap": lambda: nightcap_search(measure_for("nightcap"), slo, search),
        "linear +1 user": lambda: ramp(measure_for("linear"), slo, lambda i: i + 1, ceiling),
        "doubling": lambda: ramp(measure_for("doubling"), slo, lambda i: 2 ** i, ceiling, min_gain),
    }
    out = []
    for method in methods:
        between()
        t0 = time.monotonic()
        outcome = runs[method]()
        out.append((method, outcome, time.monotonic() - t0))
    return out


def model(slots: int, service_ms: float, queue: int) -> Callable[[int], Measured]:
    """Windows as the reference model predicts them: closed-loop users, 503s past slots + queue.

    Exact, so each window's sub-windows agree (half-width 0, 15 batches of 0.1 s): one window settles a level,
    as a real window within `search.precision` does.
    """
    def measure(users: int) -> Measured:
        rps = reference_throughput(users, slots, service_ms)
        if users > slots + queue:
            return Point(users, rps, service_ms, (users - slots - queue) / users, rps_halfwidth=0.0, batches=15)
        # Little's law; every request waits alike
        return Point(users, rps, 1000.0 * users / rps, 0.0, rps_halfwidth=0.0, batches=15)

    return measure


COLUMNS = ["case", "true_rps", "method", "runs", "answer_rps", "error_pct", "worst_error_pct", "ci_pct",
           "truth_in_ci", "truth_in_ci_widened_3pct", "users_at_answer", "wall_s", "windows", "levels",
           "wall_vs_linear", "stopped"]


def run(cases: list[tuple] | None = None, model_cases: list[tuple] | None = None, repeats: int = REPEATS) -> Table:
    table = Table("search_accuracy", "Search accuracy and cost on reference targets (truth = reference_capacity)",
                  COLUMNS)
    search = shipped_search()
    support = detect()
    for name, slots, service_ms, queue, cpu_ms, cpu, replicas in cases if cases is not None else CASES:
        if cpu and not support.enforced:
            table.notes.append(f"skipped '{name}': CPU limits are not enforced here ({support.note})")
            continue
        truth = reference_capacity(slots, service_ms, cpu_ms, cpu, replicas)
        config = reference_config(slots, service_ms, queue=queue, cpu_ms=cpu_ms, cpu=cpu, replicas=replicas,
                                  warmup_s=WARMUP_S, window_s=WINDOW_S, **search)
        slo = Slo.of(config.slo)
        results: list[tuple[str, Outcome, float]] = []
        for i in range(repeats):  # a fresh stack each time: a repeat is a new run, not another search on a warm one
            methods = METHODS if i == 0 else ("nightcap",)
            with reference_stack(config) as stack:
                results += three_methods(lambda stage: _runner(stack, stage), slo, search, lambda: _idle(stack),
                                         methods)
        _rows(table, name, truth, results, measured=True)
    for slots, service_ms, queue in model_cases if model_cases is not None else MODEL_CASES:
        ceiling = 4 * (slots + queue)
        msearch = shipped_search(ceiling)
        results = three_methods(lambda stage: model(slots, service_ms, queue), Slo(250.0, 0.01), msearch)
        _rows(table, f"model: {slots} slots x {service_ms:.0f} ms, queue {queue}",
              reference_capacity(slots, service_ms), results, measured=False)
    _verdict(table, search, repeats)
    return table


def _idle(stack: Stack) -> None:
    """No users, and time for the replicas to finish what the last overloaded level left in flight."""
    stack.generator.client.stop()
    time.sleep(1.0)


def _runner(stack: Stack, stage: str) -> Callable[[int], Measured]:
    return StepRunner(stack.config, stack.platform, stack.generator, stage, lambda row: None).measure


def _rows(table: Table, name: str, truth: float, results: list[tuple[str, Outcome, float]], measured: bool) -> None:
    def cost(o: Outcome, wall: float) -> float:
        return wall if measured else o.levels * WARMUP_S + o.windows * WINDOW_S  # the model: windows + warm-ups

    def err(o: Outcome) -> float | None:
        return None if o.answer is None else 100.0 * (o.answer - truth) / truth

    linear = statistics.median([cost(o, w) for m, o, w in results if m.startswith("linear")] or [0.0])
    for method in METHODS:
        runs = [(o, w) for m, o, w in results if m == method]
        if not runs:
            continue
        errors = [e for o, _ in runs if (e := err(o)) is not None]
        answers = [o.answer for o, _ in runs if o.answer is not None]
        worst = max(errors, key=abs) if errors else None
        halves = [o for o, _ in runs if o.answer is not None and o.half_width is not None]
        inside = sum(1 for o in halves if o.answer - o.half_width <= truth <= o.answer + o.half_width)
        widened = sum(1 for o in halves
                      if (o.answer - o.half_width) * (1 - WIDEN) <= truth <= (o.answer + o.half_width) * (1 + WIDEN))
        ci_pct = [100.0 * o.half_width / o.answer for o in halves if o.answer]
        middle = sorted(runs, key=lambda r: r[0].answer or 0.0)[len(runs) // 2][0]  # the median run's details
        walls = [cost(o, w) for o, w in runs]
        table.add(name, fmt(truth), method, len(runs), fmt(statistics.median(answers)) if answers else None,
                  fmt(statistics.median(errors)) if errors else None, fmt(worst),
                  fmt(statistics.median(ci_pct)) if ci_pct else None,
                  f"{inside}/{len(runs)}" if halves else None, f"{widened}/{len(runs)}" if halves else None,
                  middle.users, fmt(statistics.median(walls)) if measured else None,
                  middle.windows, middle.levels, fmt(statistics.median(walls) / linear, 2) if linear else None,
                  middle.why)


def _verdict(table: Table, search: dict, repeats: int) -> None:
    col = {c: i for i, c in enumerate(COLUMNS)}
    mine = [r for r in table.rows if r[col["method"]] == "nightcap" and not str(r[0]).startswith("model")]
    if mine:
        def frac(key: str) -> tuple[int, int]:
            parts = [str(r[col[key]]).split("/") for r in mine if r[col[key]]]
            return sum(int(a) for a, _ in parts), sum(int(b) for _, b in parts)

        within = sum(1 for r in mine if r[col["worst_error_pct"]] is not None and abs(float(r[col["worst_error_pct"]])) <= 5.0)
        medians = [float(r[col["error_pct"]]) for r in mine if r[col["error_pct"]] is not None]
        worst = max((float(r[col["worst_error_pct"]]) for r in mine if r[col["worst_error_pct"]] is not None),
                    key=abs, default=None)
        inside, total = frac("truth_in_ci")
        widened, _ = frac("truth_in_ci_widened_3pct")
        fast = sum(1 for r in mine if r[col["wall_vs_linear"]] is not None and float(r[col["wall_vs_linear"]]) <= 1 / 3)
        table.notes.append(
            f"target: nightcap within ±5% of the truth in every run, in ≤ 1/3 of the linear ramp's wall time. "
            f"Measured over {repeats} runs per case: every run within ±5% in {within}/{len(mine)} cases; median "
            f"error per case {', '.join(f'{m:+.1f}%' for m in medians)}; worst run {worst:+.1f}%; truth inside the "
            f"95% interval in {inside}/{total} runs, inside it widened by 3% in {widened}/{total}; ≤ 1/3 of the "
            f"linear ramp's time in {fast}/{len(mine)} cases")
        walls = {m: sum(float(r[col["wall_s"]]) for r in table.rows
                        if r[col["method"]] == m and r[col["wall_s"]] is not None and not str(r[0]).startswith("model"))
                 for m in METHODS}
        if walls["linear +1 user"]:
            table.notes.append("total wall of the measured cases (nightcap: median run per case): "
                               + ", ".join(f"{m} {s:.0f}s" for m, s in walls.items())
                               + f" (nightcap / linear = {walls['nightcap'] / walls['linear +1 user']:.2f})")
    modelled = [r for r in table.rows if r[col["method"]] == "nightcap" and str(r[0]).startswith("model")]
    if modelled:
        table.notes.append("model rows: the same methods on reference_throughput (no noise); wall_vs_linear = "
                           f"(levels x {WARMUP_S} s warm-up + windows x {WINDOW_S} s) relative to the linear ramp: "
                           + "; ".join(f"{r[0][7:]}: {r[col['wall_vs_linear']]}" for r in modelled))
    table.notes.append(f"nightcap ran with configs/local.yaml's search block {shipped_search()} (model rows: "
                       "max_users = 4 x (slots + queue)), SLO-capacity extension included, as the single_client "
                       "stage runs it; SLO p95 ≤ 250 ms and errors ≤ 1% (configs/local.yaml); the hand methods "
                       "ran once per case (they report no interval)")


def merge_into_csv(table: Table) -> None:
    """Keep the CSV rows of cases this run did not measure (`python -m bench.search_accuracy CASE` runs one)."""
    path = RESULTS / "search_accuracy.csv"
    done = {r[0] for r in table.rows}
    if path.exists():
        with path.open() as handle:
            old = [r for r in csv.reader(handle)]
        if old and old[0] == COLUMNS:
            table.rows = [[None if v == "" else v for v in r] for r in old[1:] if r and r[0] not in done] + table.rows
            order = [c[0] for c in CASES] + [r[0] for r in table.rows if str(r[0]).startswith("model")]
            table.rows.sort(key=lambda r: order.index(r[0]) if r[0] in order else len(order))


if __name__ == "__main__":
    import sys

    from bench.common import machine_line
    from bench.run_all import record_machine, show

    # `python -m bench.search_accuracy "queue 4" model`: the cases whose name contains an argument, and the
    # model rows only when `model` is given; the CSV keeps the rows of what this run did not measure
    args = sys.argv[1:]
    names = [a for a in args if a != "model"]
    picked = [c for c in CASES if not args or any(a in c[0] for a in names)]
    result = run(picked, model_cases=None if not args or "model" in args else [])
    if args:
        merge_into_csv(result)
        result.notes = [n for n in result.notes if n.startswith("skipped")]  # _verdict's notes, on every row
        _verdict(result, shipped_search(), REPEATS)
    show(result)
    result.write_csv()
    record_machine("search_accuracy", machine_line())
