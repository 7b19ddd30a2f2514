"""Warm start: what verifying last night's knee costs against a cold search and a linear ramp, and how right it is.

On reference targets whose capacity is known exactly (knees of 4, 16 and 64 users), each case deploys real
replicas (LocalPlatform: processes, the proxy) and one Locust generator (LocalLocust), like search_accuracy,
with the same short windows (0.5 s warm-up + 1.5 s) and configs/local.yaml's `search:` block, and a results
history (a temporary SQLite HistoryStore, the flow's own store) kept across the case:

1. cold: `find_saturation` (what a first night does); the night is stored as the flow stores it
   (`single_client` block with its levels, `platform` with the pod);
2. warm x REPEATS: the prior is read back from the store (`prior_search`, as the stage does) and
   `warm_search` verifies it; each warm night is stored and is the next one's prior;
3. linear: one more user per window until errors or an SLO breach (bench.search_accuracy.ramp);
4. changed x0.5 and x2: a fresh stack with half and twice the slots (the knee moves with them; same pod
   settings, as when a new model version serves on the same pods), warm-started from the stored nights:
   it must fall back to the full search and still find the new capacity within ±5%.

Wall time is measured around each search (StepRunner windows, warm-ups, the store round trip). The same
searches are also run on the reference model (no noise, milliseconds) for knees of 4 to 128 users, costed
as levels x warm-up + windows x window: the `model` rows.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from bench.common import Table, fmt, reference_config, reference_stack
from bench.search_accuracy import WARMUP_S, WINDOW_S, _idle, _params, _runner, model, ramp, shipped_search
from nightcap.config import Config
from nightcap.results.store import HistoryStore
from nightcap.analysis.slo import Slo
from nightcap.search.levels import Measured, SearchResult
from nightcap.search.saturation import find_saturation
from nightcap.search.warm_start import WarmStart, prior_search, warm_search

REPEATS = 3
# name, slots, service_ms, queue (knee = slots users; capacity = slots x 1000 / service_ms)
CASES = [
    ("4 slots x 50 ms, queue 0", 4, 50.0, 0),
    ("16 slots x 50 ms, queue 8", 16, 50.0, 8),
    ("64 slots x 160 ms, queue 16", 64, 160.0, 16),
]
MODEL_CASES = [(4, 50.0, 0), (8, 50.0, 4), (16, 50.0, 8), (32, 50.0, 8), (64, 50.0, 16), (128, 50.0, 16)]
CHANGES = (0.5, 2.0)

COLUMNS = ["case", "true_rps", "run", "answer_rps", "error_pct", "users", "wall_s", "windows", "levels",
           "vs_cold_wall", "vs_linear_wall", "vs_cold_windows", "vs_linear_windows", "warm_start", "reason"]


def _night(result: SearchResult, config: Config) -> dict[str, Any]:
    """The parts of summary.json a warm start reads back: the stage block and the pod it ran on."""
    p = config.platform
    return {"platform": {"cpu": p.cpu, "memory": p.memory, "concurrency": p.concurrency or config.target.slots,
                         "replicas": p.replicas},
            "single_client": {"saturation": {"users": result.saturation_users, "rps": result.saturation_rps,
                                             "found": result.found},
                              "slo_capacity": {"users": result.slo_users, "rps": result.slo_rps},
                              "levels": [asdict(lv) for lv in result.levels]}}


def _store(store: HistoryStore, config: Config, result: SearchResult, n: int) -> None:
    run_id = f"night-{n}"
    store.start_run(run_id, config)
    store.finish_run(run_id, "completed", {"saturation_rps": result.saturation_rps}, _night(result, config))


def _warm(measure: Callable[[int], Measured], slo: Slo, search: dict, store: HistoryStore, config: Config,
          pod: dict[str, Any]) -> tuple[SearchResult, WarmStart]:
    """As the stage does it: the newest comparable night on this pod, then verify it (or search cold)."""
    prior, why = prior_search(store.comparable_runs(config.config_hash(), 30), "single_client", pod)
    if prior is None:
        raise RuntimeError(f"no prior night in the store: {why}")
    return warm_search(measure, slo, _params(search), prior)


def _config(slots: int, service_ms: float, queue: int, search: dict) -> Config:
    return reference_config(slots, service_ms, queue=queue, warmup_s=WARMUP_S, window_s=WINDOW_S,
                            max_users=search["max_users"], **{k: v for k, v in search.items() if k != "max_users"})


def run(cases: list[tuple] | None = None, model_cases: list[tuple] | None = None, repeats: int = REPEATS) -> Table:
    table = Table("warm_start", "Warm start: verifying last night's knee against a cold search and a linear ramp",
                  COLUMNS)
    for name, slots, service_ms, queue in cases if cases is not None else CASES:
        _measured_case(table, name, slots, service_ms, queue, repeats)
    for slots, service_ms, queue in model_cases if model_cases is not None else MODEL_CASES:
        _model_case(table, slots, service_ms, queue)
    _verdict(table, repeats)
    return table


def _measured_case(table: Table, name: str, slots: int, service_ms: float, queue: int, repeats: int) -> None:
    truth = slots * 1000.0 / service_ms
    search = shipped_search(max_users=max(64, 4 * (2 * slots + queue)))
    config = _config(slots, service_ms, queue, search)
    slo = Slo.of(config.slo)
    pod = _night(SearchResult(None, None, None, None, None, None), config)["platform"]
    with tempfile.TemporaryDirectory(prefix="nightcap-bench-warm-") as tmp:
        store = HistoryStore(f"sqlite:///{Path(tmp) / 'history.db'}")
        try:
            rows: list[tuple[str, float, SearchResult, float, WarmStart | None]] = []
            with reference_stack(config) as stack:
                t0 = time.monotonic()
                cold = find_saturation(_runner(stack, "cold"), slo, _params(search))
                rows.append(("cold", truth, cold, time.monotonic() - t0, None))
                _store(store, config, cold, 1)
                for i in range(repeats):
                    _idle(stack)
                    t0 = time.monotonic()
                    warm, record = _warm(_runner(stack, "warm"), slo, search, store, config, pod)
                    rows.append((f"warm {i + 1}", truth, warm, time.monotonic() - t0, record))
                    _store(store, config, warm, 2 + i)
                _idle(stack)
                t0 = time.monotonic()
                linear = ramp(_runner(stack, "linear"), slo, lambda i: i + 1, int(search["max_users"]))
                linear_wall = time.monotonic() - t0
            for factor in CHANGES:
                changed = _config(max(1, int(slots * factor)), service_ms, queue, search)
                with reference_stack(changed) as stack:
                    t0 = time.monotonic()
                    result, record = _warm(_runner(stack, "changed"), slo, search, store, changed, pod)
                    rows.append((f"changed x{factor:g}", truth * factor, result, time.monotonic() - t0, record))
        finally:
            store.close()
    cold_wall, cold_windows = rows[0][3], rows[0][2].windows
    for label, true_rps, result, wall, record in rows:
        windows, levels = _spent(result, record)
        _row(table, name, label, true_rps, result, wall, windows, levels, record, cold_wall, cold_windows,
             linear_wall, linear.windows)
    table.add(name, fmt(truth), "linear +1 user", fmt(linear.answer), _err(linear.answer, truth), linear.users,
              fmt(linear_wall), linear.windows, linear.levels, fmt(linear_wall / cold_wall, 2), 1.0,
              fmt(linear.windows / cold_windows, 2), 1.0, None, linear.why)


def _model_case(table: Table, slots: int, service_ms: float, queue: int) -> None:
    """The same searches on the reference model (exact windows): cost = levels x warm-up + windows x window."""
    truth = slots * 1000.0 / service_ms
    search = shipped_search(max_users=4 * (2 * slots + queue))
    slo = Slo(250.0, 0.01)
    config = _config(slots, service_ms, queue, search)

    def cost(levels: int, windows: int) -> float:
        return levels * WARMUP_S + windows * WINDOW_S

    cold = find_saturation(model(slots, service_ms, queue), slo, _params(search))
    with tempfile.TemporaryDirectory(prefix="nightcap-bench-warm-") as tmp:
        store = HistoryStore(f"sqlite:///{Path(tmp) / 'history.db'}")
        try:
            _store(store, config, cold, 1)
            pod = _night(cold, config)["platform"]
            warm, record = _warm(model(slots, service_ms, queue), slo, search, store, config, pod)
            changed = [(f, *_warm(model(max(1, int(slots * f)), service_ms, queue), slo, search, store, config, pod))
                       for f in CHANGES]
        finally:
            store.close()
    linear = ramp(model(slots, service_ms, queue), slo, lambda i: i + 1, int(search["max_users"]))
    name = f"model: {slots} slots x {service_ms:.0f} ms, queue {queue}"
    cold_cost, lin_cost = cost(len(cold.levels), cold.windows), cost(linear.levels, linear.windows)
    _row(table, name, "cold", truth, cold, None, cold.windows, len(cold.levels), None, cold_cost, cold.windows,
         lin_cost, linear.windows, cost_=cost(len(cold.levels), cold.windows))
    for label, result, rec in [("warm", warm, record)] + [(f"changed x{f:g}", r, c) for f, r, c in changed]:
        windows, levels = _spent(result, rec)
        true_rps = truth * (float(label.split("x")[1]) if label.startswith("changed") else 1.0)
        _row(table, name, label, true_rps, result, None, windows, levels, rec, cold_cost, cold.windows, lin_cost,
             linear.windows, cost_=cost(levels, windows))


def _spent(result: SearchResult, record: WarmStart | None) -> tuple[int, int]:
    """Windows and levels measured: a fallback's full search plus the verification levels it did not revisit."""
    if record is None or record.accepted:
        return result.windows, len(result.levels)
    visited = {lv.users for lv in result.levels}
    # a revisited level starts from the verification's windows, so its count already includes them
    lost = record.windows - sum(min(lv.windows, record.windows) for lv in result.levels if lv.users in record.levels)
    return result.windows + max(0, lost), len(visited | set(record.levels))


def _err(answer: float | None, truth: float) -> Any:
    return None if answer is None else fmt(100.0 * (answer - truth) / truth)


def _row(table: Table, name: str, label: str, truth: float, result: SearchResult, wall: float | None,
         windows: int, levels: int, record: WarmStart | None, cold_wall: float, cold_windows: int,
         linear_wall: float, linear_windows: int, cost_: float | None = None) -> None:
    spent = wall if wall is not None else cost_
    warm = None if record is None else ("accepted" if record.accepted else "fell back")
    table.add(name, fmt(truth), label, fmt(result.saturation_rps), _err(result.saturation_rps, truth),
              result.saturation_users, fmt(wall), windows, levels,
              fmt(spent / cold_wall, 2) if spent and cold_wall else None,
              fmt(spent / linear_wall, 2) if spent and linear_wall else None,
              fmt(windows / cold_windows, 2), fmt(windows / linear_windows, 2), warm,
              (record.reason if record else result.stop_reason)[:90])


def _verdict(table: Table, repeats: int) -> None:
    col = {c: i for i, c in enumerate(COLUMNS)}
    measured = [r for r in table.rows if not str(r[0]).startswith("model")]
    warm = [r for r in measured if str(r[col["run"]]).startswith("warm")]
    changed = [r for r in measured if str(r[col["run"]]).startswith("changed")]
    if warm:
        by_case: dict[str, list[list[Any]]] = {}
        for r in warm:
            by_case.setdefault(r[0], []).append(r)
        parts = []
        for case, rs in by_case.items():
            lin = statistics.median(float(r[col["vs_linear_wall"]]) for r in rs)
            cold = statistics.median(float(r[col["vs_cold_wall"]]) for r in rs)
            worst = max((float(r[col["error_pct"]]) for r in rs if r[col["error_pct"]] is not None), key=abs)
            ok = sum(1 for r in rs if r[col["warm_start"]] == "accepted")
            parts.append(f"{case}: {lin:.2f} of linear, {cold:.2f} of cold, worst {worst:+.1f}%, "
                         f"accepted {ok}/{len(rs)}")
        fast = sum(1 for r in warm if float(r[col["vs_linear_wall"]]) <= 1 / 3)
        half = sum(1 for r in warm if float(r[col["vs_cold_wall"]]) <= 1 / 2)
        close = sum(1 for r in warm if r[col["error_pct"]] is not None and abs(float(r[col["error_pct"]])) <= 5)
        table.notes.append(f"target: warm runs <= 1/3 of the linear ramp's wall time ({fast}/{len(warm)} runs), "
                           f"<= 1/2 of the cold search's ({half}/{len(warm)}), within ±5% of the truth "
                           f"({close}/{len(warm)}); medians per case: " + "; ".join(parts))
    if changed:
        back = sum(1 for r in changed if r[col["warm_start"]] == "fell back")
        close = sum(1 for r in changed if r[col["error_pct"]] is not None and abs(float(r[col["error_pct"]])) <= 5)
        table.notes.append(f"target: changed targets fall back ({back}/{len(changed)}) and stay within ±5% "
                           f"({close}/{len(changed)}): "
                           + ", ".join(f"{r[0][:12]} {r[col['run']]} {r[col['error_pct']]:+}%"
                                       for r in changed if r[col["error_pct"]] is not None))
    modelled = [r for r in table.rows if str(r[0]).startswith("model") and r[col["run"]] == "warm"]
    if modelled:
        table.notes.append("model rows (reference model, exact windows; cost = levels x "
                           f"{WARMUP_S} s + windows x {WINDOW_S} s): warm vs linear / vs cold: "
                           + "; ".join(f"{r[0][7:].split(' x')[0]}: {r[col['vs_linear_wall']]} / "
                                       f"{r[col['vs_cold_wall']]}" for r in modelled))
    table.notes.append(f"search block of configs/local.yaml (max_windows 2, refine_steps 2), windows {WARMUP_S} s "
                       f"warm-up + {WINDOW_S} s; SLO p95 ≤ 250 ms, errors ≤ 1%; {repeats} warm nights per case, "
                       "each warm-started from the night before it; one cold run and one linear ramp per case")


if __name__ == "__main__":
    import sys

    from bench.common import machine_line
    from bench.run_all import record_machine, show

    picked = [c for c in CASES if not sys.argv[1:] or any(a in c[0] for a in sys.argv[1:])]
    result = run(picked, model_cases=None if not sys.argv[1:] else [])
    show(result)
    result.write_csv()
    record_machine("warm_start", machine_line())
